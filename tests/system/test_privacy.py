"""Privacy by construction, checked end to end: two real simulated units and the real central service
run a short session of kits, failed vends and an empty column through a real broker; then every MQTT
payload, every column of every central table and every log line is scanned for anything that could
identify a person (names, birth dates, booking numbers, phone numbers, e-mail, street addresses) and,
at central, for the exact time of any individual kit. Any hit fails the test."""

from __future__ import annotations

import io
import json
import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller import log as unit_log
from inventory.alerts import kit_driven
from inventory.clock import RealClock
from inventory.service import Service
from nalox.broker import Broker
from nalox.simunit import SimUnit
from tests.inventory.conftest import central_config, sim_spec, started_units
from tests.inventory.mqttutil import UnitSide
from tests.waiting import wait_for

PATTERNS = {
    "e-mail": re.compile(r"[\w.+-]+@[\w-]+\.[A-Za-z]{2,}"),
    "phone": re.compile(r"(?<![\w-])(\+?1[ .-]?)?\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?![\w-])"),
    "ssn": re.compile(r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])"),
    "booking or inmate number": re.compile(
        r"(?i)\b(booking|inmate|offender|docket|jail[ _-]?id|so[ _-]?number)\b"
    ),
    "birth date": re.compile(r"(?i)\b(dob|birth|born|date_of_birth|birthday)\b"),
    "street address": re.compile(
        r"\b\d{1,5}\s+[A-Z][a-z]+\s+(Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr)\b"
    ),
    "person field": re.compile(
        r'(?i)"(first_?name|last_?name|full_?name|surname|patient|person_?id|gender|race)"'
    ),
}
ISO = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?")


def personal(text: str) -> list[str]:
    return [f"{name}: {m.group(0)!r}" for name, rx in PATTERNS.items() for m in rx.finditer(text)]


def timestamps(text: str) -> list[datetime]:
    out = []
    for m in ISO.finditer(text):
        raw = m.group(0).replace(" ", "T").replace("Z", "+00:00")
        try:
            t = datetime.fromisoformat(raw)
        except ValueError:
            continue
        out.append(t if t.tzinfo else t.replace(tzinfo=UTC))
    return out


def kit_time_hits(text: str, kits: list[datetime]) -> list[str]:
    """Timestamps finer than a minute that fall within 3 s after a kit dropped: they time the kit."""
    hits = []
    for t in timestamps(text):
        if t.second == 0 and t.microsecond == 0:
            continue  # coarsened
        hits += [
            f"{t.isoformat()} (kit at {k.isoformat()})"
            for k in kits
            if timedelta(0) <= t - k <= timedelta(seconds=3)
        ]
    return hits


def test_the_scanner_finds_what_it_looks_for() -> None:
    sample = (
        '{"first_name": "Ann", "dob": "1990-01-02", "email": "ann@example.org", "phone": "555-867-5309", '
        '"addr": "12 Main Street", "booking": "BK-1"}'
    )
    found = {h.split(":")[0] for h in personal(sample)}
    assert found == {
        "e-mail",
        "phone",
        "booking or inmate number",
        "birth date",
        "street address",
        "person field",
    }
    kit = datetime(2026, 12, 1, 13, 5, 7, 250000, tzinfo=UTC)
    assert kit_time_hits('{"ts":"2026-12-01T13:05:07.300000Z"}', [kit])
    assert not kit_time_hits('{"ts":"2026-12-01T13:00:00.000000Z"}', [kit])
    assert (
        personal(
            '{"event_id":"5bfeb2c815bf4d33a1eef12074a57d87","seq":7,"site":"County Jail - Release Lobby"}'
        )
        == []
    )


@pytest.fixture
def units(broker: Broker, tmp_path: Path) -> Iterator[list[SimUnit]]:
    specs = (
        sim_spec(
            f"unit-00{i}",
            "County Jail - Release Lobby",
            columns=1,
            stock=3,
            par=1,
            telemetry_interval_s=3600,
        )
        for i in (1, 2)
    )
    with started_units(specs, broker.port, tmp_path) as out:
        yield out


def test_no_personal_data_in_any_payload_table_or_log_line(
    broker: Broker, tmp_path: Path, units: list[SimUnit]
) -> None:
    logs = io.StringIO()
    unit_log.configure("info", logs)  # the production level; central and units share structlog
    spy = UnitSide(broker.port, "privacy-spy", subscribe=("#",))
    db = tmp_path / "central.db"
    cfg = central_config(
        broker.port, db, "central-privacy", 0, enrollment={"from_state": True}, alerts={"interval_s": 0.2}
    )
    try:
        with Service(cfg, RealClock()) as central:
            assert central.wait_connected(10)
            for r in range(1, 5):  # 3 kits each, then a press on an empty column
                for u in units:
                    u.press()
                wait_for(lambda r=r: all(u.terminal() >= r for u in units), 30, f"press {r} ended everywhere")
            wait_for(lambda: all(u.ledger_dispensed() == 3 for u in units), 60, "three kits from each unit")
            wait_for(
                lambda: central.store is not None and central.store.count_events("dispense") == 6,
                60,
                "six kits at central",
            )
            wait_for(lambda: all(u.daemon.ledger.depth() == 0 for u in units), 60, "every event acknowledged")
        kits = [e.ts for u in units for e in u.daemon.ledger.events(event_type="dispense")]
        assert len(kits) == 6
    finally:
        spy.close()

    problems: list[str] = []
    with spy._lock:
        messages = list(spy.received)
    assert len(messages) > 30, "the spy saw the session"
    for m in messages:
        text = m.payload.decode("utf-8", "replace")
        problems += [f"MQTT {m.topic}: {p}" for p in personal(text)]
    conn = sqlite3.connect(db)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    cells = 0
    for table in tables:
        for row in conn.execute(f'SELECT * FROM "{table}"'):
            for value in row:
                if value is None:
                    continue
                cells += 1
                text = str(value)
                problems += [f"DB {table}: {p}" for p in personal(text)]
                problems += [f"DB {table}: exact kit time {h}" for h in kit_time_hits(text, kits)]
    conn.close()
    assert cells > 200, "the scan read the central database"
    lines = [x for x in logs.getvalue().splitlines() if x.startswith("{")]
    assert len(lines) > 20, "the scan read the log"
    central_components = {"ingest", "service", "web", "alerts", "store"}
    for line in lines:
        problems += [f"log: {p}: {line[:200]}" for p in personal(line)]
        rec: dict[str, Any] = json.loads(line)
        if rec.get("component") in central_components or str(rec.get("client_id", "")).startswith("central"):
            # a line's own stamp is when it was written (journald adds one anyway): what it says is
            # checked; central writes no line for what a kit causes (see inventory.alerts.kit_driven)
            said = json.dumps({k: v for k, v in rec.items() if k != "timestamp"})
            problems += [f"central log: exact kit time {h}: {line[:200]}" for h in kit_time_hits(said, kits)]
            if rec.get("event") == "alert" and kit_driven(str(rec.get("alert_id", ""))):
                problems.append(f"central log: a line for a kit-driven alert: {line[:200]}")
    assert problems == [], "\n".join(problems[:40])
