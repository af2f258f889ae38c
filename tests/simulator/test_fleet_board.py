"""A board with a fleet's long idle wait (simulator/board.py idle_wait_s, busy_wait_s): an operator's
press, door or stop still reaches the firmware at once, and a tap stays a tap (not a long press)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from simulator.board import SimulatedBoard
from simulator.errors import SimulatorError
from simulator.memlink import serial_pair
from tests.simulator.conftest import board_and_peer
from tests.simulator.mini_controller import Peer

IDLE_S = 3.0  # longer than any bound below: an event seen sooner was woken, not polled


@pytest.fixture
def sleepy() -> Iterator[tuple[SimulatedBoard, Peer]]:
    board = SimulatedBoard(columns=2, stock=3, spin_ms=10, seed=5, idle_wait_s=IDLE_S, busy_wait_s=0.005)
    with board_and_peer(board) as pair:
        yield pair


def test_a_tap_wakes_an_idle_board_and_stays_a_tap(sleepy: tuple[SimulatedBoard, Peer]) -> None:
    board, peer = sleepy
    for lang, index in (("en", 0), ("es", 1)):
        started = time.monotonic()
        board.press(lang)
        press = peer.expect_type("Button2", timeout=IDLE_S - 0.5)
        assert press.index == index and time.monotonic() - started < IDLE_S - 0.5
        assert press.hold_ms < 500, f"a tap read as held {press.hold_ms} ms: a long press to the unit"
    started = time.monotonic()
    board.set_door(True)
    assert peer.expect_type("Door", timeout=IDLE_S - 0.5).open == 1
    assert time.monotonic() - started < IDLE_S - 0.5


def test_stop_does_not_wait_out_the_idle_wait(sleepy: tuple[SimulatedBoard, Peer]) -> None:
    board, _ = sleepy
    started = time.monotonic()
    board.stop()
    assert time.monotonic() - started < IDLE_S - 0.5


def test_waits_are_checked() -> None:
    with pytest.raises(SimulatorError, match="busy_wait_s <= idle_wait_s"):
        SimulatedBoard(idle_wait_s=0.01, busy_wait_s=0.02)


def test_cancel_read_ends_the_blocked_read_or_else_the_next() -> None:
    a, b = serial_pair()
    b.timeout = IDLE_S
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(b.read(1)))
    started = time.monotonic()
    reader.start()
    b.cancel_read()  # before or during the read: either way it returns at once, empty
    reader.join(timeout=IDLE_S)
    assert got == [b""] and time.monotonic() - started < IDLE_S - 0.5
    b.timeout = 0.05
    a.write(b"x")
    assert b.read(1) == b"x"  # the cancel was used up: later reads wait and read as before
