"""Units per core: how many simulated units (the real unit code, nalox/fleetrun.py) one process carries at
a realistic rate compressed in time while keeping up, and the CPU it takes. `python -m bench.fleet
[--quick]` runs it alone; bench/run.py runs it as the `fleet` measure.

Method: a real mosquitto (deploy/mosquitto/dev.conf) and the central service (`nalox inventory serve`,
SQLite) in their own processes. The baseline is one unit alone in this process for a window: its CPU,
scaled, is what N units would cost if nothing were shared or contended. Then units are added in steps;
after each step, a warm-up of one press interval, then a measured window. A window keeps up when:
- no press came due while its unit still served the previous one, and every press got its kit;
- press -> kit beyond the video, p99, is at most max(2 s, 3x the lone unit's p99 in the same run): on a
  shared machine a lone unit's tail is the machine's scheduling; a process that falls behind queues
  without bound, so the bound is loose on purpose;
- no unit's outbox holds more than OUTBOX_BOUND events at the window's end (central acks keep pace).
Units per core = the largest N that kept up / the cores this process used at N (CPU seconds of all its
threads per wall second, getrusage).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import structlog

from nalox.configs import UnitSpec
from nalox.fleetrun import (
    CpuMeter,
    FleetRun,
    Profile,
    profile_dict,
    quiet_units,
    raise_fd_limit,
    window_figures,
)
from nalox.ports import free_port
from nalox.stack import Stack
from nalox.supervision import sigterm_raises

OUTBOX_BOUND = 10  # events one unit may hold unacked at a window's end (a vend writes 3 or 4)


@dataclass(frozen=True)
class Plan:
    steps: tuple[int, ...]
    window_s: float
    baseline_s: float

    @classmethod
    def pick(cls, quick: bool) -> Plan:
        if quick:
            return cls((25, 50, 75, 100, 150, 200), 15.0, 20.0)
        return cls((25, 50, 75, 100, 125, 150, 200, 300), 30.0, 40.0)


class OtherCpu:
    """CPU of the broker and the central service over the same window (they serve the fleet too)."""

    def __init__(self, pids: list[int]) -> None:
        self.procs = [psutil.Process(p) for p in pids]
        self.reset()

    def _total(self) -> float:
        total = 0.0
        for p in self.procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                pass
        return total

    def reset(self) -> None:
        self.cpu0, self.wall0 = self._total(), time.monotonic()

    def cores(self) -> float:
        return (self._total() - self.cpu0) / max(1e-9, time.monotonic() - self.wall0)


def window(fleet: FleetRun, seconds: float, others: OtherCpu) -> dict[str, Any]:
    """Press for a warm-up interval, then `seconds` measured: figures and cores."""
    fleet.run(fleet.profile.press_interval_s)
    fleet.take()
    cpu = CpuMeter()
    others.reset()
    fleet.run(seconds)
    cores, other = cpu.cores(), others.cores()
    total, deepest = fleet.outbox()
    out = window_figures(fleet.take(), fleet.profile)
    out.update(units=len(fleet.units), cores=round(cores, 4), broker_central_cores=round(other, 3),
               outbox=total, outbox_max=deepest, timer_late_s=round(fleet.timeline.late_s, 3),
               load_1m=round(psutil.getloadavg()[0], 1),
               rss_mb=round(psutil.Process().memory_info().rss / 1e6))
    fleet.timeline.late_s = 0.0
    return out


def keeps_up(w: dict[str, Any], overhead_bound_s: float) -> list[str]:
    """What failed in a window (empty: it kept up)."""
    why = []
    if w["busy"] or w["unserved"] or w["not_dropped"] or w["before_video"]:
        why.append(f"{w['busy']} presses found the unit busy, {w['unserved']} unserved, "
                   f"{w['not_dropped']} without a kit, {w['before_video']} kits before the video ended")
    if w["presses"] == 0 or w["overhead_p99_s"] is None:
        why.append("no press served in the window")
    elif w["overhead_p99_s"] > overhead_bound_s:
        why.append(f"press -> kit beyond the video p99 {w['overhead_p99_s']} s > {overhead_bound_s:.2f} s")
    if w["outbox_max"] > OUTBOX_BOUND:
        why.append(f"an outbox held {w['outbox_max']} events > {OUTBOX_BOUND}")
    return why


def measure(quick: bool = False, compression: float = Profile.compression) -> dict[str, Any]:
    plan = Plan.pick(quick)
    profile = Profile(compression=compression)
    raise_fd_limit()
    logging = structlog.get_config()
    quiet_units("error", sys.stderr)  # the units' own lines would be most of the work measured
    work = Path(tempfile.mkdtemp(prefix="nalox-bench-fleet-"))
    most = plan.steps[-1]
    ids = [(f"bench-fleet-{i:04d}", f"Site {i % 20 + 1}") for i in range(most + 1)]
    stack = Stack(work, UnitSpec("unused"), free_port(), free_port())
    expected_s = plan.baseline_s + len(plan.steps) * (plan.window_s + 2 * profile.press_interval_s) + 60
    try:
        stack.start_broker()
        stack.start_inventory([UnitSpec(u, site=s) for u, s in ids])
        assert stack.broker is not None and stack.broker.proc is not None and stack.inventory is not None
        others = OtherCpu([stack.broker.proc.pid, stack.inventory.pid])
        alone = FleetRun(work / "alone", stack.mqtt_port, profile, seed=1, expected_s=expected_s)
        try:
            alone.add(ids[-1:])
            base = window(alone, plan.baseline_s, others)
        finally:
            alone.close()
        bound = max(2.0, 3 * (base["overhead_p99_s"] or 0.5))
        fleet = FleetRun(work / "fleet", stack.mqtt_port, profile, seed=2, expected_s=expected_s)
        steps: list[dict[str, Any]] = []
        try:
            for n in plan.steps:
                start_s = fleet.add(ids[len(fleet.units):n])
                w = window(fleet, plan.window_s, others)
                w["start_s"] = round(start_s, 1)
                w["failed"] = keeps_up(w, bound)
                steps.append(w)
                print(f"    fleet {n} units: {json.dumps(w)}", file=sys.stderr, flush=True)
                if w["failed"]:
                    break
        finally:
            fleet.close()
    finally:
        stack.close()
        structlog.configure(**logging)
    return result(base, steps, bound, profile, plan)


def result(base: dict[str, Any], steps: list[dict[str, Any]], bound: float, profile: Profile,
           plan: Plan) -> dict[str, Any]:
    kept = [s for s in steps if not s["failed"]]
    best = kept[-1] if kept else None
    base_per_core = round(1 / base["cores"], 1) if base["cores"] > 0 else None
    per_core = round(best["units"] / best["cores"], 1) if best and best["cores"] > 0 else None
    return {
        "units_kept_up": best["units"] if best else 0,
        "cores_at_that": best["cores"] if best else None,
        "units_per_core": per_core,
        "baseline_units_per_core": base_per_core,
        "ratio": round(per_core / base_per_core, 3) if per_core and base_per_core else None,
        "stopped_because": steps[-1]["failed"] if steps and steps[-1]["failed"] else
        [f"the last step ({plan.steps[-1]} units) kept up"],
        "overhead_bound_s": round(bound, 3),
        "outbox_bound": OUTBOX_BOUND,
        "baseline_one_unit": base,
        "steps": steps,
        "profile": profile_dict(profile),
        "window_s": plan.window_s,
        "target": "units per core at compression 30: report (no target set); ratio ~1 = no contention",
    }


def table_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    if not r:
        return []
    if "error" in r:
        return [("fleet: units per core", "error", "", "", str(r["error"])[:60])]
    p = r["profile"]
    return [
        (f"fleet: units per core (press every {p['press_interval_s']:g} s)", f"{r['units_per_core']}",
         f"{r['baseline_units_per_core']}", f"{r['ratio']}", "report"),
        ("  units one process kept up / its cores",
         f"{r['units_kept_up']} / {r['cores_at_that']}", "", "", ""),
    ]


def main(argv: list[str] | None = None) -> int:
    from bench.run import RESULTS, machine, markdown_table  # run.py imports this module: import when run

    p = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--compression", type=float, default=Profile.compression)
    p.add_argument("--out", type=Path, default=RESULTS, help="written under the key 'fleet', the rest kept")
    a = p.parse_args(argv)
    with sigterm_raises():  # a SIGTERM stops the broker, the service and the units on the way out
        res = measure(a.quick, a.compression)
    res.update(machine=machine(), ran_at=datetime.now(UTC).isoformat(timespec="seconds"), quick=a.quick)
    everything = json.loads(a.out.read_text()) if a.out.exists() else {}
    everything["fleet"] = res
    a.out.write_text(json.dumps(everything, indent=2, sort_keys=True) + "\n")
    m = res["machine"]
    note = (f"machine: {m['cpu']}, {m['cores']} cores, load average {m['load_average_1_5_15']}; "
            f"{'quick' if a.quick else 'full'} run {res['ran_at']}")
    print(markdown_table([("measure", "nalox", "baseline", "ratio", "target"), *table_rows(res)], note))
    print(f"\nwrote {a.out} (key 'fleet')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
