"""Lots at central, through a real broker and the real service: the lots page lists every lot by
expiry with where it is; a recall hold from the API is recorded with who and why and sent to every
unit; a unit whose state shows the lot unheld is told again; the pick list pulls held and expiring
lots and brings kits to capacity; telemetry samples become a temperature chart. Screenshots in
test-artifacts/."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import pytest
from playwright.sync_api import Browser, expect

from inventory.planning import days_of_stock, weekday_rates
from inventory.service import Service
from nalox.broker import Broker
from schemas.models import (
    ColumnState,
    LotExposure,
    LotHold,
    LotSegment,
    Telemetry,
    TemperatureSample,
    UnitState,
    topic,
)
from tests.inventory.conftest import central_config, running
from tests.inventory.gen import vending_state
from tests.inventory.mqttutil import UnitSide
from tests.inventory.staff import add_staff, login, make_token
from tests.waiting import wait_for

TODAY = datetime.now(UTC).date()


def state(unit: str, site: str, columns: list[ColumnState], holds: list[LotHold] = ()) -> UnitState:  # type: ignore[assignment]
    return vending_state(unit, site, datetime.now(UTC), columns, temperature_c=22.0, holds=list(holds))


def column(
    n: int, segs: list[tuple[str, date, int]], capacity: int = 20, held: str | None = None
) -> ColumnState:
    lots = [
        LotSegment(
            lot=lot,
            expiry=exp,
            count=k,
            exposure=LotExposure(seconds_outside_label=3600.0 * i, seconds_in_excursion=0.0, mkt_c=22.5 + i),
        )
        for i, (lot, exp, k) in enumerate(segs)
    ]
    return ColumnState(
        column=n,
        product="nasal-4mg",
        capacity=capacity,
        par=5,
        stock=sum(k for _, _, k in segs),
        lot=segs[0][0] if segs else None,
        expiry=segs[0][1] if segs else None,
        lots=lots,
        held=held,
    )


def holds(side: UnitSide) -> list[Any]:
    """Every cmd/lot_hold the units received, in order."""
    with side._lock:
        return [m for m in side.received if m.topic.endswith("/cmd/lot_hold")]


@pytest.fixture
def central(broker: Broker, tmp_path: Path) -> Iterator[Service]:
    db = tmp_path / "central.db"
    cfg = central_config(
        broker.port, db, "central-lots", server={"refresh_s": 60}, alerts={"interval_s": 0.5}
    )
    with running(cfg) as svc:
        yield svc


def test_lots_recall_pick_list_and_temperature_chart(
    central: Service,
    broker: Broker,
    browser: Browser,
    artifacts: Path,
) -> None:
    soon, later, past = TODAY + timedelta(days=12), TODAY + timedelta(days=400), TODAY - timedelta(days=2)
    assert central.store is not None
    add_staff(central.store, "pharmacist", "inventory")
    token = make_token(central.store, "inventory", "pharmacist")
    http = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=10)
    units = {
        "unit-001": state(
            "unit-001",
            "Site B",
            [column(1, [("LOT-OLD", soon, 3), ("LOT-NEW", later, 15)]), column(2, [("LOT-NEW", later, 9)])],
        ),
        "unit-002": state(
            "unit-002",
            "Site A",
            [
                column(1, [("LOT-NEW", later, 20)]),
                column(2, [("LOT-GONE", past, 2)], held="expired front kit"),
            ],
        ),
        "unit-003": state("unit-003", "Site B", [column(1, [("LOT-OLD", soon, 4)])]),
    }
    side = UnitSide(broker.port, "lots-units", subscribe=("nalox/v1/+/cmd/#",))
    try:
        side.publish_all(
            [(topic(u, "state"), s.model_dump_json().encode()) for u, s in units.items()], retain=True
        )
        samples = [
            TemperatureSample(
                ts=datetime.now(UTC) - timedelta(minutes=10 * i), celsius=22 + (8 if 20 < i < 40 else 0)
            )
            for i in range(300, 0, -1)
        ]
        tel = Telemetry(unit="unit-001", ts=datetime.now(UTC), uptime_s=5, outbox_depth=0, samples=samples)
        side.publish_all([(topic("unit-001", "telemetry"), tel.model_dump_json().encode())])
        base = central.url
        assert base
        wait_for(lambda: len(http.get(f"{base}/api/lots").json()) == 3, 10, "three lots listed")
        lots = {x["lot"]: x for x in http.get(f"{base}/api/lots").json()}
        assert [x["lot"] for x in http.get(f"{base}/api/lots").json()] == ["LOT-GONE", "LOT-OLD", "LOT-NEW"]
        assert lots["LOT-OLD"]["kits"] == 7
        assert {(p["unit"], p["column"], p["kits"]) for p in lots["LOT-OLD"]["places"]} == {
            ("unit-001", 1, 3),
            ("unit-003", 1, 4),
        }
        assert lots["LOT-NEW"]["kits"] == 44

        # a recall: recorded with who and why, told to every unit
        r = http.post(
            f"{base}/api/lots/LOT-OLD/hold", json={"reason": "FDA recall R-123", "by": "pharmacist"}
        )
        assert r.status_code == 200 and r.json()["units_told"] == 3
        wait_for(lambda: len(holds(side)) >= 3, 10, "a hold command per unit")
        told = {m.topic.split("/")[2] for m in holds(side)}
        assert told == set(units)
        cmd = json.loads(holds(side)[0].payload)
        assert (cmd["lot"], cmd["hold"], cmd["by"]) == ("LOT-OLD", True, "token:pharmacist")
        log = http.get(f"{base}/api/lots/holds/log").json()
        assert (log[0]["action"], log[0]["by"], log[0]["reason"]) == (
            "hold",
            "token:pharmacist",
            "recall: FDA recall R-123",
        )
        bad = http.post(f"{base}/api/lots/LOT-OLD/hold", json={"reason": "", "by": "x"})
        assert bad.status_code == 422

        # unit-003 comes back with a fresh state still showing the lot unheld: it is told again
        before = len([m for m in holds(side) if "unit-003" in m.topic])
        side.publish_all(
            [
                (
                    topic("unit-003", "state"),
                    units["unit-003"].model_copy(update={"ts": datetime.now(UTC)}).model_dump_json().encode(),
                )
            ],
            retain=True,
        )
        wait_for(
            lambda: len([m for m in holds(side) if "unit-003" in m.topic]) > before,
            10,
            "the hold sent again to a unit whose state shows the lot unheld",
        )

        # the report downloads answer over HTTP with their period and zone
        csv_text = http.get(f"{base}/reports/export.csv", params={"fy": 2027}).text
        assert csv_text.startswith("# nalox report, fiscal year 2027 (2026-07-01 to 2027-06-30)")
        xlsx = http.get(f"{base}/reports/export.xlsx", params={"year": 2026})
        wb = openpyxl.load_workbook(io.BytesIO(xlsx.content))
        assert wb["report"]["B2"].value == "UTC" and "calendar year 2026" in wb["report"]["B1"].value
        assert http.get(f"{base}/reports/open-data.csv", params={"year": 2026}).text.startswith(
            "# nalox open data"
        )
        assert http.get(f"{base}/reports/export.csv", params={"by": "person"}).status_code == 422
        assert "report-exports" in http.get(f"{base}/reports", params={"year": 2026}).text

        pick = http.get(f"{base}/api/sites/Site B/picklist").json()
        pulled = {(p["unit"], p["lot"], p["kits"]) for p in pick["pull"]}
        assert pulled == {("unit-001", "LOT-OLD", 3), ("unit-003", "LOT-OLD", 4)}
        assert pick["bring"] == [{"product": "nasal-4mg", "kits": (20 - 15) + (20 - 9) + (20 - 0)}]

        page = browser.new_page(viewport={"width": 1280, "height": 900})
        login(page, base, "pharmacist")
        page.goto(f"{base}/lots")
        row = page.locator("tr[data-lot='LOT-OLD']")
        expect(row).to_contain_text("RECALL HOLD")
        expect(row).to_contain_text("unit-003")
        expect(page.locator("#hold-log")).to_contain_text("FDA recall R-123")
        page.screenshot(path=str(artifacts / "inventory-lots.png"), full_page=True)
        page.goto(f"{base}/sites/Site%20B/picklist")
        expect(page.locator("#pull")).to_contain_text("LOT-OLD")
        expect(page.locator("#bring")).to_contain_text("36")
        page.screenshot(path=str(artifacts / "inventory-picklist.png"), full_page=True)
        page.goto(f"{base}/units/unit-001")
        expect(page.locator("#temperature svg polyline")).to_have_count(1)
        expect(page.locator("#temperature svg .band")).to_have_count(1)
        page.screenshot(path=str(artifacts / "inventory-temperature.png"), full_page=True)

        # released with a reason (dashboard form)
        page.goto(f"{base}/lots?lot=LOT-OLD")
        row = page.locator("tr[data-lot='LOT-OLD']")
        row.locator("input[name=reason]").fill("recall withdrawn by the maker")
        row.get_by_role("button", name="Release").click()
        expect(page.locator("tr[data-lot='LOT-OLD']")).not_to_contain_text("RECALL HOLD")
        released = http.get(f"{base}/api/lots/holds/log").json()[0]
        assert (released["action"], released["by"]) == ("release", "pharmacist")
        audit = [(e["actor"], e["action"]) for e in http.get(f"{base}/api/audit").json()]
        assert ("pharmacist", "lot_release") in audit and ("token:pharmacist", "lot_hold") in audit
        page.close()
    finally:
        http.close()
        side.close()


def test_days_of_stock_follow_the_weekday_rate() -> None:
    monday = date(2026, 11, 30)
    assert monday.weekday() == 0
    # four weeks: 10 kits every Friday, nothing else
    per_day = {
        monday - timedelta(days=d): 10 for d in range(1, 29) if (monday - timedelta(days=d)).weekday() == 4
    }
    rates = weekday_rates(per_day, monday)
    assert rates[4] == 10 and sum(rates) == 10
    assert days_of_stock(25, rates, monday) == pytest.approx(18.5)  # Fri 10, Fri 10, half of the third Fri
    assert days_of_stock(5, rates, monday) == pytest.approx(4.5)
    assert days_of_stock(5, [0.0] * 7, monday) is None
