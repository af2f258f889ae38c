"""SerialBoard against `nalox sim board` running as its own process behind a real pty: what the controller
learns matches what physically fell, under line noise, board reboots and a port that vanishes."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.serial.board_api import BoardEvent, BoardRebooted, DispenseOutcome
from controller.serial.board_link import SerialBoard
from tests.controller.serial import noisy_run
from tests.controller.serial.simproc import SimBoardProcess

Events = queue.Queue[BoardEvent]


@pytest.fixture
def events() -> Events:
    return queue.Queue()


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimBoardProcess]:
    with SimBoardProcess(tmp_path / "dispenser", spin_ms=5) as s:
        yield s


def drops_of(stats: dict[str, object], cid: int) -> int:
    per_command = stats["per_command"]
    assert isinstance(per_command, dict)
    return int(per_command.get(str(cid), 0))


def assert_truth(outcomes: list[DispenseOutcome], stats: dict[str, object]) -> None:
    """Every `dropped` result is exactly one physical drop of that command; nothing else fell."""
    for o in outcomes:
        assert drops_of(stats, o.command_id) == (1 if o.dropped else 0), o
    assert stats["double_drops"] == [] and stats["unattributed"] == 0
    assert stats["dropped"] == sum(o.dropped for o in outcomes)


def wait_for_boot(events: Events, boot_count: int | None = None, timeout: float = 10.0) -> BoardRebooted:
    """The first BoardRebooted event (with that boot count), skipping others; queue.Empty on timeout."""
    while True:
        event = events.get(timeout=timeout)
        if isinstance(event, BoardRebooted) and boot_count in (None, event.boot_count):
            return event


def test_clean_line_requests_and_dispenses(sim: SimBoardProcess) -> None:
    with SerialBoard(str(sim.link)) as board:
        info = board.start()
        assert (info.board_id, info.columns, info.protocol, info.model) == ("sim-0001", 6, 2, "nalox-sim")
        assert board.ping() < 0.5
        status = board.status()
        assert not status.door_open and len(status.motors) == 6
        outcomes = [board.dispense(cid, 1 + cid % 6) for cid in range(1, 31)]
        assert all(o.dropped for o in outcomes)
        assert board.dispense(7, 2).dropped, "a repeated command id answers from the journal"
        assert board.query_result(7).outcome == "dropped"
        assert board.query_result(999).outcome == "unknown_command"
        assert board.counters.crc_errors == 0
    stats = sim.stats()
    assert_truth(outcomes, stats)
    assert stats["per_column"] == {str(c): 5 for c in range(1, 7)}


def test_noisy_line_dispenses_match_physical_drops(tmp_path: Path) -> None:
    """The done-when run, smaller: 5% of bytes corrupted on the pty, every result true."""
    result = noisy_run.run(tmp_path, count=200, noise=0.05, pings=20, seed=3)
    assert result["ok"], result
    assert result["dropped_results"] == result["physical_drops"] == 200
    assert result["double_drops"] == []
    link = result["controller_link"]
    assert link["crc_errors"] > 50 and link["retransmissions"] > 20, "the noise really was there"


def test_board_reboot_mid_dispense_is_answered_from_the_journal(tmp_path: Path, events: Events) -> None:
    faults = "reboot_during_dispense=1"
    with SimBoardProcess(tmp_path / "dispenser", spin_ms=60, faults=faults, seed=5) as sim:
        with SerialBoard(str(sim.link), reply_timeout=2.0) as board:
            board.start(events.put)
            outcomes = [board.dispense(cid, 2) for cid in range(1, 7)]
            assert wait_for_boot(events).boot_count >= 1
            assert {o.outcome for o in outcomes} <= {"dropped", "interrupted"}
            interrupted = [o.command_id for o in outcomes if o.outcome == "interrupted"]
            assert interrupted, f"expected a reboot before some drop, got {outcomes}"
            sim.ctl("fault", "reboot_during_dispense=0")
            again = board.dispense(interrupted[0], 2)
            assert again.outcome == "interrupted", "an interrupted command is never spun again"
            assert board.counters.extra["boots"] >= 1 + len(interrupted)
        stats = sim.stats()
    assert_truth(outcomes, stats)
    assert stats["boots"] >= 1 + len(interrupted)


def test_reboot_between_dispenses_restarts_the_session(sim: SimBoardProcess, events: Events) -> None:
    with SerialBoard(str(sim.link)) as board:
        board.start(events.put)
        first = board.dispense(1, 1)
        hellos = board.counters.extra["hellos"]
        sim.ctl("reboot")
        assert wait_for_boot(events, 2).reason == "sim_reboot"
        second = board.dispense(2, 1)
        assert board.counters.extra["hellos"] == hellos + 1, "a new board session starts with HELLO"
        assert board.info is not None and board.info.boot_count == 2
    assert_truth([first, second], sim.stats())


def test_port_that_disappears_and_returns(tmp_path: Path, events: Events) -> None:
    """kill -9 the simulator (the board loses power), start it again on the same path and state."""
    link, state = tmp_path / "dispenser", tmp_path / "state"
    first = SimBoardProcess(link, state_dir=state, spin_ms=5).start()
    board = SerialBoard(str(link), request_timeout=30.0)
    try:
        board.start(events.put)
        before = [board.dispense(cid, 3) for cid in (1, 2)]
        assert_truth(before, first.stats())
        first.kill()
        result: list[DispenseOutcome] = []
        worker = threading.Thread(target=lambda: result.append(board.dispense(3, 3)))
        worker.start()  # sent into a dead port: retried until the board is back
        with SimBoardProcess(link, state_dir=state, spin_ms=5) as second:
            worker.join(30)
            assert result and result[0].dropped
            repeat = board.dispense(1, 3)
            assert repeat.dropped, "the journal survived the power cut"
            stats = second.stats()
            assert drops_of(stats, 1) == 0, "a journaled command is never spun again"
            assert drops_of(stats, 3) == 1 and stats["dropped"] == 1
            assert board.counters.reopens >= 1
            assert wait_for_boot(events, 2).reason == "power_on"
    finally:
        board.close()
        first.stop()
