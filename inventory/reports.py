"""Program reports: kits and doses per site and unit per month and per year, the training funnel
(videos started -> completed -> kit taken after the video) and the vend failure rate; any date range,
calendar or fiscal year in the county's time zone, by program/site/unit as recorded with each event,
as CSV, JSON or an Excel workbook."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from inventory.errors import InventoryError
from inventory.store import REPORT_COUNTS, Store

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


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a string starting like a formula (`=`, `+`, `-`, `@`,
    tab, carriage return; a site name comes from a unit's own state) gets a leading apostrophe.
    Numbers stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def to_csv(rows: list[dict[str, Any]], fields: tuple[str, ...]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: cell(r[k]) for k in fields})
    return buf.getvalue()


def monthly_csv(store: Store) -> str:
    return to_csv(monthly(store), CSV_FIELDS)


def yearly_csv(store: Store) -> str:
    return to_csv(yearly(store), ("year", *CSV_FIELDS[1:]))


# ---------------------------------------------------------------- periods, in the county's zone


@dataclass(frozen=True)
class Period:
    """[first, last] calendar days (inclusive) in the county's time zone."""

    first: date
    last: date
    tz: str
    label: str

    @property
    def start_utc(self) -> datetime:
        return datetime.combine(self.first, time(0), ZoneInfo(self.tz)).astimezone(UTC)

    @property
    def end_utc(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time(0), ZoneInfo(self.tz)).astimezone(UTC)

    def describe(self) -> str:
        span = f"{self.first.isoformat()} to {self.last.isoformat()} inclusive"
        return f"{self.label}: {span}, time zone {self.tz}"


class PeriodError(InventoryError, ValueError):
    """A report period that cannot be: wrong order, unknown year, too long."""


MAX_PERIOD_DAYS = 366 * 10


def date_range(first: date, last: date, tz: str) -> Period:
    if last < first:
        raise PeriodError(f"expected the end date on or after the start {first}, got {last}")
    if (last - first).days > MAX_PERIOD_DAYS:
        raise PeriodError(
            f"expected a period of at most {MAX_PERIOD_DAYS} days, got {(last - first).days + 1}"
        )
    return Period(first, last, tz, "range")


def calendar_year(year: int, tz: str) -> Period:
    _year_ok(year)
    return Period(date(year, 1, 1), date(year, 12, 31), tz, f"calendar year {year}")


def fiscal_year(year: int, start_month: int, tz: str) -> Period:
    """Fiscal year `year` is the one that ENDS in `year` (FY2027 with a July start: 2026-07-01 to
    2027-06-30); with a January start it is the calendar year."""
    _year_ok(year)
    first, last = fiscal_year_bounds(year, start_month)
    return Period(first, last, tz, f"fiscal year {year} ({first} to {last})")


def _year_ok(year: int) -> None:
    if not 2000 <= year <= 2100:
        raise PeriodError(f"expected a year between 2000 and 2100, got {year}")


PERIOD_COUNTS = REPORT_COUNTS
GROUPINGS = {
    "program": ("program",),
    "site": ("program", "site"),
    "unit": ("program", "site", "unit"),
    "month": ("month", "program", "site"),
    "language": ("language",),  # kits and videos per language the person chose (counted from events)
    "total": (),
}


def period_report(store: Store, period: Period, by: str = "unit") -> list[dict[str, Any]]:
    """Counts per program/site/unit (as recorded with each event) inside the period. Months are those
    of the store's reporting zone (the same zone as the period)."""
    if by not in GROUPINGS:
        raise PeriodError(f"expected grouping one of {sorted(GROUPINGS)}, got {by!r}")
    rows = store.period_counts(period.start_utc, period.end_utc, GROUPINGS[by])
    for r in rows:
        r["vend_failure_rate"] = failure_rate(r)
    return rows


def report_fields(by: str) -> tuple[str, ...]:
    return (*GROUPINGS[by], *PERIOD_COUNTS, "vend_failure_rate")


def period_csv(rows: list[dict[str, Any]], period: Period, by: str) -> str:
    """CSV with two comment lines first: the period and zone, and what a kit count means."""
    buf = io.StringIO()
    buf.write(f"# nalox report, {period.describe()}\n")
    buf.write("# kits: kits given to people (test vends apart); doses: kits x doses per kit\n")
    w = csv.DictWriter(buf, fieldnames=report_fields(by), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: cell(r[k]) for k in report_fields(by)})
    return buf.getvalue()


def read_period_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(line for line in io.StringIO(text) if not line.startswith("#")))


def period_json(rows: list[dict[str, Any]], period: Period, by: str) -> dict[str, Any]:
    return {
        "period": {
            "label": period.label,
            "first_day": period.first.isoformat(),
            "last_day": period.last.isoformat(),
            "time_zone": period.tz,
            "start_utc": period.start_utc.isoformat(),
            "end_utc_exclusive": period.end_utc.isoformat(),
        },
        "grouped_by": list(GROUPINGS[by]),
        "rows": rows,
        "totals": {c: sum(r[c] for r in rows) for c in PERIOD_COUNTS},
    }


def period_xlsx(rows: list[dict[str, Any]], period: Period, by: str) -> bytes:
    """An Excel workbook: sheet `report` (period and zone in the first rows, then the table and a
    SUM row of formulas) and sheet `about`."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    ws = wb.active
    ws.title = "report"
    ws.append(["nalox report", period.describe()])
    ws.append(
        ["time zone", period.tz, "first day", period.first.isoformat(), "last day", period.last.isoformat()]
    )
    fields = report_fields(by)
    ws.append(list(fields))
    header = ws.max_row
    for c in ws[header]:
        c.font = Font(bold=True)
    for r in rows:
        ws.append([r[k] for k in fields])
    last = ws.max_row
    total_row: list[Any] = ["total"] + [""] * (len(GROUPINGS[by]) - 1) if GROUPINGS[by] else []
    from openpyxl.utils import get_column_letter

    for i, k in enumerate(fields, start=1):
        if k in PERIOD_COUNTS:
            col = get_column_letter(i)
            total_row.append(f"=SUM({col}{header + 1}:{col}{max(last, header + 1)})")
        elif len(total_row) < i:
            total_row.append("")
    ws.append(total_row)
    about = wb.create_sheet("about")
    about.append(["period", period.describe()])
    about.append(["time zone", period.tz])
    about.append(["kits", "kits given to people; test vends are counted apart"])
    about.append(["doses", "each kit counted with its product's doses per kit"])
    about.append(["extra_kits / emergency_kits", "kits given as an extra or emergency kit (counted in kits)"])
    about.append(["privacy", "counts only; no event or time of any single kit"])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()
