"""Fixtures for the simulator tests: a thread-leak guard, a board on an in-memory link with a test peer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from simulator.board import SimulatedBoard
from simulator.memlink import serial_pair
from tests.simulator.mini_controller import Peer


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=5)
    leaked = [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"


@pytest.fixture
def rig() -> Iterator[tuple[SimulatedBoard, Peer]]:
    """A SimulatedBoard (spin 10 ms) on a memlink, and a Peer that has seen BOOT and done HELLO."""
    with board_and_peer(SimulatedBoard(columns=4, stock=5, spin_ms=10, seed=3)) as pair:
        yield pair


@contextmanager
def board_and_peer(board: SimulatedBoard) -> Iterator[tuple[SimulatedBoard, Peer]]:
    """`board` started on a memlink with a Peer that has seen BOOT and done HELLO; both stopped after."""
    controller_end, board_end = serial_pair()
    board.attach(board_end)
    peer = Peer(controller_end)
    board.start()
    try:
        peer.expect_type("Boot")
        peer.hello()
        yield board, peer
    finally:
        board.stop()
        peer.close()
        board_end.close()
