"""The controller's byte pipe to the dispenser board: opens a serial port, reopens it when it vanishes.

A `SerialPort` hands out bytes (`read`) and takes bytes (`write`); it never looks inside them.
When the device disappears (a USB adapter pulled, a simulator restarted, a pty closed), pyserial
raises `SerialException` or `OSError`, or a broken device returns empty reads without waiting
("device reports readiness to read but returned no data"). All three become `PortLost`; the
link's reader thread then calls `reopen()`, which retries with capped exponential backoff until the
device is back or the link is closed.

Ports are opened with `serial.serial_for_url(url, baudrate, timeout=..., exclusive=True)`, so a
device path, a udev symlink, `loop://` and `spy://...` (a traffic dump for diagnostics) all work,
and a second process cannot open the same board. An already-open pyserial-like object (the
simulator's in-memory link) is accepted too; it cannot be reopened.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

import serial
import structlog

from controller.errors import ControllerError
from controller.serial.board_api import BoardError

log = structlog.get_logger("controller.serial.port")

READ_TIMEOUT = 2.0  # seconds one idle read() blocks (close() cancels it; an idle unit wakes every 2 s)
MAX_READ = 4096
EMPTY_READ_STORM = 50  # this many instant empty reads in a row mean the device is gone
BACKOFF_START = 0.05
BACKOFF_MAX = 1.0


class PortLike(Protocol):
    """What we use of a pyserial `Serial` (and of the simulator's in-memory ends)."""

    timeout: float | None

    @property
    def in_waiting(self) -> int: ...
    def read(self, size: int = 1) -> bytes: ...
    def write(self, data: bytes) -> int | None: ...
    def close(self) -> None: ...


class PortError(BoardError):
    """The serial port could not be opened; the message names the port and the reason."""


class PortLost(ControllerError):
    """The open port stopped working (device vanished, closed underneath us)."""


def open_url(url: str, baudrate: int = 115200, timeout: float = READ_TIMEOUT) -> PortLike:
    """Open `url` (a device path or a pyserial URL) exclusively; PortError says why it failed."""
    try:
        port: PortLike = serial.serial_for_url(url, baudrate=baudrate, timeout=timeout, exclusive=True)
    except (ValueError, TypeError) as exc:
        if "exclusive" not in str(exc):
            raise PortError(f"serial port {url}: expected a device path or pyserial URL: {exc}") from exc
        port = _open_shared(url, baudrate, timeout)
    except (serial.SerialException, OSError) as exc:
        raise PortError(f"serial port {url}: could not open it exclusively: {exc}") from exc
    return port


def _open_shared(url: str, baudrate: int, timeout: float) -> PortLike:
    try:
        port: PortLike = serial.serial_for_url(url, baudrate=baudrate, timeout=timeout)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise PortError(f"serial port {url}: could not open it: {exc}") from exc
    return port


class SerialPort:
    """One board connection at the byte level; thread-safe writes, one reader, reopen on loss."""

    def __init__(
        self, name: str, opener: Callable[[], PortLike] | None, port: PortLike | None = None
    ) -> None:
        self.name = name
        self._opener = opener
        self._port = port
        self._write_lock = threading.Lock()
        self._closed = threading.Event()
        self._up = threading.Event()
        self._instant_empty = 0
        if port is not None:
            self._up.set()

    @classmethod
    def for_url(cls, url: str, baudrate: int = 115200, read_timeout: float = READ_TIMEOUT) -> SerialPort:
        return cls(url, lambda: open_url(url, baudrate, read_timeout))

    @classmethod
    def for_object(cls, port: PortLike, name: str | None = None) -> SerialPort:
        """An already-open pyserial-like end; a blocking one (timeout None) gets the read timeout."""
        if port.timeout is None:
            port.timeout = READ_TIMEOUT
        return cls(name or str(getattr(port, "name", None) or "in-memory"), None, port)

    @property
    def is_up(self) -> bool:
        return self._up.is_set()

    @property
    def is_closed(self) -> bool:
        return self._closed.is_set()

    @property
    def can_reopen(self) -> bool:
        return self._opener is not None

    def open(self) -> None:
        """First open (no retry): PortError with the reason if the port is not there."""
        if self._port is None:
            if self._opener is None:
                raise PortError(f"serial port {self.name}: nothing to open")
            self._port = self._opener()
        self._up.set()

    def read(self) -> bytes:
        """Bytes waiting on the port (blocks up to the read timeout); b'' when idle; PortLost when gone."""
        port = self._port
        if port is None or not self._up.is_set():
            raise PortLost(f"{self.name}: port is not open")
        started = time.monotonic()
        try:
            data = port.read(max(1, min(port.in_waiting, MAX_READ)))
        except (serial.SerialException, OSError, AttributeError, TypeError) as exc:
            raise self._lost(f"read failed: {exc}") from exc
        self._check_storm(data, time.monotonic() - started, port)
        return bytes(data)

    def _check_storm(self, data: bytes, elapsed: float, port: PortLike) -> None:
        timeout = port.timeout or 0.0
        if data or timeout <= 0 or elapsed >= timeout / 4:
            self._instant_empty = 0
            return
        self._instant_empty += 1
        if self._instant_empty >= EMPTY_READ_STORM:
            self._instant_empty = 0
            raise self._lost(f"{EMPTY_READ_STORM} empty reads in a row returned at once (device gone?)")

    def write(self, data: bytes) -> None:
        """Write all of `data`; PortLost when the port is down or fails."""
        with self._write_lock:
            port = self._port
            if port is None or not self._up.is_set():
                raise PortLost(f"{self.name}: port is not open")
            try:
                port.write(data)
            except (serial.SerialException, OSError, AttributeError, TypeError) as exc:
                raise self._lost(f"write failed: {exc}") from exc

    def _lost(self, why: str) -> PortLost:
        if self._up.is_set() and not self._closed.is_set():
            log.warning("serial_port_lost", port=self.name, reason=why)
        self._up.clear()
        return PortLost(f"{self.name}: {why}")

    def reopen(self, wait: Callable[[float], bool] | None = None) -> bool:
        """Close the dead port and open it again with capped backoff; False if closed meanwhile
        or the port cannot be reopened (an in-memory end). `wait(s)` sleeps, returning True to stop."""
        sleep = wait or self._closed.wait
        self._drop_port()
        if self._opener is None:
            return False
        delay = BACKOFF_START
        while not self._closed.is_set():
            try:
                port = self._opener()
            except PortError as exc:
                log.debug("serial_reopen_failed", port=self.name, reason=str(exc), retry_in_s=delay)
                if sleep(delay):
                    return False
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            return self._install(port)
        return False

    def _install(self, port: PortLike) -> bool:
        with self._write_lock:
            if self._closed.is_set():
                _close_quietly(port)
                return False
            self._port = port
            self._instant_empty = 0
            self._up.set()
        log.info("serial_port_reopened", port=self.name)
        return True

    def _drop_port(self) -> None:
        with self._write_lock:
            self._up.clear()
            port, self._port = self._port, (None if self._opener else self._port)
        if port is not None and self._opener is not None:
            _close_quietly(port)

    def wait_up(self, timeout: float) -> bool:
        return self._up.wait(timeout)

    def close(self) -> None:
        self._closed.set()
        with self._write_lock:
            self._up.clear()
            port, self._port = self._port, None
        if port is not None:
            _close_quietly(port)


def _close_quietly(port: PortLike) -> None:
    cancel = getattr(port, "cancel_read", None)  # wake a reader blocked in read() at once
    if cancel is not None:
        try:
            cancel()
        except (serial.SerialException, OSError, AttributeError, NotImplementedError):
            pass
    try:
        port.close()
    except (serial.SerialException, OSError):
        pass
