"""Issue 11 on the central side: payloads that validate but were never expected, bounds on seq and ts,
the quarantine and its alerts, replay back-off, normalised storage, CSV cells against formulas."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from inventory.alerts import evaluate, pki_alerts
from inventory.clock import FakeClock
from inventory.config import CentralConfig
from inventory.fleet import fleet
from inventory.ingest import Incoming
from inventory.reports import cell, to_csv
from inventory.store import Store
from schemas.models import MAX_SEQ, ColumnState
from tests.controller.mqtt.certs import MAKE_CERTS
from tests.inventory.conftest import make_config
from tests.inventory.gen import vending_state
from tests.inventory.test_ingest import fed_without, good_event, ingestor


def restock(seq: int, **changes: object) -> Incoming:
    t, good = good_event(seq=seq)
    return Incoming(t, json.dumps({**json.loads(good), **changes}).encode())


def test_seq_beyond_2_pow_53_is_quarantined_not_counted(
    store: Store, config: CentralConfig, clock: FakeClock
) -> None:
    ing, _ = ingestor(store, config, clock)
    r = ing.process([restock(1), restock(MAX_SEQ + 1, event_id="unit-001-huge-seq"), restock(10**15 * 10**4)])
    assert (r.inserted, r.rejected) == (1, 2)
    assert store.count_events(unit="unit-001") == 1
    held = store.quarantined()
    assert {q["reason"] for q in held} == {"invalid_payload"} and all(q["seq"] is None for q in held)
    assert store.accept_gap("unit-001", 1, "nothing beyond", clock.now()) == 0


def test_ts_without_zone_or_outside_the_window_is_quarantined(store: Store, clock: FakeClock) -> None:
    config = make_config(ingest={"gap_timeout_s": 30})  # the default window: 900 s ahead, 400 days back
    ing, rec = ingestor(store, config, clock)
    now = clock.now()
    naive = now.replace(tzinfo=None).isoformat()
    r = ing.process([
        restock(1, ts=naive),
        restock(2, ts=(now + timedelta(days=365 * 73)).isoformat()),  # 2099
        restock(3, ts="9999-12-31T23:59:59+00:00"),
        restock(4, ts=(now - timedelta(days=401)).isoformat()),
        restock(5, ts=(now + timedelta(seconds=60)).isoformat()),  # a clock a minute fast is fine
    ])
    assert (r.inserted, r.rejected) == (1, 4)
    reasons = sorted(q["reason"] for q in store.quarantined())
    assert reasons == ["invalid_payload", "ts_out_of_window", "ts_out_of_window", "ts_out_of_window"]
    assert {q["seq"] for q in store.quarantined()} == {1, 2, 3, 4}


def test_quarantine_raises_one_alert_per_unit_and_reason_critical_for_another_unit(
    store: Store, config: CentralConfig, clock: FakeClock
) -> None:
    ing, _ = ingestor(store, config, clock)
    ing.process([restock(n, unit="unit-002") for n in range(1, 50)] + [restock(60, schema_version=7)])
    wanted = {w.key: w for w in evaluate(fleet(store, clock.now()), store, config.alerts, clock.now())}
    refused = {k: w for k, w in wanted.items() if w.kind == "refused_messages"}
    assert set(refused) == {"refused:unit_mismatch:unit-001", "refused:unknown_schema_version:unit-001"}
    assert refused["refused:unit_mismatch:unit-001"].severity == "critical"
    assert "49 message(s)" in refused["refused:unit_mismatch:unit-001"].message
    assert refused["refused:unknown_schema_version:unit-001"].severity == "warning"


def test_quarantine_of_a_flood_stays_bounded(store: Store, clock: FakeClock) -> None:
    config = make_config(ingest={"gap_timeout_s": 30, "quarantine_per_unit": 5})
    ing, _ = ingestor(store, config, clock)
    ing.process([restock(n, unit="unit-002") for n in range(1, 40)])
    held = store.quarantined()
    assert len(held) == 5 and sum(q["count"] for q in held) == 39


def test_replays_back_off_and_wait_while_the_missing_event_is_quarantined(
    store: Store, config: CentralConfig, clock: FakeClock
) -> None:
    ing, rec, s, msgs = fed_without(store, config, clock, range(3, 4), seed=3, vends=3)
    times = []
    for second in range(0, 1000):
        clock.advance(1)
        if ing.tick():
            times.append(second + 1)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert times[0] == 30 and gaps == [60, 120, 240, 480], times  # twice as long each time
    # the missing event arrives but is refused (a field a newer unit adds): no more replay requests
    t3, p3 = msgs[2]
    ing.process([Incoming(t3, json.dumps({**json.loads(p3), "new_field": 1}).encode())])
    assert [q["seq"] for q in store.quarantined()] == [3]
    clock.advance(3600)
    assert ing.tick() == [], "the same event would be refused again: wait for staff"
    q = store.quarantined()[0]
    store.resolve_quarantine(q["id"], "released", "central upgraded", clock.now())
    clock.advance(3600)
    assert [r.from_seq for r in ing.tick()] == [3], "released: the unit is asked for it again"


def test_replay_requests_ask_only_for_what_is_missing_a_bounded_range_at_a_time(
    store: Store, clock: FakeClock
) -> None:
    ing, rec = ingestor(store, make_config(ingest={"gap_timeout_s": 30, "replay_max_seqs": 100}), clock)
    ing.process([restock(n) for n in (1, 2, 8, 9, 10, 500)])  # missing: 3..7 and 11..499
    clock.advance(31)
    (r,) = ing.tick()
    assert (r.from_seq, r.to_seq) == (3, 7), "only the first hole, up to the next stored seq"
    assert json.loads(rec.sent[-1][1])["to_seq"] == 7, "the bound goes on the wire"
    ing.process([restock(n) for n in range(3, 8)])
    for first in (11, 111):  # a long hole: 100 seqs per request, the next request after the next timeout
        clock.advance(31)
        (r,) = ing.tick()
        assert (r.from_seq, r.to_seq) == (first, first + 99)
        ing.process([restock(n) for n in range(first, first + 100)])
    assert store.unit("unit-001").acked_seq == 210  # type: ignore[union-attr]


def test_lax_input_is_stored_normalised_and_every_reader_copes(
    store: Store, config: CentralConfig, clock: FakeClock
) -> None:
    """`"added": "3"` passes lax validation; central stores the typed model, not the text."""
    ing, _ = ingestor(store, config, clock)
    assert ing.process([restock(1, added="3", stock_after="3")]).inserted == 1
    (e,) = store.events("unit-001")
    stored = json.loads(e.payload)
    assert stored["added"] == 3 and stored["stock_after"] == 3 and stored["source"] == "local"


def test_csv_cells_that_a_spreadsheet_would_run_are_escaped() -> None:
    assert [cell(v) for v in ("=HYPERLINK(1)", "+1", "-2", "@SUM", "\tx", "Site A", 5, -3)] == [
        "'=HYPERLINK(1)", "'+1", "'-2", "'@SUM", "'\tx", "Site A", 5, -3,
    ]
    text = to_csv([{"site": "=cmd|' /C calc'!A0", "kits": 2}], ("site", "kits"))
    assert text.splitlines()[1].startswith("'=cmd") or text.splitlines()[1].startswith("\"'=cmd")



def test_central_warns_30_days_before_the_crl_or_a_certificate_expires(
    store: Store, config: CentralConfig, clock: FakeClock, tmp_path: Path
) -> None:
    root = tmp_path / "pki"
    env = {**os.environ, "NALOX_CRL_DAYS": "20", "NALOX_CERT_DAYS": "20"}
    for args in (["init"], ["service", "inventory"], ["unit", "unit-001"]):
        subprocess.run(["sh", str(MAKE_CERTS), str(root), *args], check=True, capture_output=True, env=env)
    now = datetime.now(UTC)
    cfg = config.alerts.model_copy(update={"crl_file": root / "device-ca" / "crl.pem"})
    central_cert = root / "clients" / "inventory" / "inventory.crt"
    wanted = {w.key: w for w in pki_alerts(cfg, [central_cert, root / "server-ca" / "ca.crt"], now)}
    assert set(wanted) == {f"pki_expiry:{root / 'device-ca' / 'crl.pem'}", f"pki_expiry:{central_cert}"}
    assert all(w.severity == "warning" and "(20 days)" in w.message for w in wanted.values()), wanted
    later = {w.key: w for w in pki_alerts(cfg, [central_cert], now + timedelta(days=15))}
    assert all(w.severity == "critical" for w in later.values())
    calm = config.alerts.model_copy(update={"pki_warn_days": 10})
    assert pki_alerts(calm, [central_cert], now) == []


def test_a_unit_reporting_its_certificate_expiry_in_state_raises_an_alert(
    store: Store, config: CentralConfig, clock: FakeClock
) -> None:
    ing, _ = ingestor(store, config, clock)
    body = {
        "unit": "unit-001", "site": "Site B", "ts": clock.now().isoformat(), "mode": "vending",
        "config_version": "1", "columns": [], "outbox_depth": 0, "last_seq": 0,
        "cert_not_after": (clock.now() + timedelta(days=12)).isoformat(),
    }
    assert ing.process([Incoming("nalox/v1/unit-001/state", json.dumps(body).encode())]).rejected == 0
    wanted = {w.key: w for w in evaluate(fleet(store, clock.now()), store, config.alerts, clock.now())}
    assert wanted["certificate_expiry:unit-001"].severity == "warning"
    assert "(12 days)" in wanted["certificate_expiry:unit-001"].message


def test_nul_in_any_string_is_refused_not_a_failed_batch(
    store: Store, config: CentralConfig, clock: FakeClock
) -> None:
    """PostgreSQL text cannot hold U+0000: found by test_any_valid_payload on PostgreSQL."""
    ing, _ = ingestor(store, config, clock)
    r = ing.process([restock(1, event_id="unit-001-\x00-0001"), restock(2, lot="A\x00B"), restock(3)])
    assert (r.inserted, r.rejected) == (1, 2)
    assert {q["reason"] for q in store.quarantined()} == {"invalid_payload"}


def test_staff_release_or_accept_quarantined_events_over_the_api(
    store: Store, config: CentralConfig, clock: FakeClock
) -> None:
    from fastapi.testclient import TestClient

    from inventory.web import create_app
    from tests.inventory.staff import make_token

    ing, _ = ingestor(store, config, clock)
    ing.process([restock(1), restock(2, new_field=1), restock(3), restock(4, schema_version=2)])
    assert store.advance_acked("unit-001").acked_seq == 1
    http = TestClient(create_app(store, config, clock))
    viewer = {"Authorization": f"Bearer {make_token(store, 'viewer', 'v')}"}
    staff = {"Authorization": f"Bearer {make_token(store, 'inventory', 's')}"}
    held = http.get("/api/quarantine", headers=viewer).json()
    by_seq = {q["seq"]: q for q in held}
    assert set(by_seq) == {2, 4} and all("new_field" not in json.dumps(q) for q in held)
    two, four = by_seq[2]["id"], by_seq[4]["id"]
    assert http.post(f"/api/quarantine/{two}/accept", headers=viewer, json={"reason": "x"}).status_code == 403
    form = http.post(f"/api/quarantine/{two}/accept", headers={**staff, "content-type": "text/plain"},
                     content=b'{"reason": "x"}')
    assert form.status_code in (415, 422)
    r = http.post(f"/api/quarantine/{two}/accept", headers=staff, json={"reason": "a field of a newer unit"})
    assert r.status_code == 200 and r.json()["state"] == "accepted"
    assert store.advance_acked("unit-001").acked_seq == 3, "accepted as a gap: the ack moves past it"
    again = http.post(f"/api/quarantine/{two}/release", headers=staff, json={"reason": "twice"})
    assert again.status_code == 409 and "already accepted" in again.json()["detail"]
    r = http.post(f"/api/quarantine/{four}/release", headers=staff, json={"reason": "central upgraded"})
    assert r.status_code == 200 and r.json()["state"] == "released"
    assert http.get("/api/quarantine", headers=viewer).json() == []


def test_a_sensor_fault_reading_is_no_history_and_never_fails_the_batch(
    store: Store, config: CentralConfig, clock: FakeClock
) -> None:
    """A telemetry `temperature_c` of 1e308 is schema-valid (a broken sensor can say anything): it must
    not enter the temperature history, whose bucket sum would overflow on PostgreSQL and fail every
    event of the batch with it."""
    ing, _ = ingestor(store, config, clock)
    now = clock.now()

    def telemetry(celsius: float) -> Incoming:
        body = {"unit": "unit-001", "ts": now.isoformat(), "temperature_c": celsius, "uptime_s": 5,
                "outbox_depth": 0}
        return Incoming("nalox/v1/unit-001/telemetry", json.dumps(body).encode())

    r = ing.process([telemetry(1e308), telemetry(1e308), restock(1), telemetry(22.5)])
    assert r.inserted == 1 and store.count_events(unit="unit-001") == 1
    history = store.temperatures("unit-001", now - timedelta(days=1))
    assert [(lo, hi) for _, lo, _, hi in history] == [(22.5, 22.5)]


def test_a_state_naming_one_column_twice_is_quarantined_not_a_failed_batch(
    store: Store, config: CentralConfig, clock: FakeClock
) -> None:
    """Found by test_any_valid_payload: a state listing column 7 twice broke the unit's column table
    (a unique key) and failed the whole ingest batch on both backends."""
    ing, _ = ingestor(store, config, clock)
    col = ColumnState(column=7, product="nasal-4mg", capacity=10, par=2, stock=5)
    good = vending_state("unit-001", "Site A", clock.now(), [col])
    twice = json.loads(good.model_dump_json())
    twice["columns"] = [twice["columns"][0], twice["columns"][0]]
    r = ing.process([
        Incoming("nalox/v1/unit-001/state", json.dumps(twice).encode()),
        restock(1),
        Incoming("nalox/v1/unit-001/state", good.model_dump_json().encode()),
    ])
    assert r.inserted == 1 and r.rejected == 1
    assert [q["reason"] for q in store.quarantined()] == ["invalid_payload"]
    (unit,) = fleet(store, clock.now(), only=["unit-001"])
    assert [c.column for c in unit.columns].count(7) == 1, "the good state came through after the bad one"
