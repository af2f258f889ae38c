"""The done-when run of the serial link: N dispenses over a real pty with line noise, checked against
the simulated board's physical ground truth; plus ping round trips on the same line.

    .venv/bin/python -m tests.controller.serial.noisy_run --count 1000 --noise 0.05 [--pings 500] [--seed 1]

Prints one JSON object: dispense outcomes, physical drops, double drops, mismatches, wall time,
ping p50/p99 and the controller's and board's link counters. Exit 0 when every `dropped` result is
one physical drop of that command and nothing dropped twice.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from controller.diag.ping import percentile, quiet_logs
from controller.serial.board_api import DispenseOutcome
from controller.serial.board_link import SerialBoard
from tests.controller.serial.simproc import SimBoardProcess

COLUMNS = 6


def dispense_all(
    board: SerialBoard, count: int, first_cid: int = 1
) -> tuple[list[DispenseOutcome], list[float]]:
    """Outcomes and per-dispense latencies in ms."""
    outcomes: list[DispenseOutcome] = []
    latencies: list[float] = []
    for cid in range(first_cid, first_cid + count):
        started = time.monotonic()
        outcomes.append(board.dispense(cid, 1 + cid % COLUMNS))
        latencies.append((time.monotonic() - started) * 1000)
    return outcomes, latencies


def ping_all(board: SerialBoard, count: int) -> list[float]:
    return [board.ping(timeout=5.0) * 1000 for _ in range(count)]


def check(outcomes: list[DispenseOutcome], stats: dict[str, Any]) -> dict[str, Any]:
    """Compare what the controller learned with what physically fell."""
    per_command = {int(k): v for k, v in stats["per_command"].items()}
    said_dropped = {o.command_id for o in outcomes if o.dropped}
    fell = {cid for cid, n in per_command.items() if n > 0}
    return {
        "dropped_results": len(said_dropped),
        "physical_drops": stats["dropped"],
        "double_drops": stats["double_drops"],
        "unattributed_drops": stats.get("unattributed", 0),
        "said_dropped_but_nothing_fell": sorted(said_dropped - fell),
        "fell_but_not_reported_dropped": sorted(fell - said_dropped),
    }


def consistent(result: dict[str, Any]) -> bool:
    return (
        result["dropped_results"] == result["physical_drops"]
        and not result["double_drops"]
        and not result["unattributed_drops"]
        and not result["said_dropped_but_nothing_fell"]
        and not result["fell_but_not_reported_dropped"]
    )


def run(workdir: Path, count: int, noise: float, pings: int = 0, seed: int = 1) -> dict[str, Any]:
    stock = count // COLUMNS + 2
    faults = f"noise={noise}" if noise else ""
    with SimBoardProcess(workdir / "dispenser", faults=faults, spin_ms=5, seed=seed, stock=stock) as sim:
        with SerialBoard(str(sim.link)) as board:
            board.start()
            started = time.monotonic()
            outcomes, latencies = dispense_all(board, count)
            seconds = time.monotonic() - started
            rtts = ping_all(board, pings)
            counters = board.counters.as_dict()
        stats = sim.stats()
    result = check(outcomes, stats)
    result.update({
        "count": count,
        "noise": noise,
        "seconds": round(seconds, 2),
        "outcomes": dict(Counter(o.outcome for o in outcomes)),
        "ping": _ping_summary(rtts),
        "dispense_latency": _ping_summary(latencies),
        "controller_link": counters,
        "board_link": stats["link"],
    })
    result["ok"] = consistent(result)
    return result


def _ping_summary(rtts: list[float]) -> dict[str, Any]:
    if not rtts:
        return {"count": 0}
    return {"count": len(rtts), "p50_ms": round(percentile(rtts, 50), 3),
            "p99_ms": round(percentile(rtts, 99), 3), "max_ms": round(max(rtts), 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for option, default in (("count", 1000), ("noise", 0.05), ("pings", 500), ("seed", 1)):
        p.add_argument(f"--{option}", type=type(default), default=default)
    args = p.parse_args(argv)
    quiet_logs()
    with tempfile.TemporaryDirectory(prefix="nalox-noisy-") as tmp:
        result = run(Path(tmp), args.count, args.noise, args.pings, args.seed)
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
