"""Program reports: kits and doses per site and unit per month and per year, the training funnel
(videos started -> completed -> kit taken after the video) and the vend failure rate."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from inventory.store import Store

COUNTS = (
    "kits",
    "doses",
    "test_vends",
    "vend_failures",
    "videos_started",
    "videos_completed",
    "kits_after_video",
    "out_of_stock",
)
CSV_FIELDS = ("month", "site", "unit", *COUNTS, "vend_failure_rate")


def failure_rate(row: dict[str, Any]) -> float:
    attempts = row["kits"] + row["test_vends"] + row["vend_failures"]
    return round(row["vend_failures"] / attempts, 4) if attempts else 0.0


def monthly(store: Store) -> list[dict[str, Any]]:
    """One row per (month, site, unit)."""
    rows = store.monthly()
    for r in rows:
        r["vend_failure_rate"] = failure_rate(r)
    return rows


def rollup(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Sum the counts over every row sharing `keys` (e.g. ("year", "site"))."""
    acc: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(lambda: dict.fromkeys(COUNTS, 0))
    for r in rows:
        r = {**r, "year": r["month"][:4]}
        k = tuple(r[x] for x in keys)
        for c in COUNTS:
            acc[k][c] += r[c]
    out = []
    for k, counts in sorted(acc.items()):
        row = dict(zip(keys, k, strict=True)) | counts
        row["vend_failure_rate"] = failure_rate(row)
        out.append(row)
    return out


def with_rates(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for r in rows:
        r["vend_failure_rate"] = failure_rate(r)
    return rows


def period(store: Store, start: date, end: date) -> list[dict[str, Any]]:
    """One row per (site, unit) over the days start..end inclusive (calendar days in the reporting
    zone), read from the counts kept at ingest."""
    if end < start:
        raise ValueError(f"expected a start on or before the end, got {start} after {end}")
    return with_rates(store.period(start.isoformat(), end.isoformat()))


def year_bounds(year: int) -> tuple[date, date]:
    return date(year, 1, 1), date(year, 12, 31)


def fiscal_year_bounds(year: int, start_month: int = 7) -> tuple[date, date]:
    """Fiscal year `year` ends in calendar year `year` (FY2026 with a July start: 2025-07-01 to
    2026-06-30); a January start is the calendar year."""
    if not 1 <= start_month <= 12:
        raise ValueError(f"expected a fiscal year start month 1-12, got {start_month}")
    if start_month == 1:
        return year_bounds(year)
    first = date(year - 1, start_month, 1)
    return first, date(year, start_month, 1) - timedelta(days=1)


def yearly(store: Store) -> list[dict[str, Any]]:
    return rollup(monthly(store), ("year", "site", "unit"))


def by_site_month(store: Store) -> list[dict[str, Any]]:
    return rollup(monthly(store), ("month", "site"))


def funnel(rows: list[dict[str, Any]]) -> dict[str, Any]:
    total = rollup(rows, ())[0] if rows else dict.fromkeys(COUNTS, 0) | {"vend_failure_rate": 0.0}
    return {
        "videos_started": total["videos_started"],
        "videos_completed": total["videos_completed"],
        "kits_after_video": total["kits_after_video"],
        "kits": total["kits"],
        "vend_failure_rate": total["vend_failure_rate"],
    }


def to_csv(rows: list[dict[str, Any]], fields: tuple[str, ...]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r[k] for k in fields})
    return buf.getvalue()


def monthly_csv(store: Store) -> str:
    return to_csv(monthly(store), CSV_FIELDS)


def yearly_csv(store: Store) -> str:
    return to_csv(yearly(store), ("year", *CSV_FIELDS[1:]))
