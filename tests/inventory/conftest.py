"""Fixtures for the central inventory tests: a store on each backend, a config, event factories."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from playwright.sync_api import Browser, sync_playwright

from inventory.clock import FakeClock, RealClock
from inventory.config import CentralConfig, parse_config
from inventory.service import Service
from inventory.store import Store, open_store
from nalox.configs import UnitSpec
from nalox.simunit import SimUnit, start_unit

PG_URL = "postgresql://postgres@127.0.0.1/test"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]


def pg_schema() -> str:
    return f"nalox_test_{uuid.uuid4().hex[:12]}"


def drop_schema(schema: str) -> None:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str | None]]:
    """(db, schema): a fresh SQLite file, or a fresh schema in the test PostgreSQL (dropped after)."""
    if request.param == "sqlite":
        yield str(tmp_path / "central.db"), None
        return
    schema = pg_schema()
    try:
        yield PG_URL, schema
    finally:
        drop_schema(schema)


@pytest.fixture
def store(db_url: tuple[str, str | None]) -> Iterator[Store]:
    s = open_store(db_url[0], schema=db_url[1])
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 11, 1, 12, 0, tzinfo=UTC))


def sim_spec(unit: str, site: str, **fields: Any) -> UnitSpec:
    """A quick simulated unit for nalox.simunit.start_unit: 2 columns of 6, 1 s clip, fast motor."""
    quick = UnitSpec(
        unit, site, columns=2, stock=6, spin_ms=50, video_seconds=1.0, telemetry_interval_s=2, ack_resend_s=5
    )
    return replace(quick, **fields)


def make_config(units: int = 3, **sections: dict[str, object]) -> CentralConfig:
    data: dict[str, object] = {
        "units": [{"id": f"unit-{i:03d}", "site": f"Site {'AB'[i % 2]}"} for i in range(1, units + 1)],
        # synthetic histories lie anywhere around the FakeClock: a wide ts window (test_trust narrows it)
        "ingest": {"gap_timeout_s": 30, "max_future_s": 10 * 365 * 86400, "max_past_days": 36500},
    }
    data.update(sections)
    return parse_config(data)


@pytest.fixture
def config() -> CentralConfig:
    return make_config()


T0 = datetime(2026, 10, 3, 9, 0, tzinfo=UTC)


def ts(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Headless Chromium (/usr/bin/chromium) for the page tests."""
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@contextmanager
def running(cfg: CentralConfig) -> Iterator[Service]:
    """The central service on a real clock, connected to its broker, stopped after."""
    svc = Service(cfg, RealClock()).start()
    assert svc.wait_connected(10)
    try:
        yield svc
    finally:
        svc.stop()


@contextmanager
def heated_unit(broker_port: int, tmp_path: Path, par: int) -> Iterator[SimUnit]:
    """unit-001 at Site B as a real simulated unit: 2 columns of 5 kits, a heated release area (21 C)."""
    spec = sim_spec("unit-001", "Site B", stock=5, par=par)
    u = start_unit(spec, tmp_path / "unit-001", broker_port, clips=tmp_path / "clips")
    u.board.set_temperature(21.0)
    try:
        yield u
    finally:
        u.stop()


def central_config(
    broker_port: int, db: Path, client_id: str, units: int = 3, **sections: dict[str, object]
) -> CentralConfig:
    """make_config for a service on the test broker (as client_id), its store in db, its web server on a
    free port (a `server` section adds to that)."""
    return make_config(
        units,
        mqtt={"port": broker_port, "client_id": client_id},
        store={"db": str(db)},
        server={"port": 0, **sections.pop("server", {})},
        **sections,
    )


@contextmanager
def started_units(specs: Iterable[UnitSpec], broker_port: int, tmp_path: Path) -> Iterator[list[SimUnit]]:
    """Each spec as a real simulated unit in tmp_path/<unit id> (seeded by its place, from 1); all stopped
    after."""
    units: list[SimUnit] = []
    try:
        for seed, spec in enumerate(specs, start=1):
            workdir = tmp_path / spec.unit_id
            units.append(start_unit(spec, workdir, broker_port, seed=seed, clips=tmp_path / "clips"))
        yield units
    finally:
        for u in units:
            u.stop()
