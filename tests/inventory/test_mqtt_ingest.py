"""Ingest through a real mosquitto: persistent session, acks, replay, shared subscription across
two real ingest processes; exact totals on both backends."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from inventory.clock import RealClock
from inventory.config import CentralConfig
from inventory.service import Service
from inventory.store import Store, open_store
from nalox.broker import Broker
from schemas.models import Ack, ReplayCommand, topic
from tests.inventory.conftest import make_config
from tests.inventory.gen import UnitStream
from tests.inventory.mqttutil import UnitSide
from tests.inventory.test_ingest import bad_messages
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def service_config(db: str, port: int, units: int = 3, **extra: dict[str, object]) -> CentralConfig:
    cfg = make_config(
        units, mqtt={"port": port, "client_id": "central-test"}, store={"db": db}, server={"port": 0}, **extra
    )
    return cfg


@pytest.fixture
def service(db_url: tuple[str, str | None], broker: Broker) -> Iterator[Service]:
    cfg = service_config(db_url[0], broker.port, ingest={"gap_timeout_s": 0.5})
    svc = Service(cfg, RealClock(), schema=db_url[1], http=False, alerts=False).start()
    assert svc.wait_connected(10)
    try:
        yield svc
    finally:
        svc.stop()


def streams(n: int, vends: int, seed: int = 1) -> list[UnitStream]:
    out = []
    for i in range(1, n + 1):
        s = UnitStream(f"unit-{i:03d}", f"Site {'AB'[i % 2]}")
        s.random_day(random.Random(seed + i), vends=vends)
        out.append(s)
    return out


def test_events_through_the_broker_are_stored_once_and_acked(service: Service, broker: Broker) -> None:
    unit = UnitSide(broker.port, "unit-side", subscribe=("nalox/v1/+/ack",))
    try:
        ss = streams(3, 40)
        msgs = [m for s in ss for m in s.messages()]
        rng = random.Random(5)
        delivered = msgs + rng.sample(msgs, 60)
        rng.shuffle(delivered)
        unit.publish_all(delivered)
        store = service.store
        assert store is not None
        wait_for(lambda: store.count_events() == len(msgs), 30, f"{len(msgs)} events stored")
        for s in ss:
            wait_for(
                lambda s=s: any(
                    Ack.model_validate_json(m.payload).acked_seq == s.seq  # type: ignore[misc]
                    for m in unit.messages(topic(s.unit, "ack"))
                ),
                10,
                f"ack {s.seq} for {s.unit}",
            )
            row = store.unit(s.unit)
            assert row is not None and row.stock == s.stock and row.acked_seq == s.seq
        wait_for(lambda: store.counters().get("events_duplicate", 0) == 60, 10, "60 duplicates counted")
    finally:
        unit.close()


def test_bad_input_through_the_broker_is_counted_and_ingest_goes_on(service: Service, broker: Broker) -> None:
    unit = UnitSide(broker.port, "unit-side")
    try:
        bad = bad_messages()
        s = streams(1, 5)[0]
        unit.publish_all(list(bad.values()) + s.messages())
        store = service.store
        assert store is not None
        wait_for(lambda: store.count_events() == len(s.events), 20, "the good events after the bad ones")
        wait_for(lambda: sum(r["count"] for r in store.rejects().values()) == len(bad), 10, "rejects counted")
        assert set(store.rejects()) == set(bad)
    finally:
        unit.close()


def test_a_lost_event_is_asked_for_and_replayed(service: Service, broker: Broker) -> None:
    unit = UnitSide(broker.port, "unit-001", subscribe=("nalox/v1/unit-001/cmd/replay",))
    try:
        s = streams(1, 10)[0]
        msgs = s.messages()
        unit.publish_all(msgs[:5] + msgs[6:])  # seq 6 lost on the way
        wait_for(lambda: len(unit.messages(topic(s.unit, "cmd", "replay"))) > 0, 20, "a replay command")
        cmd_msg = unit.messages(topic(s.unit, "cmd", "replay"))[0]
        cmd = ReplayCommand.model_validate_json(cmd_msg.payload)
        assert cmd.from_seq == 6
        response_topic = getattr(cmd_msg.properties, "ResponseTopic", "")
        assert response_topic == "nalox/v1/unit-001/cmd_response/central-test"
        unit.publish_all(msgs[cmd.from_seq - 1 :])  # the unit replays from there
        store = service.store
        assert store is not None
        wait_for(lambda: (row := store.unit(s.unit)) is not None and row.acked_seq == s.seq, 20, "gap filled")
        assert store.count_events() == len(msgs)
    finally:
        unit.close()


def ingest_process(
    cfg_path: Path, db: str, schema: str | None, client_id: str, out: Path
) -> subprocess.Popen[bytes]:
    if schema:  # libpq's own way to pick a schema: options=-csearch_path=...
        db = f"{db}?options=-csearch_path%3D{schema}"
    with out.open("wb") as f:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "inventory.cli",
                "serve",
                "--config",
                str(cfg_path),
                "--db",
                db,
                "--no-http",
                "--shared",
                "--client-id",
                client_id,
            ],
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
        )


def test_two_ingest_processes_on_a_shared_subscription_count_exactly(
    db_url: tuple[str, str | None], broker: Broker, tmp_path: Path
) -> None:
    db, schema = db_url
    pre = open_store(db, schema=schema)  # migrate once up front; both processes then just connect
    cfg_path = tmp_path / "central.toml"
    units = "".join(f'[[units]]\nid = "unit-{i:03d}"\nsite = "Site {"AB"[i % 2]}"\n' for i in range(1, 5))
    cfg_path.write_text(f"[mqtt]\nport = {broker.port}\n[ingest]\nbatch_size = 50\n{units}")
    logs = [tmp_path / f"ingest-{i}.log" for i in range(2)]
    procs = [ingest_process(cfg_path, db, schema, f"central-{i}", logs[i]) for i in range(2)]
    unit = UnitSide(broker.port, "unit-side")
    try:
        wait_for(
            lambda: all("mqtt_subscribed" in p.read_text() for p in logs),
            120,  # two Python start-ups: over 20 s at the load averages seen while the whole suite runs
            "both ingest processes subscribed",
        )
        ss = streams(4, 150, seed=11)
        msgs = [m for s in ss for m in s.messages()]
        dup = msgs + random.Random(3).sample(msgs, 200)
        random.Random(4).shuffle(dup)
        unit.publish_all(dup)
        wait_for(lambda: pre.count_events() == len(msgs), 60, f"{len(msgs)} events")
        _check_exact(pre, ss)
        per_process = _stop_and_count(procs, logs)
        assert all(n > 0 for n in per_process), f"both processes must have taken events: {per_process}"
        assert pre.count_events() == len(msgs)
    finally:
        unit.close()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        pre.close()


def _check_exact(store: Store, ss: list[UnitStream]) -> None:
    for s in ss:
        row = store.unit(s.unit)
        assert row is not None
        assert row.stock == s.stock
        assert store.count_events("dispense", s.unit) == sum(s.kits.values()) + sum(s.tests.values())
        wait_for(
            lambda s=s: (r := store.unit(s.unit)) is not None and r.acked_seq == s.seq,  # type: ignore[misc]
            10,
            f"acked seq of {s.unit}",
        )


def _stop_and_count(procs: list[subprocess.Popen[bytes]], logs: list[Path]) -> list[int]:
    """Stop both processes; how many new events each one inserted, from its JSON log lines."""
    counts = []
    for p, path in zip(procs, logs, strict=True):
        p.terminate()
        assert p.wait(30) == 0, path.read_text()[-2000:]
        lines = [json.loads(x) for x in path.read_text().splitlines() if x.startswith("{")]
        counts.append(sum(x.get("inserted", 0) for x in lines if x.get("event") == "ingest_stopped"))
    return counts


def test_ingest_survives_postgresql_dropping_its_connections(broker: Broker, tmp_path: Path) -> None:
    """A real fault on demand: the server terminates the service's sessions; nothing is lost."""
    import psycopg

    from inventory.store import PostgresStore
    from tests.inventory.conftest import PG_URL, drop_schema, pg_schema

    schema = pg_schema()
    cfg = service_config(PG_URL, broker.port)
    svc = Service(cfg, RealClock(), schema=schema, http=False, alerts=False).start()
    unit = UnitSide(broker.port, "unit-side")
    try:
        assert svc.wait_connected(10)
        ss = streams(2, 30)
        msgs = [m for s in ss for m in s.messages()]
        unit.publish_all(msgs[:40])
        store = svc.store
        assert isinstance(store, PostgresStore)
        wait_for(lambda: store.count_events() == 40, 20, "the first 40 events")
        pids = [s.backend_pid() for s in svc.stores if isinstance(s, PostgresStore)]
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            for pid in pids:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        unit.publish_all(msgs[40:])
        wait_for(lambda: _count_or_none(store) == len(msgs), 30, "every event after the reconnect")
        _check_exact(store, ss)
    finally:
        unit.close()
        svc.stop()
        drop_schema(schema)


def _count_or_none(store: Store) -> int | None:
    try:
        return store.count_events()
    except Exception:  # this connection was terminated too: the next call reconnects
        return None


def test_several_workers_in_one_process_count_exactly(db_url: tuple[str, str | None], broker: Broker) -> None:
    cfg = make_config(
        4,
        mqtt={"port": broker.port, "client_id": "central-workers", "workers": 3},
        store={"db": db_url[0]},
        ingest={"batch_size": 20},
    )
    svc = Service(cfg, RealClock(), schema=db_url[1], http=False, alerts=False).start()
    unit = UnitSide(broker.port, "unit-side")
    try:
        assert svc.wait_connected(10)
        assert all(w.shared for w in svc.workers) and len(svc.workers) == 3
        ss = streams(4, 60, seed=21)
        msgs = [m for s in ss for m in s.messages()]
        delivered = msgs + random.Random(1).sample(msgs, 100)
        random.Random(2).shuffle(delivered)
        unit.publish_all(delivered)
        store = svc.store
        assert store is not None
        wait_for(lambda: store.count_events() == len(msgs), 60, f"{len(msgs)} events")
        _check_exact(store, ss)
        wait_for(lambda: store.counters().get("events_duplicate", 0) == 100, 10, "100 duplicates counted")
    finally:
        unit.close()
        svc.stop()
