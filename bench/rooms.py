"""The nalox side of each benchmark: the rooms measured the way they run (real processes, real broker,
real pty), each figure comparable to one baseline in bench/baselines.py."""

from __future__ import annotations

import compileall
import contextlib
import json
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psutil

from bench import baselines, plain_install
from nalox.central_api import CentralApi
from nalox.configs import UnitSpec, central_toml
from nalox.notify import NotifySocket
from nalox.stack import Stack
from nalox.supervision import NALOX, Proc
from nalox.waiting import wait_until
from schemas.models import DispenseEvent, topic

PG_ADMIN = "postgresql://postgres@127.0.0.1/test"


# ------------------------------------------------------------------ central ingest


class AckWatch:
    """Follows `nalox/v1/<unit>/ack` as the central service publishes it."""

    def __init__(self, port: int, unit: str) -> None:
        self.acked = 0
        self.cond = threading.Condition()
        self.client = baselines.connect(port, f"bench-ack-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        self.client.subscribe(topic(unit, "ack"), qos=1)

    def _on_message(self, c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        seq = int(json.loads(msg.payload)["acked_seq"])
        with self.cond:
            self.acked = max(self.acked, seq)
            self.cond.notify_all()

    def wait(self, seq: int, timeout: float) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: self.acked >= seq, timeout):
                raise baselines.BenchError(
                    f"expected central ack of seq {seq} within {timeout:g} s, got ack {self.acked}"
                )

    def close(self) -> None:
        baselines.close(self.client)


def bench_dispense(unit: str, seq: int, now: datetime, product: str) -> DispenseEvent:
    """The benchmarks' dispense event number seq: columns in turn, stock counting down from 100,000."""
    return DispenseEvent(
        event_id=uuid.uuid4().hex,
        seq=seq,
        ts=now,
        unit=unit,
        column=1 + seq % 6,
        product=product,
        doses=2,
        command_id=seq,
        via="video",
        stock_after=max(0, 100_000 - seq),
    )


def dispense_payloads(unit: str, first: int, last: int) -> Iterator[tuple[str, bytes]]:
    now = datetime.now(UTC)
    for seq in range(first, last + 1):
        ev = bench_dispense(unit, seq, now, "naloxone-4mg-nasal")
        yield topic(unit, "event", "dispense"), ev.model_dump_json().encode()


def central_ingest(port: int, count: int, db: str, workers: int) -> float:
    """Events/s the inventory service commits (acks) while a bounded-window publisher sends flat out."""
    work = Path(tempfile.mkdtemp(prefix="nalox-bench-ingest-"))
    unit = f"bench-{db[:2]}-{workers}"
    url, drop = _database(db, work)
    try:
        rate = _ingest_run(port, count, work, unit, url, workers)
    except baselines.BenchError as e:
        raise baselines.BenchError(
            f"{e}; {_store_census(url, unit)}; kept {url} and {work} for a look"
        ) from e
    drop()
    return rate


def _store_census(url: str, unit: str) -> str:
    """What the central store holds for the unit: count, highest seq, first missing seq."""
    from inventory.store import open_store

    store = open_store(url)
    try:
        seqs = sorted(e.seq for e in store.events(unit, limit=1_000_000))
    finally:
        store.close()
    missing = next((i for i, s in enumerate(seqs, start=1) if s != i), None)
    top = seqs[-1] if seqs else 0
    return f"store holds {len(seqs)} events of {unit}, highest seq {top}, first missing {missing}"


def _ingest_run(port: int, count: int, work: Path, unit: str, url: str, workers: int) -> float:
    http_port = _free_port()
    text = central_toml(work, http_port, port, [UnitSpec(unit)], db=url)
    text = text.replace(
        'client_id = "nalox-inventory-demo"',
        # a share group of its own: mosquitto hands a share of the stream to every member of a group,
        # offline persistent sessions of earlier runs included, and those never ack
        f'client_id = "bench-{unit}"\nworkers = {workers}\nshared = {str(workers > 1).lower()}\n'
        f'shared_group = "{unit.replace("-", "_")}"',
    )
    (work / "central.toml").write_text(text)
    argv = [*NALOX, "inventory", "serve", "--config", str(work / "central.toml")]
    acks = AckWatch(port, unit)
    proc = Proc("inventory", argv, work / "inventory.log").start()
    try:
        _until_acked(http_port, port, unit, acks)
        start = time.perf_counter()
        baselines.publish_window(port, dispense_payloads(unit, 2, count + 1), count)
        acks.wait(count + 1, timeout=max(60.0, count / 200))
        return count / (time.perf_counter() - start)
    finally:
        proc.stop()
        acks.close()


def _until_acked(http_port: int, port: int, unit: str, acks: AckWatch) -> None:
    """The service is up and subscribed: one event goes in and its ack comes out."""
    central = CentralApi(http_port)
    wait_until("the inventory service's /healthz", central.healthy, 60)
    deadline = time.monotonic() + 30
    while acks.acked < 1 and time.monotonic() < deadline:
        baselines.publish_window(port, dispense_payloads(unit, 1, 1), 1)
        try:
            acks.wait(1, timeout=2)
        except baselines.BenchError:
            continue
    acks.wait(1, timeout=1)


def _database(kind: str, work: Path) -> tuple[str, Any]:
    if kind == "sqlite":
        return str(work / "central.sqlite"), lambda: None
    import psycopg

    name = f"nalox_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")

    def drop() -> None:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name, drop


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ unit footprint


ROOMS = ("nalox", "controller", "schemas", "firmware_py", "simulator", "inventory")


def compile_rooms() -> None:
    """Byte-compile the rooms as `pip install` does (a session may run with PYTHONDONTWRITEBYTECODE=1,
    which would make every start compile the daemon's sources again, a cost no installed unit has)."""
    root = Path(__file__).resolve().parents[1]
    for room in ROOMS:
        compileall.compile_dir(root / room, quiet=1)


def footprint(port: int, idle_seconds: float) -> dict[str, Any]:
    """RSS, idle CPU share and start-to-ready of `nalox unit run` against `nalox sim board`, run as a
    plain install runs it; then the RSS and start-to-ready of the same daemon in this development venv
    (whose dev-only packages structlog imports when present)."""
    compile_rooms()
    work = Path(tempfile.mkdtemp(prefix="nalox-bench-unit-"))
    stack = Stack(work, UnitSpec("bench-unit-1"), port, 0)
    stack.unit_dir.mkdir(parents=True)
    stack.start_board()
    try:
        stack.write_unit_config(port)
        # the daemon as a unit runs it: a plain `pip install` (runtime dependencies only)
        with _unit(stack, work, plain_install.launcher()) as (proc, ready, ready_cpu):
            time.sleep(2)  # settle after start before the idle window (a measurement, not synchronisation)
            cpu0, own0, t0 = _cpu(proc), _own_cpu(proc), time.perf_counter()
            time.sleep(idle_seconds)
            took = time.perf_counter() - t0
            cpu = (_cpu(proc) - cpu0) / took * 100
            own = (_own_cpu(proc) - own0) / took * 100
            rss = proc.memory_info().rss / 1e6
            tree = rss + sum(_rss(c) for c in proc.children(recursive=True)) / 1e6
        with _unit(stack, work, NALOX) as (dev_proc, dev_ready, dev_ready_cpu):
            time.sleep(2)
            dev_rss = dev_proc.memory_info().rss / 1e6
        bare = baselines.bare_daemon(port, plain_install.launcher())
        return {
            "rss_mb": round(rss, 1),
            "baseline_bare_libraries_rss_mb": round(bare.rss_mb, 1),
            "ratio_rss": round(rss / bare.rss_mb, 3),
            "baseline_bare_libraries_start_to_ready_s": round(bare.start_to_ready_s, 2),
            "baseline_bare_libraries_cpu_to_ready_s": round(bare.cpu_to_ready_s, 2),
            "rss_with_children_mb": round(tree, 1),
            "idle_cpu_percent": round(cpu, 2),
            "idle_cpu_percent_daemon": round(own, 2),
            "idle_window_s": idle_seconds,
            "start_to_ready_s": round(ready, 2),
            "cpu_to_ready_s": round(ready_cpu, 2),
            "launched_as": "python -m bench.plain_install unit run (runtime dependencies, byte-compiled)",
            "dev_venv_rss_mb": round(dev_rss, 1),
            "dev_venv_start_to_ready_s": round(dev_ready, 2),
            "dev_venv_cpu_to_ready_s": round(dev_ready_cpu, 2),
            "targets": {"rss_mb": 40, "idle_cpu_percent_daemon": 0.3, "start_to_ready_s": 0.8},
            "met": rss <= 40 and own <= 0.3 and ready <= 0.8,
        }
    finally:
        stack.close()


@contextlib.contextmanager
def _unit(stack: Stack, work: Path, launcher: list[str]) -> Iterator[tuple[psutil.Process, float, float]]:
    """`nalox unit run` started by `launcher`: its process, seconds from spawn to READY=1 and the CPU
    seconds it had used by then (on a loaded machine the wall time is mostly waiting for a core)."""
    notify = NotifySocket(work / "notify.sock")
    try:
        start = time.perf_counter()
        stack.unit = Proc(
            "unit",
            [*launcher, "unit", "run", "--config", str(stack.unit_dir / "unit.toml")],
            work / "unit.log",
            env={"NOTIFY_SOCKET": str(notify.path), "DISPLAY": ""},
        ).start()
        ready = notify.wait_ready(30) - start
        proc = psutil.Process(stack.unit.pid)
        yield proc, ready, _own_cpu(proc)
    finally:
        notify.close()
        if stack.unit is not None:
            stack.unit.stop()
            stack.unit = None


def _own_cpu(proc: psutil.Process) -> float:
    """The daemon's own CPU seconds (not the player's: mpv is a child process)."""
    t = proc.cpu_times()
    return t.user + t.system


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    total = t.user + t.system
    for child in proc.children(recursive=True):
        try:
            ct = child.cpu_times()
            total += ct.user + ct.system
        except psutil.Error:
            pass
    return total


def _rss(proc: psutil.Process) -> int:
    try:
        return int(proc.memory_info().rss)
    except psutil.Error:
        return 0


# ------------------------------------------------------------------ serial link


def serial_link(pings: int, dispenses: int) -> dict[str, Any]:
    """Ping round trips and dispense commands/s from controller.serial.board_link over
    `nalox sim board`'s pty."""
    from controller.serial.board_link import SerialBoard

    work = Path(tempfile.mkdtemp(prefix="nalox-bench-serial-"))
    spin_ms = 1  # the simulator wants a spin time > 0
    spec = UnitSpec("bench-serial", columns=6, stock=min(100_000, dispenses // 6 + 10), spin_ms=spin_ms)
    stack = Stack(work, spec, 0, 0)
    stack.start_board()
    board = SerialBoard(str(stack.link))
    try:
        board.start(lambda event: None, timeout=30.0)  # a loaded machine starts the board slowly
        samples = [board.ping() for _ in range(pings)]
        start = time.perf_counter()
        for i in range(dispenses):
            outcome = board.dispense(10_000 + i, 1 + i % 6)
            if not outcome.dropped:
                raise baselines.BenchError(f"expected dispense {i} to drop, got {outcome.outcome}")
        rate = dispenses / (time.perf_counter() - start)
        return {"ping": baselines.summary_ms(samples), "dispenses_per_s": round(rate, 1), "spin_ms": spin_ms}
    finally:
        board.close()
        stack.close()


def noisy_ping(pings: int, noise: float) -> dict[str, Any]:
    """Ping round trips from controller.serial over `nalox sim board`'s pty with `noise` of the bytes
    corrupted (flipped, dropped or inserted) in both directions."""
    from controller.serial.board_link import SerialBoard

    work = Path(tempfile.mkdtemp(prefix="nalox-bench-noisy-"))
    stack = Stack(work, UnitSpec("bench-noisy", columns=2, stock=10, spin_ms=1), 0, 0)
    stack.start_board()
    board = SerialBoard(str(stack.link))
    try:
        board.start(lambda event: None, timeout=30.0)  # a loaded machine starts the board slowly
        stack.ctl("fault", f"noise={noise}")
        samples = [board.ping(timeout=5.0) for _ in range(pings)]
        out: dict[str, Any] = dict(baselines.summary_ms(samples))
        out["retransmissions"] = board.counters.as_dict().get("retransmissions")
        out["rto_ms"] = round(board.rto.timeout * 1000, 3)
        return out
    finally:
        board.close()
        stack.close()


# ------------------------------------------------------------------ vend overhead and outbox drain


def vend_overhead(port: int, count: int) -> dict[str, Any]:
    from bench import inproc

    return inproc.vend_overhead(port, count)


def outbox_drain(port: int, count: int) -> dict[str, Any]:
    from bench import inproc

    return inproc.outbox_drain(port, count)
