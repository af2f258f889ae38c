"""Waiting for another process to reach a state no event announces (a file, a port, an HTTP answer)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable

from nalox.errors import NaloxError


def wait_until(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    interval: float = 0.1,
    alive: Callable[[], None] | None = None,
) -> None:
    """Poll `check` until it is true; raise NaloxError naming `what` after `timeout` seconds.

    `alive` runs before each poll and raises when a process the wait depends on has died. A check
    that fails with an I/O, parse or subprocess error counts as "not yet"."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        try:
            if check():
                return
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
        pause.wait(interval)
    raise NaloxError(f"expected {what} within {timeout:g} s, it did not happen")
