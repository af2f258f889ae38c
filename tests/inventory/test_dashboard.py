"""The dashboard in headless Chromium fed by a real simulated unit (board, link, daemon, mpv, reporter)
through a real broker: its stock changes after a vend and a low-stock alert appears; screenshots are
saved as test artifacts. Plus the JSON API and CSV over HTTP."""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, expect

from inventory.alerts import ALERT_TOPIC
from inventory.service import Service
from nalox.broker import Broker
from nalox.simunit import SimUnit
from schemas.models import Alert, topic
from tests.inventory.conftest import central_config, heated_unit, running
from tests.inventory.gen import UnitStream
from tests.inventory.mqttutil import UnitSide
from tests.inventory.staff import add_staff, api_client, login
from tests.waiting import wait_for


@pytest.fixture
def central(broker: Broker, tmp_path: Path) -> Iterator[Service]:
    db = tmp_path / "central.db"
    cfg = central_config(broker.port, db, "central-dash", server={"refresh_s": 2}, alerts={"interval_s": 0.2})
    with running(cfg) as svc:
        yield svc


@pytest.fixture
def feed(broker: Broker) -> Iterator[UnitSide]:
    """A publisher speaking as the units (their streams are made up by tests.inventory.gen)."""
    side = UnitSide(broker.port, "feeder")
    yield side
    side.close()


def now_stream(unit: str, site: str) -> UnitStream:
    """A history over the last three weeks, ending now, so the chart and the rates are live."""
    s = UnitStream(unit, site, start=datetime.now(UTC) - timedelta(days=21))
    s.random_day(random.Random(hash(unit) % 1000), days=20, vends=25)
    return s


@pytest.fixture
def real_unit(broker: Broker, tmp_path: Path) -> Iterator[SimUnit]:
    """unit-001 is a real simulated unit: 2 columns of 5 kits, par 5."""
    with heated_unit(broker.port, tmp_path, par=5) as u:
        yield u


def stock_on_page(card: Locator) -> dict[int, int]:
    cols = card.locator("[data-column]")
    return {
        int(cols.nth(i).get_attribute("data-column") or 0): int(cols.nth(i).locator(".stock").inner_text())
        for i in range(cols.count())
    }


def test_dashboard_fed_by_a_real_unit_shows_a_vend_and_a_low_stock_alert(
    central: Service, broker: Broker, real_unit: SimUnit, browser: Browser, artifacts: Path
) -> None:
    feed = UnitSide(broker.port, "feeder", subscribe=(ALERT_TOPIC,))
    try:
        for s in (
            now_stream(f"unit-{i:03d}", f"Site {'AB'[i % 2]}") for i in (2, 3)
        ):  # two more, from history
            feed.publish_all(
                [
                    (topic(s.unit, "status"), s.status(datetime.now(UTC)).model_dump_json().encode()),
                    (topic(s.unit, "state"), s.state(datetime.now(UTC)).model_dump_json().encode()),
                ],
                retain=True,
            )
            feed.publish_all(s.messages())
        assert central.store is not None
        add_staff(central.store, "vera", "viewer")
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        login(page, central.url or "", "vera")
        page.goto(central.url or "")
        card = page.locator("#unit-unit-001")
        expect(card.locator(".pill")).to_have_text("online", timeout=20_000)
        expect(card.locator(".stock").first).to_have_text("5", timeout=20_000)
        assert stock_on_page(card) == {1: 5, 2: 5}
        real_unit.press()  # a person presses, watches the clip, takes a kit
        wait_for(lambda: real_unit.physical_dropped() == 1, 30, "the board to drop one kit")
        expect(card.locator(".col.low")).to_have_count(1, timeout=20_000)  # the page refreshed itself
        physical = real_unit.physical_stock()
        assert stock_on_page(card) == physical and sum(physical.values()) == 9
        low_col = next(c for c, n in physical.items() if n == 4)
        page.goto(f"{central.url}/alerts")
        low = page.locator('#active-alerts tr[data-kind="low_stock"]', has_text="unit-001")
        expect(low).to_contain_text(f"column {low_col}", timeout=15_000)
        expect(low).to_contain_text("under par 5")
        wait_for(
            lambda: any(
                Alert.model_validate_json(m.payload).kind == "low_stock" for m in feed.messages(ALERT_TOPIC)
            ),
            10,
            "the low-stock alert on MQTT",
        )
        page.screenshot(path=str(artifacts / "inventory-alerts.png"), full_page=True)
        page.goto(central.url or "")
        expect(page.locator("#alert-count")).to_be_visible()
        page.screenshot(path=str(artifacts / "inventory-fleet.png"), full_page=True)
        page.goto(f"{central.url}/units/unit-001")
        expect(page.locator("svg.chart")).to_be_visible()
        expect(page.locator("#events")).to_contain_text("stock now 4; via video")
        page.screenshot(path=str(artifacts / "inventory-unit.png"), full_page=True)
        page.goto(f"{central.url}/reports")
        expect(page.locator("#monthly-site")).to_contain_text("Site B")
        page.screenshot(path=str(artifacts / "inventory-reports.png"), full_page=True)
        phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
        login(phone, central.url or "", "vera")
        phone.goto(central.url or "")
        expect(phone.locator("#unit-unit-001 .col.low")).to_have_count(1)
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the fleet page must fit a phone without sideways scrolling, is {width}px wide"
        phone.screenshot(path=str(artifacts / "inventory-phone.png"), full_page=True)
        phone.close()
        page.close()
    finally:
        feed.close()


def test_api_and_csv_over_http(central: Service, feed: UnitSide) -> None:
    s = now_stream("unit-002", "Site A")
    feed.publish_all(
        [(topic(s.unit, "state"), s.state(datetime.now(UTC)).model_dump_json().encode())] + s.messages()
    )
    with api_client(central) as http:
        wait_for(
            lambda: (
                len(http.get("/api/units/unit-002/events", params={"limit": 1000}).json()) == len(s.events)
            ),
            20,
            "all events over the API",
        )
        units = {u["id"]: u for u in http.get("/api/units").json()}
        assert set(units) == {"unit-001", "unit-002", "unit-003"}
        assert units["unit-002"]["stock"] == {str(c): n for c, n in s.stock.items()}
        assert units["unit-002"]["site"] == "Site A"
        rows = list(csv.DictReader(io.StringIO(http.get("/reports/monthly.csv").text)))
        assert sum(int(r["kits"]) for r in rows if r["unit"] == "unit-002") == sum(s.kits.values())
        spec = http.get("/openapi.json").json()
        assert {"/api/units", "/api/units/{unit}/events", "/healthz"} <= set(spec["paths"])
        assert http.get("/healthz").json()["ok"] is True
        assert http.get("/api/units/nope/events").status_code == 404
        assert http.get("/docs").status_code == 200
        for path in ("/", "/alerts", "/discrepancies", "/reports", "/units/unit-002"):
            assert http.get(path).status_code == 200, path


def test_restock_discrepancy_is_listed_until_resolved_and_refusals_show(
    central: Service, feed: UnitSide
) -> None:
    s = UnitStream("unit-003", "Site B", start=datetime.now(UTC) - timedelta(hours=1))
    s.restock(0, 1, 10)
    s.restock(30, 1, 20, counted_before=8)  # the ledger expected 10, the technician counted 8
    feed.publish_all(s.messages() + [(topic("unit-003", "event", "door"), b"{not json")])
    with api_client(central) as http:
        wait_for(lambda: len(http.get("/api/discrepancies").json()) == 1, 20, "one discrepancy")
        page = http.get("/discrepancies").text
        assert "blind count 8 vs expected 10 (-2)" in page
        event_id = http.get("/api/discrepancies").json()[0]["event_id"]
        r = http.post(
            f"/discrepancies/unit-003/{event_id}/resolve",
            content="note=recounted+OK",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 303
        assert http.get("/api/discrepancies").json()[0]["resolved_at"] is not None
        assert 'id="open-discrepancies"' in http.get("/discrepancies").text
        assert "None open." in http.get("/discrepancies").text
        wait_for(lambda: "malformed json: 1" in http.get("/").text, 10, "the refusal on the dashboard")
        assert http.get("/api/ingest").json()["rejected"]["malformed_json"]["count"] == 1


def test_accept_gap_over_the_api(central: Service, feed: UnitSide) -> None:
    s = now_stream("unit-003", "Site B")
    msgs = s.messages()
    feed.publish_all(msgs[:3] + msgs[4:])  # seq 4 never arrives
    with api_client(central) as http:
        wait_for(lambda: http.get("/api/units/unit-003").json()["acked_seq"] == 3, 20, "ack stops at 3")
        assert (
            http.post("/api/units/unit-003/accept-gap", json={"through_seq": 4, "reason": " "}).status_code
            == 422
        )
        beyond = http.post(
            "/api/units/unit-003/accept-gap", json={"through_seq": s.seq + 1, "reason": "too far"}
        )
        assert beyond.status_code == 409 and f"at most {s.seq}" in beyond.json()["detail"], beyond.text
        for kind in ("text/plain", None):  # what a cross-site form or fetch can send without asking
            headers = {"content-type": kind} if kind else {}
            form = http.post(
                "/api/units/unit-003/accept-gap",
                content=b'{"through_seq": 4, "reason": "csrf"}',
                headers=headers,
            )
            assert form.status_code in (415, 422), (kind, form.text)
        assert http.get("/api/units/unit-003").json()["acked_seq"] == 3, "refused calls changed nothing"
        r = http.post(
            "/api/units/unit-003/accept-gap", json={"through_seq": 4, "reason": "lost in a restore"}
        )
        assert r.status_code == 200, r.text
        assert r.json()["given_up"] == 1 and r.json()["acked_seq"] == s.seq


def test_pages_warn_when_the_service_loses_the_broker(central: Service, broker: Broker) -> None:
    with api_client(central) as http:
        assert 'class="banner"' not in http.get("/").text
        broker.kill()  # the broker crashes
        wait_for(lambda: 'class="banner"' in http.get("/").text, 20, "the stale-data banner")
        assert http.get("/healthz").status_code == 503
        broker.start()
        wait_for(
            lambda: 'class="banner"' not in http.get("/").text, 30, "the banner to go after reconnecting"
        )
        assert http.get("/healthz").status_code == 200
