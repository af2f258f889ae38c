"""A recall across a fleet of real simulated units (real unit daemons on simulated boards, a real
broker, the real central service): after one API call every unit's first state update carries the
hold, no unit vends a kit of the lot any more, and the lots page shows where the lot is."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from inventory.clock import RealClock
from inventory.service import Service
from nalox.broker import Broker
from nalox.simunit import SimUnit
from tests.inventory.conftest import CHROMIUM_ARGS, central_config, sim_spec, started_units
from tests.inventory.mqttutil import UnitSide
from tests.inventory.staff import api_client
from tests.waiting import wait_for

UNITS = 4
LOT = "DEMO-LOT-1"  # column 1 of every simulated unit


@pytest.fixture
def fleet(broker: Broker, tmp_path: Path) -> Iterator[list[SimUnit]]:
    specs = (sim_spec(f"unit-{i:03d}", f"Site {'AB'[i % 2]}", stock=4, par=2) for i in range(1, UNITS + 1))
    with started_units(specs, broker.port, tmp_path) as units:
        yield units


def test_a_recall_holds_the_lot_on_every_unit_within_one_state_update(
    broker: Broker, tmp_path: Path, fleet: list[SimUnit], artifacts: Path
) -> None:
    db = tmp_path / "central.db"
    cfg = central_config(broker.port, db, "central-recall", 0, enrollment={"from_state": True})
    watch = UnitSide(broker.port, "recall-watch", subscribe=("nalox/v1/+/state",))
    with Service(cfg, RealClock()) as central, api_client(central, "inventory") as http:
        assert central.wait_connected(10)

        def lot_everywhere() -> bool:
            lots = {x["lot"]: x for x in http.get("/api/lots").json()}
            return LOT in lots and len({p["unit"] for p in lots[LOT]["places"]}) == UNITS

        wait_for(lot_everywhere, 60, f"{LOT} listed in all {UNITS} units")
        with watch._lock:
            seen_before = len(watch.received)
        t0 = time.monotonic()
        r = http.post(f"/api/lots/{LOT}/hold", json={"reason": "maker recall 2026-17", "by": "inventory"})
        assert r.status_code == 200 and r.json()["units_told"] == UNITS

        def all_held() -> bool:
            lot = next(x for x in http.get("/api/lots").json() if x["lot"] == LOT)
            return {
                u
                for u, kind, _ in ((h["unit"], h["kind"], h["reason"]) for h in lot["unit_holds"])
                if kind == "recall"
            } == {u.unit_id for u in fleet}

        wait_for(all_held, 30, "every unit's state to show the recall hold at central")
        elapsed = time.monotonic() - t0
        with watch._lock:
            after = watch.received[seen_before:]
        for u in fleet:
            # the hold is applied with its alarm event (seq n): the first state that includes seq n
            # (the next state update after the command) must carry the hold
            n = next(
                e.seq
                for e in u.daemon.ledger.events(event_type="alarm")
                if getattr(e, "code", "") == "lot_held_1" and getattr(e, "state", "") == "raised"
            )
            states = [json.loads(m.payload) for m in after if m.topic == f"nalox/v1/{u.unit_id}/state"]
            states = [st for st in states if st["last_seq"] >= n]
            assert states, f"{u.unit_id} published a state after the recall"
            first = states[0]
            assert [h["lot"] for h in first["holds"]] == [LOT], (
                f"{u.unit_id}: the first state update after the command carries it"
            )
            col1 = next(c for c in first["columns"] if c["column"] == 1)
            assert col1["held"] and "maker recall 2026-17" in col1["held"]
            assert [h.lot for h in u.daemon.ledger.holds()] == [LOT]
        for u in fleet:
            u.press()
        wait_for(lambda: all(u.physical_dropped() >= 1 for u in fleet), 60, "every unit vended a kit")
        # the drop comes a moment before the unit's ledger records it
        wait_for(
            lambda: all(u.daemon.ledger.events(event_type="dispense") for u in fleet),
            30,
            "every unit's ledger recorded its kit",
        )
        for u in fleet:
            lots = [e.lot for e in u.daemon.ledger.events(event_type="dispense")]
            assert lots == ["DEMO-LOT-2"], f"{u.unit_id} vended {lots}: never the recalled lot"
            assert u.physical_stock()[1] == 4, "column 1 (the recalled lot) untouched"
        page = http.get("/lots", params={"lot": LOT}).text
        assert "RECALL HOLD" in page and all(f"/units/{u.unit_id}" in page for u in fleet)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            try:
                pg = browser.new_page(
                    viewport={"width": 1280, "height": 900},
                    extra_http_headers={"Authorization": http.headers["Authorization"]},
                )
                pg.goto(f"{central.url}/lots")
                pg.screenshot(path=str(artifacts / "inventory-recall.png"), full_page=True)
            finally:
                browser.close()
        print(f"recall held on {UNITS} units {elapsed:.2f} s after the API call")
    watch.close()
