"""A NOTIFY_SOCKET like systemd's: the unit daemon says READY=1 here when it is up (soak, bench)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

from nalox.errors import NaloxError


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)

    def drain(self) -> None:
        """Forget what an earlier daemon said (before starting the next one)."""
        self.sock.setblocking(False)
        try:
            while self.sock.recv(4096):
                pass
        except OSError:
            pass
        finally:
            self.sock.settimeout(0.2)

    def wait_ready(self, timeout: float, alive: Callable[[], None] | None = None) -> float:
        """perf_counter() when READY=1 arrived; NaloxError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if alive is not None:
                alive()
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            if b"READY=1" in data.split(b"\n"):
                return time.perf_counter()
        raise NaloxError(f"expected READY=1 on the notify socket within {timeout:g} s, got none")

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)
