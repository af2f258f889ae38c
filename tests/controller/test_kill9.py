"""kill -9 of `nalox unit run` while the separate `nalox sim board` process is dispensing: the restarted
daemon settles the in-flight command from the board's journal, so the kit is recorded once, never twice."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from controller.cli import make_clip
from controller.ledger import read_census
from tests.controller.procs import (
    SimBoardProcess,
    UnitProcess,
    ledger_truth,
    unit_config,
    wait_until,
)


def pending(ledger: Path) -> list[tuple[int, ...]]:
    if not ledger.exists():
        return []
    return [(cid,) for cid in read_census(ledger).pending_commands]


def poll(predicate: Callable[[], bool], timeout: float) -> bool:
    try:
        return bool(wait_until("a condition", predicate, timeout))
    except AssertionError:
        return False


def dropped(board: SimBoardProcess, cid: int) -> Callable[[], bool]:
    return lambda: str(cid) in board.ctl(cmd="stats")["stats"]["per_command"]


def terminal(ledger: Path) -> int:
    events = read_census(ledger).events
    return sum(events.get(kind, 0) for kind in ("dispense", "vend_failed", "out_of_stock"))


def test_kill9_during_dispense_then_restart_reconciles(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", 1.0)
    board = SimBoardProcess(tmp_path, "--spin-ms", "1500", "--seed", "3")
    unit = UnitProcess(
        unit_config(
            tmp_path,
            board.link,
            {"en": clip, "es": clip},
            **{"another_kit_window_s = 20 ": "another_kit_window_s = 0 "},
        ),
        tmp_path,
    )
    ledger = tmp_path / "unit" / "ledger.sqlite3"
    try:
        board.ctl(cmd="temp", c=22.0)
        unit.start()
        drops = 0
        for _ in range(3):
            board.ctl(cmd="press", lang="en")
            [(cid,)] = wait_until("a pending DISPENSE journaled in the ledger", lambda: pending(ledger), 20)
            unit.kill9()  # the coil is still turning: the board finishes the drop on its own
            # (had the kill come between the ledger commit and the serial write, the board never saw
            # the command: then no kit, and the restart must record vend_failed instead)
            drops += bool(poll(dropped(board, cid), 5))
            assert pending(ledger) == [(cid,)], "the killed daemon never recorded the outcome"
            unit.start()
            wait_until("the restart to settle the command", lambda: not pending(ledger), 20)
            truth = board.stats_cli()
            mine = ledger_truth(ledger)
            assert truth["dropped"] == mine["dropped"] == drops
            assert truth["per_column"] == mine["per_column"]
            assert truth["stock"] == mine["stock"]
            assert truth["per_command"] == mine["per_command"]
            assert truth["double_drops"] == []
        before = terminal(ledger)
        board.ctl(cmd="press", lang="es")  # after all that, a normal vend still works
        wait_until("a normal vend after the restarts", lambda: terminal(ledger) > before, 20)
        assert drops >= 2, "the kills are meant to land while the coil turns"
        assert board.stats_cli()["dropped"] == ledger_truth(ledger)["dropped"] == drops + 1
        assert unit.terminate() == 0, "SIGTERM stops the daemon cleanly with exit 0"
        assert b"unit_stopped" in unit.log_bytes()
    finally:
        if unit.proc is not None and unit.proc.poll() is None:
            unit.kill9()
        board.stop()
