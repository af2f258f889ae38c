"""A pseudo-terminal for the simulated board: the board holds the master, a symlink names the slave.

The slave end stays open inside the simulator for its whole life, so a controller may close and
reopen the port (as after a USB glitch) without the pty vanishing. The master is non-blocking:
when nobody reads the slave and its buffer is full, writes are dropped like bytes on a dead line.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import struct
import termios
import time
import tty

import serial

from simulator.serial_end import SerialEnd


class PtyPort(SerialEnd):
    """Pyserial-like port on the master side of a new pty; `path` becomes a symlink to the slave."""

    def __init__(self, path: str) -> None:
        if os.path.lexists(path) and not os.path.islink(path):
            raise serial.SerialException(f"{path}: expected a free path or an old symlink, found a real file")
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tty.setraw(self.master)
        os.set_blocking(self.master, False)
        self.slave_name = os.ttyname(self.slave)
        super().__init__(path, "pty")
        self.path = path
        self.dropped_writes = 0
        _replace_symlink(self.slave_name, path)

    def read(self, size: int = 1) -> bytes:
        self._check_open()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        data = b""
        while len(data) < size:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                data += self._read_some(size - len(data))
            elif remaining is not None:
                break
        return data

    def _read_some(self, size: int) -> bytes:
        try:
            return os.read(self.master, size)
        except BlockingIOError:
            return b""
        except OSError as exc:
            if exc.errno == errno.EIO:  # no slave open right now
                return b""
            raise serial.SerialException(f"{self.path}: read failed: {exc}") from exc

    def write(self, data: bytes) -> int:
        self._check_open()
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.master, view):]
            except BlockingIOError:
                self.dropped_writes += len(view)
                break
        return len(data)

    @property
    def in_waiting(self) -> int:
        self._check_open()
        raw = fcntl.ioctl(self.master, termios.FIONREAD, struct.pack("i", 0))
        return int(struct.unpack("i", raw)[0])

    def reset_input_buffer(self) -> None:
        self._check_open()
        termios.tcflush(self.master, termios.TCIFLUSH)

    def flush(self) -> None:
        self._check_open()

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        for fd in (self.master, self.slave):
            os.close(fd)
        try:
            if os.path.islink(self.path) and os.readlink(self.path) == self.slave_name:
                os.unlink(self.path)
        except OSError:
            pass

    def __enter__(self) -> PtyPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _replace_symlink(target: str, path: str) -> None:
    """Point `path` at `target` atomically (a stale symlink from a killed simulator is replaced)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    os.symlink(target, tmp)
    os.replace(tmp, path)
