"""The report counts kept at ingest equal a fresh count over the events table, on both backends:
after reordered and duplicated delivery over several batches, over any range of days (whole and partial
months, in a time zone that is not UTC), after a change of reporting zone, and after a migration
backfill of a store that already held events."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inventory import reports, rollups
from inventory.clock import FakeClock
from inventory.config import CentralConfig
from inventory.store import REPORT_COUNTS, Store
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
    assert store.dispensed_by_lot() == store.dispensed_by_lot_fresh() != {}
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


def test_period_counts_by_every_grouping_equal_a_fresh_count(
    store: Store, config: CentralConfig, clock: FakeClock
) -> None:
    """The grouped reports (program, site as recorded with each event, unit, month, total) read the
    kept counts for calendar periods and equal the fresh count; a unit moved to another site keeps its
    earlier events at the old site."""
    from inventory.reports import GROUPINGS, calendar_year, date_range, fiscal_year

    store.use_report_timezone("America/Chicago")
    load(store, config, clock, seed=21)
    ing, _ = ingestor(store, config, clock)
    store.sync_config_units([("unit-001", "Site Z", None)], clock.now())  # moved: new events at Site Z
    s = UnitStream("unit-001", "Site Z", start=datetime(2026, 12, 5, 9, tzinfo=UTC), seq=10_000)
    s.random_day(random.Random(4), days=10, vends=6)
    feed(ing, s.messages())
    zone = "America/Chicago"
    for period in (
        calendar_year(2026, zone),
        fiscal_year(2027, 7, zone),
        date_range(date(2026, 9, 25), date(2026, 11, 3), zone),
    ):
        for by in GROUPINGS.values():
            kept = store.period_counts(period.start_utc, period.end_utc, by)
            assert kept == store.period_counts_fresh(period.start_utc, period.end_utc, by), (period, by)
    sites = {
        r["site"] for r in store.period_counts(*_year(zone), ("site", "unit")) if r["unit"] == "unit-001"
    }
    assert sites == {"Site B", "Site Z"}
    assert rollups.COUNTS[1:] == tuple(REPORT_COUNTS)


def _year(zone: str) -> tuple[datetime, datetime]:
    from inventory.reports import calendar_year

    p = calendar_year(2026, zone)
    return p.start_utc, p.end_utc
