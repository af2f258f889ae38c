"""A fleet too big for one page, on both backends: units needing attention come first (ranked in SQL),
pages cover every unit exactly once, search and site filter narrow them, the figures count the whole
filtered fleet; reports and alerts pages take a period, a site and a page."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from inventory.clock import FakeClock
from inventory.config import CentralConfig
from inventory.store import Store
from inventory.web import create_app
from schemas.models import ColumnState, DispenseEvent, Status
from tests.inventory.gen import vending_state
from tests.inventory.staff import make_token

UNITS = 120


def build(store: Store, now: datetime) -> dict[str, int]:
    """120 units at 4 sites. Rank by unit number: 1-5 offline, 6-15 a column sold out (10-15 by a
    counted event although the state still says 4), 16-30 under par, the rest fine."""
    units = [(f"unit-{i:03d}", f"Site {'ABCD'[i % 4]}", f"Lobby {i}") for i in range(1, UNITS + 1)]
    store.sync_config_units(units, now)
    kits = 0
    with store.tx() as tx:
        for i, (unit, site, _) in enumerate(units, start=1):
            first = 0 if 6 <= i <= 9 else 4 if 10 <= i <= 15 else 2 if 16 <= i <= 30 else 9
            cols = [
                ColumnState(column=1, product="nasal-4mg", capacity=30, par=5, stock=first),
                ColumnState(column=2, product="nasal-4mg", capacity=30, par=5, stock=20),
            ]
            state = vending_state(unit, site, now, cols)
            store.put_state(tx, state, state.model_dump_json(), now)
            online = "offline" if i <= 5 else "online"
            store.put_status(tx, unit, Status(state=online, session=1, ts=now), now)
            kits += (0 if 10 <= i <= 15 else first) + 20
        store.move_stock(tx, {(f"unit-{i:03d}", 1): (1, 0, now) for i in range(10, 16)})
        kit = [
            DispenseEvent(
                event_id=f"e{unit}",
                seq=1,
                ts=now - timedelta(days=10),
                unit=unit,
                column=2,
                product="nasal-4mg",
                doses=2,
                command_id=1,
                via="video",
                stock_after=20,
            )
            for unit, _, _ in units
        ]
        store.insert_events(tx, [(e, e.model_dump_json()) for e in kit], now)
    return {"kits": kits}


def test_fleet_pages_rank_search_and_count(store: Store) -> None:
    now = datetime(2026, 11, 1, 12, tzinfo=UTC)
    expected = build(store, now)
    seen: list[str] = []
    for page in range(3):
        ids, figures = store.fleet_page(offset=page * 50, limit=50)
        seen += ids
    assert len(seen) == UNITS and len(set(seen)) == UNITS, "every unit on exactly one page"
    number = {u: int(u[-3:]) for u in seen}
    assert sorted(number[u] for u in seen[:5]) == [1, 2, 3, 4, 5], "offline first"
    assert sorted(number[u] for u in seen[5:15]) == list(range(6, 16)), "then a column sold out"
    assert sorted(number[u] for u in seen[15:30]) == list(range(16, 31)), "then under par"
    assert figures == {"units": UNITS, "online": UNITS - 5, "attention": 30, "kits": expected["kits"]}
    ids, figures = store.fleet_page(site="Site B", search="unit-01")
    assert ids and all(int(u[-3:]) % 4 == 1 and u.startswith("unit-01") for u in ids)
    assert figures["units"] == len(ids)
    assert store.fleet_page(search="lobby 7")[0][:1] == ["unit-007"]  # by name, any case
    assert store.fleet_page(search="%_")[1]["units"] == 0  # LIKE wildcards are text, not patterns
    assert store.unit_ids("Site A", 2, 3) == store.unit_ids("Site A")[2:5]


def test_pages_of_a_large_fleet_over_http(store: Store) -> None:
    now = datetime(2026, 11, 1, 12, tzinfo=UTC)
    build(store, now)
    for i in range(1, 151):  # more active alerts than one page shows
        store.raise_alert(
            f"k{i}", f"unit-{i % UNITS + 1:03d}", "Site A", "low_stock", "warning", f"m{i}", now
        )
    app = create_app(store, CentralConfig(), FakeClock(now + timedelta(minutes=1)))
    token = make_token(store, "viewer")
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as http:
        first = http.get("/")
        assert first.status_code == 200 and "page 1 of 3" in first.text and 'id="fleet-search"' in first.text
        shown = re.findall(r'<article class="card" id="unit-[^"]+" data-unit="([^"]+)"', first.text)
        assert shown == store.fleet_page(limit=50)[0] and {int(u[-3:]) for u in shown[:5]} == {1, 2, 3, 4, 5}
        assert "No unit matches" in http.get("/", params={"q": "nothing-like-this"}).text
        third = http.get("/", params={"page": 3, "view": "table"})
        assert third.status_code == 200 and third.text.count("<tr data-unit=") == UNITS - 100
        assert http.get("/", params={"page": 0}).status_code == 422
        page = http.get("/api/units", params={"limit": 10, "offset": 5}).json()
        assert [u["id"] for u in page] == store.unit_ids(None, 5, 10)
        assert len(http.get("/api/units").json()) == 100  # the default page, also the largest
        rest = http.get("/api/units", params={"offset": 100}).json()
        assert len(rest) == UNITS - 100 and {u["id"] for u in rest}.isdisjoint(
            u["id"] for u in http.get("/api/units").json()
        )
        too_many = http.get("/api/units", params={"limit": 101})
        assert too_many.status_code == 422 and "at most 100" in too_many.json()["detail"]
        assert http.get("/api/units", params={"site": "Site C"}).json()[0]["site"] == "Site C"
        alerts = http.get("/alerts")
        assert "Active alerts (150)" in alerts.text and "page 1 of 2" in alerts.text
        assert alerts.text.count('class="sev-warning"') == 100
        for path in ("/reports?year=2026", "/reports?fy=2027", "/reports?start=2026-01-03&end=2026-11-02"):
            r = http.get(path)
            assert r.status_code == 200 and 'id="units-hidden"' in r.text, path  # 120 units: pick a site
        one = http.get("/reports", params={"year": 2026, "site": "Site B"})
        assert one.status_code == 200 and 'id="units-hidden"' not in one.text
        assert http.get("/reports", params={"start": "2026-02-01"}).status_code == 422
        year = http.get("/api/reports/year/2026").json()
        assert len(year) == UNITS and sum(r["kits"] for r in year) == UNITS
        page = http.get("/reports", params={"year": 2026}).text  # summed per site in the database
        assert f"{UNITS} units: pick a site" in page and f"({UNITS} kits in all)" in page
        assert (
            sum(r["kits"] for r in http.get("/api/reports/fiscal-year/2026").json()) == 0
        )  # Jul 2025-Jun 2026
        assert (
            http.get("/api/reports/period", params={"start": "2026-03-01", "end": "2026-02-01"}).status_code
            == 422
        )
