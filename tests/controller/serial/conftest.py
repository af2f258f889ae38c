"""Fixtures for the controller link tests: a scripted board on a real pty, and a leak check that fails
any test leaving threads behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.controller.serial.pty_board import PtyPeer


@pytest.fixture
def peer() -> Iterator[PtyPeer]:
    with PtyPeer() as p:
        yield p
