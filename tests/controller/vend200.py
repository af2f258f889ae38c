"""Done-when run: a unit daemon against `nalox sim board --faults jam=0.05` serves N presses and its ledger
matches `nalox sim ctl stats` exactly (drops, per column, per command id, stock).

The board is its own process on a real pty; the daemon runs in this process on
controller.serial.board_link.SerialBoard with the fake player (or real mpv with --clip-s). A technician
visit (door open, close, self-test) clears jammed columns whenever the ledger shows one. Run once:
.venv/bin/python -m tests.controller.vend200 --presses 200
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller import log
from controller.cli import make_clip
from controller.clock import RealClock
from controller.config import load_config
from controller.daemon import UnitDaemon
from controller.fakes import FakePlayer
from controller.serial.board_link import SerialBoard
from controller.vend.video import MpvPlayer
from tests.controller.procs import SimBoardProcess, ledger_truth, unit_config, wait_until

TERMINAL = ("dispense", "vend_failed", "out_of_stock")


def terminal(daemon: UnitDaemon) -> int:
    return sum(daemon.ledger.count(t) for t in TERMINAL)


def _ended(daemon: UnitDaemon, before: int) -> Callable[[], bool]:
    return lambda: terminal(daemon) > before


def technician_visit(board: SimBoardProcess, daemon: UnitDaemon) -> None:
    board.ctl(cmd="door", open=True)
    wait_until("service mode", lambda: daemon.mode == "service", 10)
    board.ctl(cmd="door", open=False)
    wait_until("vending after the self-test", lambda: daemon.mode == "vending", 10)


def run(
    workdir: Path,
    presses: int,
    jam: float = 0.05,
    spin_ms: int = 5,
    seed: int = 1,
    clip_s: float | None = None,
) -> dict[str, Any]:
    clips = {lang: make_clip(workdir / f"{lang}.mp4", clip_s or 1.0) for lang in ("en", "es")}
    board = SimBoardProcess(
        workdir, "--stock", "40", "--spin-ms", str(spin_ms), "--seed", str(seed), "--faults", f"jam={jam}"
    )
    config = load_config(
        unit_config(
            workdir,
            board.link,
            clips,
            **{
                "another_kit_window_s = 20 ": "another_kit_window_s = 0 ",
                "initial_stock = 20": "initial_stock = 40",
                "capacity = 30": "capacity = 50",
                "status_poll_s = 30": "status_poll_s = 5",
            },
        )
    )
    clock = RealClock()
    player = MpvPlayer(config.videos) if clip_s else FakePlayer(clock, auto="complete")
    daemon = UnitDaemon(config, SerialBoard(str(board.link), clock=clock), player, clock)
    visits, latencies = 0, []
    started = time.monotonic()
    try:
        board.ctl(cmd="temp", c=22.0)
        daemon.start()
        for i in range(presses):
            before, t0 = terminal(daemon), time.monotonic()
            board.ctl(cmd="press", lang="es" if i % 3 == 0 else "en")
            wait_until(f"press {i + 1} to end in a ledger event", _ended(daemon, before), 60)
            latencies.append(time.monotonic() - t0)
            if any(r.fault for r in daemon.ledger.columns()):
                technician_visit(board, daemon)
                visits += 1
        elapsed = time.monotonic() - started
        figures = compare(board, daemon, config.paths.ledger_path())
    finally:
        daemon.stop()
        board.stop()
    figures.update(
        presses=presses,
        technician_visits=visits,
        elapsed_s=round(elapsed, 1),
        press_to_record_p50_ms=round(statistics.median(latencies) * 1000, 1),
        press_to_record_p95_ms=round(sorted(latencies)[int(len(latencies) * 0.95) - 1] * 1000, 1),
    )
    return figures


def compare(board: SimBoardProcess, daemon: UnitDaemon, ledger: Path) -> dict[str, Any]:
    truth, mine = board.stats_cli(), ledger_truth(ledger)
    failed = daemon.ledger.events(event_type="vend_failed")
    return {
        "sim_dropped": truth["dropped"],
        "ledger_dispensed": mine["dropped"],
        "per_column_equal": truth["per_column"] == mine["per_column"],
        "stock_equal": truth["stock"] == mine["stock"],
        "per_command_equal": truth["per_command"] == mine["per_command"],
        "double_drops": truth["double_drops"],
        "sim_faults": truth["faults"],
        "vend_failed": len(failed),
        "command_outcomes": daemon.ledger.command_outcomes(),
        "sim_stock": truth["stock"],
        "ledger_stock": mine["stock"],
        "sim_per_column": truth["per_column"],
        "ledger_per_column": mine["per_column"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presses", type=int, default=200)
    p.add_argument("--jam", type=float, default=0.05)
    p.add_argument("--spin-ms", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--clip-s", type=float, default=None, help="play a real clip of this length through mpv")
    args = p.parse_args(argv)
    log.configure("warning", stream=sys.stderr)  # stdout carries the figures only
    with tempfile.TemporaryDirectory(prefix="nalox-vend200-") as tmp:
        figures = run(Path(tmp), args.presses, args.jam, args.spin_ms, args.seed, args.clip_s)
    print(json.dumps(figures, indent=2))
    ok = (
        figures["sim_dropped"] == figures["ledger_dispensed"]
        and figures["per_column_equal"]
        and figures["stock_equal"]
        and figures["per_command_equal"]
        and not figures["double_drops"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
