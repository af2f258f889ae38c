"""Reports computed by the store match totals counted independently from the generated events."""

from __future__ import annotations

import csv
import io
import random
from collections import Counter
from datetime import UTC, datetime

import pytest

from inventory import reports
from inventory.clock import FakeClock
from inventory.config import CentralConfig, ConfigError, parse_config
from inventory.store import Store
from tests.inventory.gen import UnitStream
from tests.inventory.test_ingest import feed, ingestor


def fleet_streams() -> list[UnitStream]:
    out = []
    for i in range(1, 4):  # three units, two sites, ~70 days across three months
        s = UnitStream(f"unit-{i:03d}", f"Site {'AB'[i % 2]}")
        s.random_day(random.Random(100 + i), days=70, vends=60 + 10 * i)
        out.append(s)
    return out


def test_monthly_and_yearly_reports_match_independent_totals(
    store: Store, config: CentralConfig, clock: FakeClock
) -> None:
    ing, _ = ingestor(store, config, clock)
    ss = fleet_streams()
    msgs = [m for s in ss for m in s.messages()]
    random.Random(9).shuffle(msgs)
    feed(ing, msgs + msgs[:50], batch=40)  # reordered, some twice
    rows = {(r["month"], r["unit"]): r for r in reports.monthly(store)}
    expected_keys = {(m, s.unit) for s in ss for m in set(s.kits) | set(s.failures) | set(s.started)}
    assert set(rows) == expected_keys
    assert len({m for m, _ in rows}) == 3, "the generated history spans three months"
    for s in ss:
        for month in {m for m, u in rows if u == s.unit}:
            r = rows[(month, s.unit)]
            assert r["site"] == s.site
            assert (r["kits"], r["doses"], r["test_vends"]) == (s.kits[month], s.doses[month], s.tests[month])
            assert (r["vend_failures"], r["videos_started"], r["videos_completed"]) == (
                s.failures[month],
                s.started[month],
                s.completed[month],
            )
            assert r["kits_after_video"] == s.kits[month]
    by_site: Counter[tuple[str, str]] = Counter()
    for s in ss:
        for month, n in s.kits.items():
            by_site[(month[:4], s.site)] += n
    yearly = {
        (r["year"], r["site"]): r["kits"] for r in reports.rollup(reports.monthly(store), ("year", "site"))
    }
    assert yearly == dict(by_site)
    funnel = reports.funnel(reports.monthly(store))
    assert funnel["videos_started"] == sum(sum(s.started.values()) for s in ss)
    attempts = sum(sum(s.kits.values()) + sum(s.tests.values()) + sum(s.failures.values()) for s in ss)
    assert abs(funnel["vend_failure_rate"] - sum(sum(s.failures.values()) for s in ss) / attempts) < 1e-4


def test_monthly_csv_has_one_row_per_month_and_unit(
    store: Store, config: CentralConfig, clock: FakeClock
) -> None:
    ing, _ = ingestor(store, config, clock)
    ss = fleet_streams()
    feed(ing, [m for s in ss for m in s.messages()], batch=100)
    rows = list(csv.DictReader(io.StringIO(reports.monthly_csv(store))))
    assert list(rows[0]) == list(reports.CSV_FIELDS)
    assert sum(int(r["kits"]) for r in rows) == sum(sum(s.kits.values()) for s in ss)
    assert sum(int(r["doses"]) for r in rows) == sum(sum(s.doses.values()) for s in ss)
    assert len(rows) == len({(r["month"], r["unit"]) for r in rows})


def test_months_follow_the_reporting_time_zone_and_are_recomputed_when_it_changes(
    store: Store, config: CentralConfig, clock: FakeClock
) -> None:
    """A kit at 21:30 on 31 January in Chicago is 03:30 UTC on 1 February: January's in that county."""
    ing, _ = ingestor(store, config, clock)
    s = UnitStream("unit-001", "Site B", start=datetime(2026, 2, 1, 3, 0, tzinfo=UTC))
    s.restock(0, 1, 10)
    s.vend(28, 1)  # the dispense lands at 03:30 UTC
    assert store.use_report_timezone("America/Chicago") == 0, "nothing stored yet: nothing to recompute"
    feed(ing, s.messages())
    assert {r["month"]: r["kits"] for r in reports.monthly(store)} == {"2026-01": 1}
    assert store.use_report_timezone("UTC") == len(s.events)
    assert {r["month"]: r["kits"] for r in reports.monthly(store)} == {"2026-02": 1}
    assert store.use_report_timezone("UTC") == 0


def test_an_unknown_time_zone_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="expected an IANA time zone"):
        parse_config({"reports": {"timezone": "Mars/Olympus"}})


def test_yearly_csv_sums_the_months(store: Store, config: CentralConfig, clock: FakeClock) -> None:
    ing, _ = ingestor(store, config, clock)
    ss = fleet_streams()
    feed(ing, [m for s in ss for m in s.messages()], batch=100)
    rows = list(csv.DictReader(io.StringIO(reports.yearly_csv(store))))
    assert {(r["year"], r["unit"]): int(r["kits"]) for r in rows} == {
        ("2026", s.unit): sum(s.kits.values()) for s in ss
    }
