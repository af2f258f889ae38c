"""Date-range, calendar- and fiscal-year reports in the county's zone, by program and site as recorded
when each event came in, match totals counted independently from the generated events, on SQLite and
PostgreSQL; the CSV, JSON and Excel files say their range and zone and agree with each other."""

from __future__ import annotations

import io
import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import openpyxl
import pytest

from inventory import reports
from inventory.clock import FakeClock
from inventory.config import CentralConfig, parse_config
from inventory.store import Store
from schemas.models import DispenseEvent, VendFailedEvent, VideoEvent
from tests.inventory.gen import UnitStream
from tests.inventory.test_ingest import feed, ingestor

TZ = "America/Chicago"


def streams() -> list[UnitStream]:
    """Three units over ~16 months straddling a July fiscal-year start and two New Years; unit-002
    also gives out extra and emergency kits (kiosk `via` values)."""
    out = []
    for i in range(1, 4):
        s = UnitStream(f"unit-{i:03d}", f"Site {'AB'[i % 2]}", start=datetime(2025, 11, 20, 3, 0, tzinfo=UTC))
        s.random_day(random.Random(500 + i), days=480, vends=150 + 20 * i)
        out.append(s)
    s = out[1]
    s.restock(481 * 24 * 60, 1, 30)
    for k, via in enumerate(["extra", "extra", "emergency", "extra", "emergency"]):
        at = (150 + 30 * k) * 24 * 60  # April to August 2026: FY2026 and FY2027
        s.stock[1] -= 1
        s.events.append(
            DispenseEvent(
                **s._base(482 * 24 * 60 + k),
                column=1,
                product="naloxone-4mg",
                doses=2,
                lot="LOT-A1",
                command_id=s.seq,
                via=via,
                stock_after=s.stock[1],
            ).model_copy(update={"ts": s.start + timedelta(minutes=at)})
        )
    return out


def expected(
    ss: list[UnitStream], first: date, last: date, program_of: dict[str, str]
) -> Counter[tuple[str, ...]]:
    """Counted here from the events themselves: local day in TZ within [first, last]."""
    tz = ZoneInfo(TZ)
    c: Counter[tuple[str, ...]] = Counter()
    for s in ss:
        for e in s.events:
            day = e.ts.astimezone(tz).date()
            if not first <= day <= last:
                continue
            key = (program_of[s.unit], s.site, s.unit)
            if isinstance(e, DispenseEvent) and e.via != "test":
                c[(*key, "kits")] += 1
                c[(*key, "doses")] += e.doses
                if e.via in ("extra", "emergency"):
                    c[(*key, f"{e.via}_kits")] += 1
            elif isinstance(e, DispenseEvent):
                c[(*key, "test_vends")] += 1
            elif isinstance(e, VendFailedEvent):
                c[(*key, "vend_failures")] += 1
            elif isinstance(e, VideoEvent):
                c[(*key, f"videos_{e.phase}")] += 1
    return c


def got(rows: list[dict[str, object]]) -> Counter[tuple[str, ...]]:
    c: Counter[tuple[str, ...]] = Counter()
    for r in rows:
        for k in (
            "kits",
            "doses",
            "test_vends",
            "extra_kits",
            "emergency_kits",
            "vend_failures",
            "videos_started",
            "videos_completed",
        ):
            if r[k]:
                c[(str(r["program"]), str(r["site"]), str(r["unit"]), k)] += int(r[k])  # type: ignore[call-overload]
    return c


def config_with_programs() -> CentralConfig:
    return parse_config(
        {
            "reports": {"timezone": TZ, "fiscal_year_start_month": 7},
            # a year and more of synthetic history around the FakeClock: a wide ts window
            "ingest": {"max_future_s": 10 * 365 * 86400, "max_past_days": 36500},
            "units": [
                {"id": "unit-001", "site": "Site B", "program": "Jail vending"},
                {"id": "unit-002", "site": "Site A", "program": "Community vending"},
                {"id": "unit-003", "site": "Site B", "program": "Jail vending"},
            ],
        }
    )


def test_fiscal_calendar_and_range_reports_match_independent_totals(store: Store, clock: FakeClock) -> None:
    cfg = config_with_programs()
    store.use_report_timezone(TZ)
    ing, _ = ingestor(store, cfg, clock)
    store.sync_config_units([(u.id, u.site, u.name, u.program) for u in cfg.units], clock.now())
    ss = streams()
    msgs = [m for s in ss for m in s.messages()]
    random.Random(3).shuffle(msgs)
    feed(ing, msgs, batch=50)
    programs = {u.id: u.program for u in cfg.units}
    periods = [
        reports.fiscal_year(2026, 7, TZ),  # 2025-07-01 .. 2026-06-30
        reports.fiscal_year(2027, 7, TZ),
        reports.calendar_year(2026, TZ),
        reports.date_range(date(2026, 2, 14), date(2026, 3, 9), TZ),  # across the DST change
    ]
    assert periods[0].first == date(2025, 7, 1) and periods[0].last == date(2026, 6, 30)
    for p in periods:
        want = expected(ss, p.first, p.last, programs)
        assert sum(v for k, v in want.items() if k[-1] == "kits") > 10, f"{p.label} has kits to count"
        if p.label.startswith("fiscal year 2026"):
            assert sum(v for k, v in want.items() if k[-1] in ("extra_kits", "emergency_kits")) > 0
        assert got(reports.period_report(store, p, "unit")) == want, p.describe()
        by_program = {r["program"]: r["kits"] for r in reports.period_report(store, p, "program")}
        assert by_program == {
            prog: sum(v for k, v in want.items() if k[0] == prog and k[-1] == "kits")
            for prog in {k[0] for k in want if k[-1] == "kits"}
        }


def test_a_local_midnight_decides_the_day_not_utc(store: Store, clock: FakeClock) -> None:
    cfg = config_with_programs()
    ing, _ = ingestor(store, cfg, clock)
    s = UnitStream("unit-001", "Site B", start=datetime(2026, 7, 1, 3, 30, tzinfo=UTC))  # 22:30 on 30 June
    s.restock(0, 1, 30)
    s.vend(0, 1)  # 30 June in Chicago, 1 July in UTC
    s.vend(3 * 60, 1)  # 1 July 01:30 in Chicago
    feed(ing, s.messages())
    fy27 = reports.period_report(store, reports.fiscal_year(2027, 7, TZ), "total")
    fy26 = reports.period_report(store, reports.fiscal_year(2026, 7, TZ), "total")
    assert (fy26[0]["kits"], fy27[0]["kits"]) == (1, 1)


def test_moving_a_unit_keeps_its_history_where_it_happened(store: Store, clock: FakeClock) -> None:
    cfg = config_with_programs()
    ing, _ = ingestor(store, cfg, clock)
    s = UnitStream("unit-001", "Site B", start=datetime(2026, 8, 1, 15, 0, tzinfo=UTC))
    s.restock(0, 1, 30)
    for i in range(5):
        s.vend(60 * i, 1)
    feed(ing, s.messages())
    store.sync_config_units([("unit-001", "Main Street Clinic", None, "Community vending")], clock.now())
    for i in range(3):
        s.vend(60 * 24 + 60 * i, 1)
    feed(ing, s.messages()[-9:])
    rows = reports.period_report(store, reports.fiscal_year(2027, 7, TZ), "site")
    assert {(r["program"], r["site"]): r["kits"] for r in rows} == {
        ("Jail vending", "Site B"): 5,
        ("Community vending", "Main Street Clinic"): 3,
    }


@pytest.mark.parametrize("by", ["unit", "month"])
def test_excel_csv_and_json_agree_and_say_their_range_and_zone(
    store: Store, clock: FakeClock, tmp_path: object, by: str
) -> None:
    cfg = config_with_programs()
    store.use_report_timezone(TZ)
    ing, _ = ingestor(store, cfg, clock)
    ss = streams()
    feed(ing, [m for s in ss for m in s.messages()], batch=100)
    p = reports.fiscal_year(2026, 7, TZ)
    rows = reports.period_report(store, p, by)
    text = reports.period_csv(rows, p, by)
    assert TZ in text.splitlines()[0] and "2025-07-01" in text.splitlines()[0]
    csv_rows = reports.read_period_csv(text)
    wb = openpyxl.load_workbook(io.BytesIO(reports.period_xlsx(rows, p, by)))
    ws = wb["report"]
    assert TZ in str(ws["B1"].value) and ws["B2"].value == TZ
    header = [c.value for c in ws[3]]
    assert tuple(header) == reports.report_fields(by)
    body = [[c.value for c in r] for r in ws.iter_rows(min_row=4, max_row=ws.max_row - 1)]
    totals = [c.value for c in ws[ws.max_row]]
    for k in ("kits", "doses", "videos_started", "videos_completed", "vend_failures"):
        i = header.index(k)
        csv_sum = sum(int(r[k]) for r in csv_rows)
        assert sum(r[i] for r in body) == csv_sum, k
        col = openpyxl.utils.get_column_letter(i + 1)
        assert totals[i] == f"=SUM({col}4:{col}{ws.max_row - 1})", "the total row is a live formula"
    j = reports.period_json(rows, p, by)
    assert j["period"]["time_zone"] == TZ and j["totals"]["kits"] == sum(int(r["kits"]) for r in csv_rows)
    assert j["period"]["start_utc"] == "2025-07-01T05:00:00+00:00"


def test_a_period_that_cannot_be_is_refused_with_what_was_expected() -> None:
    with pytest.raises(reports.PeriodError, match="on or after"):
        reports.date_range(date(2026, 5, 2), date(2026, 5, 1), TZ)
    with pytest.raises(reports.PeriodError, match="between 2000 and 2100"):
        reports.fiscal_year(1999, 7, TZ)
    assert reports.fiscal_year(2026, 1, TZ).first == date(2026, 1, 1)
    assert reports.fiscal_year(2026, 10, TZ).first == date(2025, 10, 1)
    assert reports.fiscal_year(2026, 10, TZ).last == date(2026, 9, 30)
    assert reports.date_range(date(2026, 1, 1), date(2026, 1, 1), TZ).end_utc - reports.date_range(
        date(2026, 1, 1), date(2026, 1, 1), TZ
    ).start_utc == timedelta(days=1)
