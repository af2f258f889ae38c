"""Fault-injection soak: one unit and its simulated board (separate processes), a broker and the
inventory service serve many presses while nalox/chaos.py injects real-world faults; at the end the
central store, the unit ledger and the simulator's ground truth must agree exactly.

`python -m nalox.soak --presses N --seed S [--minutes M]` prints the figures and the faults it
injected, and exits 1 on any difference (0 lost, 0 counted twice, 0 kits dispensed twice, equal
stock per column).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from nalox.broker import DEPLOY
from nalox.census import LedgerCensus, dispense_in_flight, ledger_census
from nalox.chaos import ChaosPlan, HostileUnit, TcpProxy
from nalox.configs import UnitSpec
from nalox.errors import NaloxError
from nalox.notify import NotifySocket
from nalox.ports import free_port
from nalox.stack import Stack
from nalox.supervision import run_supervised
from nalox.waiting import wait_until

log = structlog.get_logger("nalox.soak")
# a broker like production's: persistence on, saved often (kill -9 still loses what was not saved)
PERSISTENT = {"persistence false": "persistence true\nautosave_interval 2\npersistence_location /tmp/"}


@dataclass
class Options:
    presses: int = 200
    seed: int = 1
    minutes: float = 0
    fault_rate: float = 0.15
    cut_s: tuple[float, float] = (20.0, 120.0)
    video_seconds: float = 1.0
    workdir: Path | None = None
    settle_timeout: float = 20.0
    summary: Path | None = None
    cover_all: bool = True  # every fault kind at least once, early
    hostile: bool = True  # the production broker with certificates, and a unit whose certificate was copied


@dataclass
class Soak:
    """The stack under test, the fault plan, and what happened so far."""

    opts: Options
    stack: Stack
    proxy: TcpProxy
    plan: ChaosPlan
    presses: int = 0
    unsettled: int = 0
    kills_in_dispense: int = 0
    technician_visits: int = 0
    active: dict[str, Any] = field(default_factory=dict)  # fault -> when/after how many presses it ends
    hostile: HostileUnit | None = None

    # ---------------------------------------------------------------- one step

    def step(self) -> None:
        self.expire_faults()
        fault = self.plan.next_fault()
        if fault is not None and fault not in self.active:
            self.inject(fault)
            if fault == "unit_kill_in_dispense":
                return  # that fault pressed the button itself
        self.press()

    def press(self) -> bool:
        before = self.counts()
        self.stack.ctl("press", "--lang", self.plan.language())
        self.presses += 1
        try:
            wait_until(
                "the press to end in a ledger event",
                lambda: self.counts().terminal > before.terminal,
                self.opts.settle_timeout,
                interval=0.05,
                alive=self.stack.check_alive,
            )
        except NaloxError:
            self.unsettled += 1
            log.warning("press did not settle", presses=self.presses, active=sorted(self.active))
            return False
        if self.counts().failed > before.failed:
            self.technician_visit()
        return True

    def technician_visit(self) -> None:
        """A failed vend pages a technician, who opens the door, clears the columns and closes it (the
        self-test at door close clears column faults). Without visits, jams pile up until every column
        is faulted and the rest of the run only measures an unit out of service."""
        self.technician_visits += 1
        self.stack.ctl("door", "open")
        self.stack.ctl("door", "close")

    def ledger(self) -> LedgerCensus:
        return self.stack.ledger()

    def counts(self) -> LedgerCensus:
        """The ledger's events per type only: polled every 50 ms for each of up to 10,000 presses."""
        return ledger_census(self.stack.ledger_path, counts_only=True)

    # ---------------------------------------------------------------- faults

    def inject(self, fault: str) -> None:
        self.plan.record(fault)
        getattr(self, f"fault_{fault}")()

    def fault_broker_kill(self) -> None:
        assert self.stack.broker is not None
        self.stack.broker.kill()
        time.sleep(self.plan.uniform(0.2, 3.0))  # the outage itself
        self.stack.broker.start()

    def fault_central_kill(self) -> None:
        assert self.stack.inventory is not None
        self.stack.inventory.kill9()
        time.sleep(self.plan.uniform(0.2, 2.0))
        self.stack.start_inventory()

    def fault_unit_kill_in_dispense(self) -> None:
        """Press, wait until the daemon has journaled its DISPENSE command, kill -9, restart."""
        self.stack.ctl("press", "--lang", self.plan.language())
        self.presses += 1
        try:
            wait_until(
                "a pending dispense command in the ledger",
                lambda: dispense_in_flight(self.stack.ledger_path),
                self.opts.video_seconds + 10,
                interval=0.01,
            )
            self.kills_in_dispense += 1
        except NaloxError:
            log.warning("no dispense seen before the kill", presses=self.presses)
        assert self.stack.unit is not None
        self.stack.unit.kill9()
        self.stack.start_unit()

    def fault_board_reboot(self) -> None:
        self.stack.ctl("reboot")

    def fault_noise(self) -> None:
        self.stack.ctl("fault", f"noise={self.plan.uniform(0.0005, 0.003):.4f}")
        self.active["noise"] = self.presses + int(self.plan.uniform(2, 8))

    def fault_jam(self) -> None:
        self.stack.ctl("fault", f"jam={self.plan.uniform(0.1, 0.5):.2f}")
        self.active["jam"] = self.presses + int(self.plan.uniform(2, 8))

    def fault_hostile(self) -> None:
        """One round of every attack of issue 11 by a second unit's copied certificate."""
        assert self.hostile is not None
        self.hostile.attack()

    def fault_door(self) -> None:
        self.stack.ctl("door", "open")
        time.sleep(self.plan.uniform(0.3, 2.0))  # a technician at the machine
        self.stack.ctl("door", "close")

    def fault_cut(self) -> None:
        self.proxy.cut()
        self.active["cut"] = time.monotonic() + self.plan.uniform(*self.opts.cut_s)

    def expire_faults(self, force: bool = False) -> None:
        now = time.monotonic()
        for name, until in list(self.active.items()):
            over = until <= now if name == "cut" else until <= self.presses
            if force or over:
                self.end_fault(name)

    def end_fault(self, name: str) -> None:
        del self.active[name]
        if name == "cut":
            self.proxy.restore()
        else:
            self.stack.ctl("fault", f"{name}=0")

    # ---------------------------------------------------------------- the end

    def hostile_figures(self) -> dict[str, Any] | None:
        h = self.hostile
        if h is None:
            return None
        held: Any = []
        accepted: Any = None
        if self.stack.central is not None:
            try:
                held = self.stack.central.get("/api/quarantine", state="all", unit=h.unit_id, limit=5000)
                accepted = len(self.stack.central.get(f"/api/units/{h.unit_id}/events", limit=1000)) \
                    if any(u.get("id") == h.unit_id for u in self.stack.central.units()) else 0
            except Exception as e:  # the figures must come even if central is down at the end
                held = [{"error": str(e)[:200]}]
        reasons: dict[str, int] = {}
        for q in held if isinstance(held, list) else []:
            reasons[q.get("reason", "?")] = reasons.get(q.get("reason", "?"), 0) + int(q.get("count", 1))
        return {
            "rounds": h.rounds,
            "breaches": dict(h.breaches),
            "stolen_messages": h.stolen_messages,
            "broker_answers": {k: sorted(set(v)) for k, v in sorted(h.outcomes.items())},
            "central_quarantine": dict(sorted(reasons.items())),
            "central_events_accepted": accepted,  # every odd payload is refused: 0
        }

    def figures(self) -> dict[str, Any]:
        uid = self.stack.spec.unit_id
        sim = self.stack.sim_stats()
        led = self.ledger()
        assert self.stack.central is not None
        central_ids = self.stack.central.event_ids(uid)
        ledger_ids = led.event_ids
        return {
            "presses": self.presses,
            "unsettled_presses": self.unsettled,
            "sim_dropped": int(sim["dropped"]),
            "ledger_dispensed": led.dispensed,
            "central_dispensed": self.stack.central.dispense_count(uid),
            "ledger_events": len(ledger_ids),
            "central_events": len(central_ids),
            "events_lost": len(set(ledger_ids) - set(central_ids)),
            "events_counted_twice": len(central_ids) - len(set(central_ids)),
            "events_unknown_to_ledger": len(set(central_ids) - set(ledger_ids)),
            "kits_dispensed_twice": len(sim.get("double_drops", [])),
            "outbox_depth": led.outbox,
            "stock": {
                "ledger": led.stock,
                "sim": {str(k): int(v) for k, v in sim["stock"].items()},
                "central": self.stack.central.stock(uid),
            },
            "faults_injected": dict(sorted(self.plan.injected.items())),
            "hostile": self.hostile_figures(),
            "unit_kills_during_dispense": self.kills_in_dispense,
            "technician_visits": self.technician_visits,
            "board": {k: sim.get(k) for k in ("boots", "faults", "presses")},
        }


def verdict(f: dict[str, Any]) -> list[str]:
    """Every difference, in words; empty when the three accounts agree exactly."""
    problems = []
    h = f.get("hostile") or {}
    if h.get("breaches"):
        problems.append(f"hostile unit attacks not refused: {h['breaches']}")
    if h.get("stolen_messages"):
        problems.append(f"hostile unit received {h['stolen_messages']} messages meant for others")
    if h.get("central_events_accepted"):
        problems.append(f"central counted {h['central_events_accepted']} of the hostile unit's odd events")
    if f["ledger_dispensed"] != f["sim_dropped"]:
        problems.append(f"ledger counts {f['ledger_dispensed']} kits, the board dropped {f['sim_dropped']}")
    if f["central_dispensed"] != f["sim_dropped"]:
        problems.append(f"central counts {f['central_dispensed']} kits, the board dropped {f['sim_dropped']}")
    for key in ("events_lost", "events_counted_twice", "events_unknown_to_ledger", "kits_dispensed_twice"):
        if f[key]:
            problems.append(f"{key.replace('_', ' ')}: {f[key]}")
    if f.get("outbox_depth"):
        problems.append(f"the unit's outbox still holds {f['outbox_depth']} events central never acked")
    st = f["stock"]
    if not st["ledger"] == st["sim"] == st["central"]:
        problems.append(f"stock differs: ledger {st['ledger']}, board {st['sim']}, central {st['central']}")
    return problems


def caught_up(soak: Soak) -> bool:
    f = soak.figures()
    return f["outbox_depth"] == 0 and not verdict(f)


def build(opts: Options) -> Soak:
    workdir = opts.workdir or Path(tempfile.mkdtemp(prefix="nalox-soak-"))
    # enough kits for every press (a column holds at most 1,000): 6 columns up to 5,800 presses, more beyond
    columns = max(6, -(-(opts.presses + 200) // 1000))
    stock = max(20, min(1000, opts.presses // columns + 20))
    spec = UnitSpec(
        "soak-unit-1",
        columns=columns,
        stock=stock,
        spin_ms=100,
        video_seconds=opts.video_seconds,
        multi_kit_window_s=3,
    )
    mqtt_port = free_port()
    proxy = TcpProxy(mqtt_port).start()
    conf = {k: v.replace("/tmp/", f"{workdir}/broker/") for k, v in PERSISTENT.items()}
    pki = make_pki(workdir / "pki", spec.unit_id) if opts.hostile else None
    if pki is not None:
        conf["autosave_interval 60"] = "autosave_interval 2"
        spec.tls = client_files(pki, spec.unit_id)
    stack = Stack(
        workdir, spec, mqtt_port, free_port(), seed=opts.seed, unit_mqtt_port=proxy.port, broker_conf=conf,
        pki=pki,
    )
    stack.workdir.mkdir(parents=True, exist_ok=True)
    stack.notify = NotifySocket(workdir / "notify.sock")
    # a restart after a kill only has to come back, not fast: on a loaded 2-core machine a Python start-up
    # took over 60 s (load averages 235 and 1,300), and that is no finding about the unit or central
    stack.ready_timeout = 300.0
    plan = ChaosPlan(opts.seed, rate=opts.fault_rate, cover_all=opts.cover_all)
    if pki is None:
        plan.weights.pop("hostile", None)
        plan.uncovered = [f for f in plan.uncovered if f != "hostile"]
    soak = Soak(opts, stack, proxy, plan)
    if pki is not None:
        soak.hostile = HostileUnit(mqtt_port, client_files(pki, HOSTILE), HOSTILE, spec.unit_id,
                                   "nalox-inventory-demo")
    return soak


HOSTILE = "soak-hostile"


def make_pki(root: Path, unit_id: str) -> Path:
    """CAs, broker, the honest unit, the hostile unit, inventory and operations, by make-certs.sh."""
    script = DEPLOY.parent / "pki" / "make-certs.sh"
    root.parent.mkdir(parents=True, exist_ok=True)  # make-certs.sh resolves DIR from its parent
    for args in (["init"], ["unit", unit_id], ["unit", HOSTILE], ["service", "inventory"],
                 ["service", "dashboard"], ["service", "operations"]):
        done = subprocess.run(["sh", str(script), str(root), *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise NaloxError(f"make-certs.sh {' '.join(args)} failed: {done.stderr.strip()}")
    return root


def client_files(pki: Path, name: str) -> dict[str, str]:
    folder = pki / "clients" / name
    return {"ca": str(folder / "ca.crt"), "cert": str(folder / f"{name}.crt"),
            "key": str(folder / f"{name}.key")}


def run(opts: Options) -> dict[str, Any]:
    soak = build(opts)
    print(f"soak: files and logs in {soak.stack.workdir}", flush=True)
    end = time.monotonic() + opts.minutes * 60 if opts.minutes else float("inf")
    try:
        soak.stack.start()
        while soak.presses < opts.presses and time.monotonic() < end:
            soak.step()
            if soak.presses % 50 == 0:
                print(f"  presses {soak.presses}, faults {dict(soak.plan.injected)}", flush=True)
        soak.expire_faults(force=True)
        try:
            wait_until(
                "central, ledger and board to agree with an empty outbox",
                lambda: caught_up(soak),
                180,
                interval=1.0,
            )
        except NaloxError as e:
            log.warning("did not catch up", error=str(e))
        return soak.figures()
    finally:
        soak.stack.close()
        soak.proxy.close()


def report(f: dict[str, Any]) -> int:
    problems = verdict(f)
    print(json.dumps(f, indent=2, sort_keys=True))
    print(
        f"presses {f['presses']}: board dropped {f['sim_dropped']}, ledger {f['ledger_dispensed']}, "
        f"central {f['central_dispensed']}; events lost {f['events_lost']}, counted twice "
        f"{f['events_counted_twice']}, kits dispensed twice {f['kits_dispensed_twice']}; "
        f"faults {sum(f['faults_injected'].values())}"
    )
    for p in problems:
        print(f"DIFFERENCE: {p}")
    print("soak: PASS" if not problems else "soak: FAIL")
    return 0 if not problems else 1


def parse_args(argv: list[str]) -> Options:
    p = argparse.ArgumentParser(prog="python -m nalox.soak", description=__doc__.splitlines()[0])
    p.add_argument("--presses", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--minutes", type=float, default=0, help="stop pressing after M minutes")
    p.add_argument("--fault-rate", type=float, default=0.15, help="chance of a fault before each press")
    p.add_argument("--cut-min", type=float, default=20.0, help="shortest cut off the broker, seconds")
    p.add_argument("--cut-max", type=float, default=120.0, help="longest cut off the broker, seconds")
    p.add_argument("--video-seconds", type=float, default=1.0, help="length of the training clip")
    p.add_argument("--summary", type=Path, help="also write the figures as JSON here")
    p.add_argument("--workdir", type=Path)
    p.add_argument("--no-hostile", action="store_true",
                   help="the dev broker and no hostile unit (default: production broker, certificates, "
                   "and a unit whose certificate was copied tries every attack)")
    a = p.parse_args(argv)
    return Options(
        a.presses,
        a.seed,
        a.minutes,
        a.fault_rate,
        (a.cut_min, a.cut_max),
        video_seconds=a.video_seconds,
        workdir=a.workdir,
        summary=a.summary,
        hostile=not a.no_hostile,
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)

    def soak_and_report() -> int:
        figures = run(opts)
        if opts.summary:
            opts.summary.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
        return report(figures)

    return run_supervised("soak", soak_and_report, failure=2)


if __name__ == "__main__":
    sys.exit(main())
