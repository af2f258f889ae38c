"""Ingest throughput through a real mosquitto: events/s into SQLite and PostgreSQL.

The events are queued by the broker for the service's persistent session while it is stopped,
then the service starts and the time to commit them all is measured (so the figure is the ingest,
not the publisher). Run: .venv/bin/python -m tests.inventory.bench_ingest [--events N] [--units U]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from inventory.clock import RealClock
from inventory.service import Service
from inventory.store import open_store
from nalox.broker import Broker
from tests.inventory.conftest import PG_URL, drop_schema, make_config, pg_schema
from tests.inventory.gen import UnitStream
from tests.inventory.mqttutil import UnitSide
from tests.waiting import wait_for


def events(units: int, per_unit: int) -> list[tuple[str, bytes]]:
    msgs: list[tuple[str, bytes]] = []
    for i in range(1, units + 1):
        s = UnitStream(f"unit-{i:03d}", "Bench site", columns=4)
        for c in range(1, 5):
            s.restock(0, c, 100_000)
        while len(s.events) < per_unit:
            s.vend(len(s.events), 1 + len(s.events) % 4)
        msgs += s.messages()
    return msgs


def measure(
    db: str, schema: str | None, msgs: list[tuple[str, bytes]], units: int, workers: int, workdir: Path
) -> dict[str, float | int | str]:
    broker = Broker(workdir=workdir / "broker")
    broker.workdir.mkdir(parents=True)
    with broker:
        cfg = make_config(
            units,
            mqtt={"port": broker.port, "client_id": "bench", "workers": workers},
            store={"db": db},
            ingest={"batch_size": 500},
        )
        svc = Service(cfg, RealClock(), schema=schema, http=False, alerts=False).start()
        assert svc.wait_connected(10)
        svc.stop()  # the session (and its subscriptions) stays on the broker
        pub = UnitSide(broker.port, "bench-publisher")
        pub.publish_all(msgs, window=1000)
        pub.close()
        t0 = time.monotonic()
        svc = Service(cfg, RealClock(), schema=schema, http=False, alerts=False).start()
        store = open_store(db, schema=schema)
        try:
            wait_for(lambda: store.count_events() == len(msgs), 600, f"{len(msgs)} events")
            elapsed = time.monotonic() - t0
        finally:
            svc.stop()
            store.close()
    return {
        "backend": db.split(":")[0] if "://" in db else "sqlite",
        "workers": workers,
        "events": len(msgs),
        "seconds": round(elapsed, 2),
        "events_per_s": round(len(msgs) / elapsed),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--units", type=int, default=50)
    a = ap.parse_args()
    msgs = events(a.units, a.events // a.units)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(measure(str(Path(tmp) / "bench.db"), None, msgs, a.units, 1, Path(tmp) / "s1"))
        for workers in (1, 4):
            schema = pg_schema()
            try:
                results.append(measure(PG_URL, schema, msgs, a.units, workers, Path(tmp) / f"p{workers}"))
            finally:
                drop_schema(schema)
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
