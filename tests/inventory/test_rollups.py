"""The report counts kept at ingest equal a fresh count over the events table, on both backends:
after reordered and duplicated delivery over several batches, over any range of days (whole and partial
months, in a time zone that is not UTC), after a change of reporting zone, and after a migration
backfill of a store that already held events."""

from __future__ import annotations

import random
from datetime import date, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inventory import reports, rollups
from inventory.clock import FakeClock
from inventory.config import CentralConfig
from inventory.store import Store
from tests.inventory.gen import UnitStream
from tests.inventory.test_ingest import feed, ingestor


def load(store: Store, config: CentralConfig, clock: FakeClock, seed: int = 5) -> list[UnitStream]:
    ing, _ = ingestor(store, config, clock)
    ss = []
    for i in range(1, 4):
        s = UnitStream(f"unit-{i:03d}", f"Site {'AB'[i % 2]}")
        s.random_day(random.Random(seed + i), days=75, vends=40 + 5 * i)
        ss.append(s)
    msgs = [m for s in ss for m in s.messages()]
    random.Random(seed).shuffle(msgs)
    feed(ing, msgs + msgs[::7], batch=23)  # reordered, every seventh twice, batches across units
    return ss


def check_equal(store: Store) -> None:
    assert store.monthly() == store.monthly_fresh()
    first, last = date(2026, 9, 15), date(2026, 12, 10)
    for a, b in (
        (first, last),
        (date(2026, 10, 1), date(2026, 10, 31)),
        (date(2026, 10, 7), date(2026, 11, 2)),
    ):
        assert store.period(a.isoformat(), b.isoformat()) == store.period_fresh(a.isoformat(), b.isoformat())


def test_kept_counts_equal_a_fresh_count(store: Store, config: CentralConfig, clock: FakeClock) -> None:
    store.use_report_timezone("America/Chicago")
    ss = load(store, config, clock)
    check_equal(store)
    total = sum(sum(s.kits.values()) for s in ss)
    assert total > 0
    assert sum(r["kits"] for r in reports.period(store, date(2026, 1, 1), date(2026, 12, 31))) == total
    assert store.use_report_timezone("Asia/Tokyo") > 0  # months and days recomputed in the new zone
    check_equal(store)
    assert sum(r["kits"] for r in store.monthly()) == total


def test_backfill_of_a_store_that_held_events(store: Store, config: CentralConfig, clock: FakeClock) -> None:
    load(store, config, clock, seed=11)
    kept = store.monthly()
    with store.tx() as tx:
        tx.execute("DELETE FROM report_day")
        tx.execute("DELETE FROM report_month")
        rollups.rebuild(tx, store.dialect, "UTC")  # what migration 6 runs on an existing store
    assert store.monthly() == kept == store.monthly_fresh()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.integers(0, 120), length=st.integers(0, 100))
def test_any_range_of_days_equals_a_fresh_count(
    store: Store, config: CentralConfig, clock: FakeClock, start: int, length: int
) -> None:
    if not store.monthly():
        store.use_report_timezone("America/Chicago")
        load(store, config, clock, seed=3)
    a = date(2026, 8, 20) + timedelta(days=start)
    b = a + timedelta(days=length)
    assert store.period(a.isoformat(), b.isoformat()) == store.period_fresh(a.isoformat(), b.isoformat())


def test_periods_split_into_whole_months_and_edges() -> None:
    assert rollups.periods("2026-01-01", "2026-12-31") == ([f"2026-{m:02d}" for m in range(1, 13)], [])
    assert rollups.periods("2026-01-15", "2026-03-03") == (
        ["2026-02"],
        [("2026-01-15", "2026-01-31"), ("2026-03-01", "2026-03-03")],
    )
    assert rollups.periods("2026-02-03", "2026-02-03") == ([], [("2026-02-03", "2026-02-03")])
    assert reports.fiscal_year_bounds(2026) == (date(2025, 7, 1), date(2026, 6, 30))
    assert reports.fiscal_year_bounds(2026, 1) == (date(2026, 1, 1), date(2026, 12, 31))
