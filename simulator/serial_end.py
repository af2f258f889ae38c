"""What the simulator's pyserial-like ports share (the in-memory line's ends, the pty's master side):
a name, a read timeout, and refusing use with serial.SerialException once closed, as pyserial does."""

from __future__ import annotations

import serial


class SerialEnd:
    def __init__(self, name: str, what: str) -> None:
        self.name = self.port = name
        self.what = what  # "port", "pty": how errors call it
        self.timeout: float | None = None  # read(): None waits for every byte asked, 0 never waits
        self._open = True

    @property
    def is_open(self) -> bool:
        return self._open

    def _check_open(self) -> None:
        if not self._open:
            raise serial.SerialException(f"{self.name}: expected an open {self.what}, got a closed one")
