"""In-memory serial link: two connected pyserial-like ends (python-can's virtual bus pattern).

`serial_pair()` returns (controller_end, board_end). Each end has pyserial's blocking read
semantics: read(size) waits until `size` bytes or `timeout` seconds (None = forever, 0 = no wait)
and returns what it has. A closed end refuses use with serial.SerialException. `noise` corrupts
bytes in flight in both directions.
"""

from __future__ import annotations

import threading
import time

from simulator.noise import Noise
from simulator.serial_end import SerialEnd


class MemoryPort(SerialEnd):
    """One end of an in-memory serial line."""

    def __init__(self, name: str, noise: Noise | None = None) -> None:
        super().__init__(name, "port")
        self.noise = noise
        self.write_timeout: float | None = None
        self.baudrate = 115200
        self.peer: MemoryPort | None = None
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._cancelled = False  # cancel_read() came: the read blocked now, or else the next, returns
        self.bytes_written = 0

    def write(self, data: bytes) -> int:
        self._check_open()
        size = len(data)
        wire = self.noise.corrupt(data) if self.noise is not None else bytes(data)
        self.bytes_written += size
        if self.peer is not None:
            self.peer._deliver(wire)
        return size

    def _deliver(self, data: bytes) -> None:
        with self._cond:
            if self._open:
                self._buf.extend(data)
                self._cond.notify_all()

    def read(self, size: int = 1) -> bytes:
        self._check_open()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        with self._cond:
            while len(self._buf) < size and self._open and not self._cancelled:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cond.wait(remaining)
            self._cancelled = False
            self._check_open()
            data = bytes(self._buf[:size])
            del self._buf[:size]
            return data

    @property
    def in_waiting(self) -> int:
        self._check_open()
        with self._cond:
            return len(self._buf)

    def reset_input_buffer(self) -> None:
        self._check_open()
        with self._cond:
            self._buf.clear()

    def reset_output_buffer(self) -> None:
        self._check_open()

    def flush(self) -> None:
        self._check_open()

    def cancel_read(self) -> None:
        """The read blocked now returns at once with what it has; with none blocked, the next read does
        (pyserial's cancel_read on POSIX, a byte in its abort pipe, behaves the same)."""
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._open = False
            self._buf.clear()
            self._cond.notify_all()

    def __enter__(self) -> MemoryPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MemoryPort({self.name!r}, open={self._open})"


def serial_pair(noise: float | None = None, seed: int = 0,
                names: tuple[str, str] = ("mem:controller", "mem:board")) -> tuple[MemoryPort, MemoryPort]:
    """Two connected ends (controller_end, board_end); `noise` is a per-byte corruption rate."""
    line = Noise(noise, seed) if noise else None
    controller_end = MemoryPort(names[0], line)
    board_end = MemoryPort(names[1], line)
    controller_end.peer = board_end
    board_end.peer = controller_end
    return controller_end, board_end
