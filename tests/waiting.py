"""Waiting on a condition in tests: poll with a deadline, fail saying what never held.

For conditions no event announces (a file appearing, another process's state); where a test can
wait on an event or advance an injected clock, it should do that instead."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def wait_for(
    cond: Callable[[], object], timeout: float = 10.0, what: str = "condition", poll: float = 0.02
) -> None:
    """Return as soon as `cond()` is true; raise AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {what} within {timeout} s, it never held")
        pause.wait(poll)
