"""`make fleet-soak` / `python -m nalox.fleetsoak`: a state's fleet of simulated units (1,000 by default)
against the central service on PostgreSQL for ten minutes, then every unit counted three ways: the kits
that physically dropped on its simulated board, its own ledger, the central store. 0 lost, 0 counted
twice, equal stock per column, for every unit, or it fails.

The units run as real unit code (nalox/fleetrun.py) spread over several processes (each process is one
interpreter, so one core at most); a real mosquitto with the project's config and the real
`nalox inventory serve` run as their own processes. Progress is one JSON line per period on stderr; the
verdict table is printed on stdout at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import structlog

from nalox.central_api import CentralApi
from nalox.configs import UnitSpec
from nalox.errors import NaloxError
from nalox.fleetrun import Profile, chunks, profile_dict, raise_fd_limit, soak_unit_id
from nalox.ports import free_port
from nalox.stack import Stack
from nalox.supervision import LIVE, Proc, run_supervised

log = structlog.get_logger("nalox.fleetsoak")
PG = "postgresql://postgres@127.0.0.1/test"
# Units per interpreter: 200 (1,400 threads) starved a unit's MQTT thread of the GIL past its 10 s CONNACK
# timeout while the process started the next units; many small processes leave fairness to the kernel.
UNITS_PER_PROCESS = 25
STARTING_AT_ONCE = 2  # processes starting their units at the same time


@dataclass
class Options:
    units: int = 1000
    duration_s: float = 600.0
    compression: float = 1.0
    processes: int = 0  # 0: units / UNITS_PER_PROCESS, rounded up
    sites: int = 40
    db: str = PG
    schema: str = "nalox_fleetsoak"
    every_s: float = 30.0
    settle_s: float = 300.0
    seed: int = 1
    workdir: Path | None = None
    summary: Path | None = None

    @property
    def process_count(self) -> int:
        return self.processes or max(1, math.ceil(self.units / UNITS_PER_PROCESS))


@dataclass
class Worker:
    """One process of units and the JSON lines it has said."""

    proc: Proc
    first: int
    units: int
    lines: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    accounts: list[dict[str, Any]] = field(default_factory=list)
    reader: threading.Thread | None = None

    def stop(self) -> None:
        self.send("stop")
        self.proc.stop(timeout=60)
        if self.reader is not None:
            self.reader.join(timeout=10)

    def send(self, line: str) -> None:
        popen = self.proc.popen
        assert popen is not None and popen.stdin is not None
        try:
            popen.stdin.write((line + "\n").encode())
            popen.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def expect(self, kind: str, timeout: float) -> dict[str, Any]:
        """The next line of `kind` (lines of other kinds before it are dropped, accounts kept)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NaloxError(f"expected `{kind}` from fleet process {self.first} within {timeout:g} s; "
                                 f"log: {self.proc.log_tail()}")
            try:
                line = self.lines.get(timeout=min(left, 1.0))
            except queue.Empty:
                self.proc.check_alive()
                continue
            if line["kind"] == "account":
                self.accounts.append(line)
            if line["kind"] == kind:
                return line


def start_worker(opts: Options, workdir: Path, mqtt_port: int, first: int, units: int) -> Worker:
    argv = [sys.executable, "-m", "nalox.fleetrun", "--workdir", str(workdir / "units"),
            "--mqtt-port", str(mqtt_port), "--first", str(first), "--units", str(units),
            "--sites", str(opts.sites), "--duration", str(opts.duration_s),
            "--compression", str(opts.compression), "--every", str(opts.every_s),
            "--settle", str(opts.settle_s), "--seed", str(opts.seed)]
    proc = Proc(f"fleet-{first}", argv, workdir / f"fleet-{first}.log")
    with open(proc.log_path, "ab") as err:
        proc.popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                      env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)
    LIVE.add(proc)
    worker = Worker(proc, first, units)
    worker.reader = threading.Thread(target=_read_lines, args=(worker,), name=f"fleet-{first}-lines",
                                     daemon=True)
    worker.reader.start()
    return worker


def _read_lines(worker: Worker) -> None:
    popen = worker.proc.popen
    assert popen is not None and popen.stdout is not None
    for raw in popen.stdout:
        try:
            worker.lines.put(json.loads(raw))
        except ValueError:
            log.warning("fleet_process_said", process=worker.first, line=raw[:200].decode(errors="replace"))


def fresh_schema(db: str, schema: str) -> str:
    """Drop and create `schema` in `db`; the URL that puts the service's tables in it."""
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in db else "?"
    return f"{db}{sep}options={quote(f'-csearch_path={schema}')}"


# ---------------------------------------------------------------------- counting


@dataclass
class Verdict:
    units: int = 0
    presses: int = 0
    physical: int = 0
    ledger: int = 0
    central: int = 0
    events_ledger: int = 0
    events_central: int = 0
    lost_events: int = 0  # in a unit's ledger, not in the central store
    doubled_events: int = 0  # held twice by the central store
    extra_events: int = 0  # in the central store, not in the unit's ledger
    double_drops: int = 0  # kits the board dropped twice for one command
    units_differing: list[str] = field(default_factory=list)  # any of the three counts or stocks differ
    outbox_left: int = 0

    @property
    def passed(self) -> bool:
        return (self.units > 0 and not self.units_differing and self.lost_events == self.doubled_events
                == self.extra_events == self.double_drops == self.outbox_left == 0)

    def add(self, account: dict[str, Any], central_ids: list[str], central_dispensed: int,
            central_stock: dict[str, int]) -> None:
        self.units += 1
        self.presses += account["presses"]
        self.physical += account["sim_dropped"]
        self.ledger += account["ledger_dispensed"]
        self.central += central_dispensed
        ledger_ids = set(account["ledger_event_ids"])
        held = set(central_ids)
        self.events_ledger += len(ledger_ids)
        self.events_central += len(held)
        self.lost_events += len(ledger_ids - held)
        self.extra_events += len(held - ledger_ids)
        self.doubled_events += len(central_ids) - len(held)
        self.double_drops += account["double_drops"]
        self.outbox_left += account["outbox"]
        counts_equal = account["sim_dropped"] == account["ledger_dispensed"] == central_dispensed
        stocks_equal = account["sim_stock"] == account["ledger_stock"] == central_stock
        if not (counts_equal and stocks_equal):
            self.units_differing.append(account["unit"])

    def table(self) -> str:
        rows = [
            ("units", f"{self.units:,}"),
            ("presses", f"{self.presses:,}"),
            ("kits dropped (simulated boards)", f"{self.physical:,}"),
            ("kits in the unit ledgers", f"{self.ledger:,}"),
            ("kits in the central store", f"{self.central:,}"),
            ("events in the ledgers / in central", f"{self.events_ledger:,} / {self.events_central:,}"),
            ("events lost (ledger, not central)", f"{self.lost_events:,}"),
            ("events counted twice by central", f"{self.doubled_events:,}"),
            ("events in central, not in a ledger", f"{self.extra_events:,}"),
            ("kits dropped twice for one press", f"{self.double_drops:,}"),
            ("events left in outboxes", f"{self.outbox_left:,}"),
            ("units whose three counts or stock differ", f"{len(self.units_differing):,}"
             + (f" ({', '.join(self.units_differing[:5])}...)" if self.units_differing else "")),
            ("verdict", "PASS" if self.passed else "FAIL"),
        ]
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)


def count_central(central: CentralApi, accounts: Iterable[dict[str, Any]], threads: int = 4) -> Verdict:
    """Each unit's account beside what the central store's API holds for it (a request that times out
    on a busy machine is asked again, up to three times)."""
    def one(account: dict[str, Any]) -> tuple[dict[str, Any], list[str], int, dict[str, int]]:
        uid = account["unit"]
        for attempt in range(3):
            try:
                return account, central.event_ids(uid), central.dispense_count(uid), central.stock(uid)
            except TimeoutError:
                log.warning("central_api_slow", unit=uid, attempt=attempt + 1)
        return account, central.event_ids(uid), central.dispense_count(uid), central.stock(uid)

    verdict = Verdict()
    with ThreadPoolExecutor(threads) as pool:
        for result in pool.map(one, accounts):
            verdict.add(*result)
    return verdict


# ---------------------------------------------------------------------- the run


def combine(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """One progress line of every process as one fleet line."""
    def total(key: str) -> int:
        return sum(int(x.get(key) or 0) for x in lines)

    def worst(key: str) -> float | None:
        values = [x[key] for x in lines if x.get(key) is not None]
        return max(values) if values else None

    return {
        "presses": total("presses"), "kits": total("kits"), "before_video": total("before_video"),
        "busy": total("busy"),
        "unserved": total("unserved"), "not_dropped": total("not_dropped"),
        "overhead_p50_s_worst": worst("overhead_p50_s"), "overhead_p99_s_worst": worst("overhead_p99_s"),
        "outbox": total("outbox"), "outbox_max": worst("outbox_max"), "pending": total("pending"),
        "cores": round(sum(float(x.get("cores") or 0) for x in lines), 3),
        "timer_late_s_worst": worst("late_s"),
    }


def run(opts: Options) -> tuple[Verdict, dict[str, Any]]:
    raise_fd_limit()  # mosquitto inherits it: a connection per unit
    workdir = opts.workdir or Path(tempfile.mkdtemp(prefix="nalox-fleetsoak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    db = fresh_schema(opts.db, opts.schema)
    stack = Stack(workdir, UnitSpec("unused"), free_port(), free_port(), seed=opts.seed, db=db)
    workers: list[Worker] = []
    figures: dict[str, Any] = {"profile": profile_dict(Profile(compression=opts.compression)),
                               "units": opts.units, "processes": opts.process_count,
                               "duration_s": opts.duration_s, "schema": opts.schema, "workdir": str(workdir)}
    try:
        stack.start_broker()
        sites = [UnitSpec(soak_unit_id(i), site=f"Site {i % opts.sites + 1:02d}") for i in range(opts.units)]
        stack.start_inventory(sites)
        assert stack.central is not None
        t0 = time.monotonic()
        starting: list[Worker] = []
        for first, count in [*chunks(opts.units, opts.process_count), (-1, 0)]:
            if len(starting) == STARTING_AT_ONCE or (first < 0 and starting):
                for w in starting:  # a few processes start their units at a time
                    ready = w.expect("ready", timeout=120 + 3 * w.units)
                    log.info("fleet_process_ready", first=w.first, units=w.units, start_s=ready["start_s"],
                             load_1m=round(os.getloadavg()[0], 1))
                starting = []
            if first >= 0:
                workers.append(start_worker(opts, workdir, stack.mqtt_port, first, count))
                starting.append(workers[-1])
        figures["start_s"] = round(time.monotonic() - t0, 1)
        log.info("fleet_ready", units=opts.units, processes=len(workers), start_s=figures["start_s"],
                    load=os.getloadavg())
        for w in workers:
            w.send("go")
        periods: list[dict[str, Any]] = []
        started = time.monotonic()
        last: dict[int, dict[str, Any]] = {}
        while len(last) < len(workers) or any(x["phase"] != "end" for x in last.values()):
            for w in workers:
                if last.get(w.first, {}).get("phase") != "end":
                    last[w.first] = w.expect("progress", timeout=opts.every_s * 3 + 600)
            fleet = combine(list(last.values()))
            fleet["elapsed_s"] = round(time.monotonic() - started)
            fleet["load_1m"] = round(os.getloadavg()[0], 1)
            periods.append(fleet)
            log.info("fleet_progress", **fleet)
            stack.check_alive()
        settled = [w.expect("settled", timeout=opts.settle_s + 120) for w in workers]
        settle = combine(settled)
        figures["settle_before_video"] = settle["before_video"]
        log.info("fleet_settled", **settle, ok=all(x["ok"] for x in settled))
        for w in workers:
            w.expect("done", timeout=120)
        figures["settled"] = all(x["ok"] for x in settled)
        figures["periods"] = periods
        t1 = time.monotonic()
        api = CentralApi(stack.http_port, stack.central.token, timeout=60)  # the service is busy ingesting
        verdict = count_central(api, (a for w in workers for a in w.accounts))
        figures["count_s"] = round(time.monotonic() - t1, 1)
        return verdict, figures
    finally:
        for w in workers:
            w.stop()
        stack.close()


def summarise(verdict: Verdict, figures: dict[str, Any]) -> dict[str, Any]:
    periods = figures.get("periods", [])
    run_periods = periods
    def worst(key: str) -> Any:
        values = [p[key] for p in run_periods if p.get(key) is not None]
        return max(values) if values else None
    return {
        **{k: v for k, v in figures.items() if k != "periods"},
        "verdict": "PASS" if verdict.passed else "FAIL",
        "counts": {k: v for k, v in verdict.__dict__.items() if k != "units_differing"},
        "units_differing": verdict.units_differing,
        "busy_presses": sum(p["busy"] for p in periods),
        "kits_before_video": sum(p["before_video"] for p in periods) + figures.get("settle_before_video", 0),
        "unserved_presses": sum(p["unserved"] for p in periods),
        "overhead_p99_s_worst": worst("overhead_p99_s_worst"),
        "cores_mean": round(sum(p["cores"] for p in run_periods) / max(1, len(run_periods)), 3),
        "load_1m_max": worst("load_1m"),
        "outbox_max": worst("outbox"),
    }


def parse_args(argv: list[str]) -> Options:
    p = argparse.ArgumentParser(prog="python -m nalox.fleetsoak", description=__doc__.splitlines()[0])
    p.add_argument("--units", type=int, default=1000)
    p.add_argument("--duration", type=float, default=600.0, help="seconds of pressing (default 600)")
    p.add_argument("--compression", type=float, default=1.0,
                   help="real life runs this many times faster (1: a press per unit every 5 minutes)")
    p.add_argument("--processes", type=int, default=0,
                   help=f"unit processes (default: one per {UNITS_PER_PROCESS} units)")
    p.add_argument("--sites", type=int, default=40)
    p.add_argument("--db", default=PG, help="PostgreSQL URL of the central store")
    p.add_argument("--schema", default="nalox_fleetsoak", help="dropped and made afresh")
    p.add_argument("--every", type=float, default=30.0, help="seconds between progress lines")
    p.add_argument("--settle", type=float, default=300.0, help="longest wait for every outbox to drain")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", type=Path)
    p.add_argument("--summary", type=Path, help="also write the figures as JSON here")
    a = p.parse_args(argv)
    return Options(a.units, a.duration, a.compression, a.processes, a.sites, a.db, a.schema, a.every,
                   a.settle, a.seed, a.workdir, a.summary)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)

    def body() -> int:
        verdict, figures = run(opts)
        summary = summarise(verdict, figures)
        log.info("fleet_soak_done", **{k: v for k, v in summary.items() if k != "units_differing"})
        print(verdict.table(), flush=True)
        if opts.summary:
            opts.summary.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return 0 if verdict.passed else 1

    return run_supervised("fleet soak", body, failure=2)


if __name__ == "__main__":
    sys.exit(main())
