"""SerialPort: opening by URL, losing the device, reopening with backoff. A scripted port object stands in
only for the fault a real device cannot produce on demand (reads that return nothing at once)."""

from __future__ import annotations

from pathlib import Path

import pytest
import serial

from controller.serial.port import EMPTY_READ_STORM, PortError, PortLost, SerialPort, open_url


class StormPort:
    """A vanished USB adapter as some drivers show it: every read returns b'' immediately."""

    in_waiting = 0

    def __init__(self) -> None:
        self.timeout: float | None = 0.05
        self.reads = 0
        self.closed = False

    def read(self, size: int = 1) -> bytes:
        self.reads += 1
        return b""

    def write(self, data: bytes) -> int:
        raise serial.SerialException("write failed: [Errno 5] Input/output error")

    def close(self) -> None:
        self.closed = True


def test_loop_url_opens_and_echoes() -> None:
    port = SerialPort.for_url("loop://")
    port.open()
    port.write(b"\x01\x02\x00")
    assert port.read() == b"\x01\x02\x00"
    port.close()
    assert port.is_closed and not port.is_up


def test_missing_device_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PortError, match=r"no-board: could not open it exclusively"):
        open_url(str(tmp_path / "no-board"))


def test_empty_read_storm_means_the_device_is_gone() -> None:
    storm = StormPort()
    port = SerialPort("storm", None, storm)
    with pytest.raises(PortLost, match="empty reads in a row"):
        for _ in range(EMPTY_READ_STORM + 1):
            port.read()
    assert storm.reads == EMPTY_READ_STORM and not port.is_up
    with pytest.raises(PortLost, match="not open"):
        port.write(b"x")


def test_write_failure_is_port_lost() -> None:
    port = SerialPort("storm", None, StormPort())
    with pytest.raises(PortLost, match="write failed"):
        port.write(b"x")


def test_reopen_backs_off_until_the_device_returns() -> None:
    attempts: list[int] = []
    good = serial.serial_for_url("loop://", timeout=0.05)

    def opener() -> serial.SerialBase:
        attempts.append(1)
        if len(attempts) < 5:
            raise PortError("storm: could not open it exclusively: [Errno 2] No such file")
        return good

    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return False  # not closed meanwhile

    port = SerialPort("storm", opener, StormPort())
    assert port.reopen(wait)
    assert waits == [0.05, 0.1, 0.2, 0.4] and port.is_up
    port.write(b"back")
    assert port.read() == b"back"
    port.close()


def test_reopen_stops_when_closed_and_in_memory_ends_cannot_reopen() -> None:
    def never() -> serial.SerialBase:
        raise PortError("gone")

    port = SerialPort("gone", never, StormPort())
    assert port.reopen(lambda s: True) is False  # the link was closed while waiting
    assert SerialPort.for_object(StormPort()).reopen() is False
