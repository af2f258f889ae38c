"""Fixtures for the controller link tests: a scripted board on a real pty, and a leak check that fails
any test leaving threads behind."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tests.controller.serial.peer import PtyPeer


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    for t in leaked:
        t.join(timeout=5)
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"expected no threads left running after the test, got {still}"


@pytest.fixture
def peer() -> Iterator[PtyPeer]:
    with PtyPeer() as p:
        yield p
