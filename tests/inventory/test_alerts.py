"""Alerts on an injected clock: each kind raised when due, published once, cleared when fixed;
the webhook gets each change as JSON (a real HTTP server on a free port)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from inventory.alerts import ALERT_TOPIC, AlertManager
from inventory.clock import FakeClock
from inventory.config import CentralConfig
from inventory.ingest import Incoming, Ingestor
from inventory.store import Store
from schemas.models import Alert, ColumnState, Status, topic
from tests.inventory.conftest import make_config
from tests.inventory.gen import UnitStream, vending_state
from tests.inventory.test_ingest import ingestor


class Published:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    def __call__(self, t: str, body: bytes) -> None:
        assert t == ALERT_TOPIC
        self.alerts.append(Alert.model_validate_json(body))

    def kinds(self, state: str) -> set[tuple[str, str | None]]:
        return {(a.kind, a.unit) for a in self.alerts if a.state == state}


def state(
    unit: str,
    clock: FakeClock,
    stock: tuple[int, int],
    expiry: date | None = None,
    temperature: float = 21.0,
    last_seq: int = 0,
) -> Incoming:
    """The unit's retained state; last_seq is the unit's ledger position (never below what it sent)."""
    cols = [
        ColumnState(column=c, product="naloxone-4mg", capacity=30, par=5, stock=n, lot="LOT-7", expiry=expiry)
        for c, n in ((1, stock[0]), (2, stock[1]))
    ]
    st = vending_state(unit, "Site A", clock.now(), cols, last_seq=last_seq, temperature_c=temperature)
    return Incoming(topic(unit, "state"), st.model_dump_json().encode())


def online(unit: str, clock: FakeClock, up: bool, session: int = 1) -> Incoming:
    s = Status(state="online" if up else "offline", session=session, ts=clock.now())
    return Incoming(topic(unit, "status"), s.model_dump_json().encode())


def setup(store: Store, clock: FakeClock, cfg: CentralConfig) -> tuple[Ingestor, AlertManager, Published]:
    ing, _ = ingestor(store, cfg, clock)
    pub = Published()
    return ing, AlertManager(store, cfg.alerts, clock, pub), pub


def test_each_alert_kind_is_raised_once_and_cleared(store: Store, clock: FakeClock) -> None:
    cfg = make_config(
        2, alerts={"offline_minutes": 10, "no_dispense_hours": 12, "vend_failure_min_attempts": 4}
    )
    ing, mgr, pub = setup(store, clock, cfg)
    soon = clock.now().date() + timedelta(days=20)
    ing.process(
        [
            state("unit-001", clock, (3, 0), expiry=soon, temperature=31.0),
            online("unit-001", clock, True),
            state("unit-002", clock, (20, 20)),
            online("unit-002", clock, True),
        ]
    )
    s = UnitStream("unit-001", "Site A", start=clock.now() - timedelta(hours=20))
    s.restock(0, 1, 3)
    s.restock(0, 2, 1)
    s.vend(1, 2)  # column 2 sold out by a real dispense
    for m in range(4):
        s.vend(10 + m * 5, 1, ok=False)  # 4 failures of 5 attempts
    ing.process([Incoming(t, p) for t, p in s.messages()])
    mgr.run_once()
    assert pub.kinds("raised") == {
        ("low_stock", "unit-001"),
        ("sold_out", "unit-001"),
        ("lot_expiring_30d", "unit-001"),
        ("temperature", "unit-001"),
        ("vend_failure_rate", "unit-001"),
        ("no_dispense", "unit-001"),
    }
    assert mgr.run_once() == [], "an alert already raised is not published again"
    ing.process([online("unit-002", clock, False)])
    clock.advance(9 * 60)
    assert mgr.run_once() == [], "offline for 9 minutes is under the 10-minute threshold"
    clock.advance(2 * 60)
    assert [(a.kind, a.unit, a.severity) for a in mgr.run_once()] == [("offline", "unit-002", "critical")]
    # fixes: unit back online, restocked, cooled down, lot replaced
    ing.process(
        [
            online("unit-002", clock, True, session=2),
            state("unit-001", clock, (20, 20), expiry=soon + timedelta(days=365), last_seq=s.seq),
        ]
    )
    s.restock(60, 1, 20)
    s.restock(60, 2, 20)
    ing.process([Incoming(t, p) for t, p in s.messages()[-2:]])
    cleared = {k for k, _ in (a for a in [(x.kind, x.unit) for x in mgr.run_once() if x.state == "cleared"])}
    assert cleared == {"offline", "low_stock", "sold_out", "lot_expiring_30d", "temperature"}
    active = {a["kind"] for a in store.active_alerts()}
    assert active == {"vend_failure_rate", "no_dispense"}
    history = store.alert_history()
    # expiry: column 1 only (column 2 is sold out: no kit of the expiring lot is left in it)
    assert len(history) == 7 and sum(h["cleared_at"] is not None for h in history) == 5


@pytest.mark.parametrize(
    ("days", "kind", "severity"),
    [
        (-1, "lot_expired", "critical"),
        (25, "lot_expiring_30d", "critical"),
        (45, "lot_expiring_60d", "warning"),
        (80, "lot_expiring_90d", "info"),
    ],
)
def test_expiry_windows(store: Store, clock: FakeClock, days: int, kind: str, severity: str) -> None:
    ing, mgr, pub = setup(store, clock, make_config(1))
    ing.process(
        [
            state("unit-001", clock, (20, 20), expiry=clock.now().date() + timedelta(days=days)),
            online("unit-001", clock, True),
        ]
    )
    mgr.run_once()
    assert {(a.kind, a.severity) for a in pub.alerts} == {(kind, severity)}


class Hook(BaseHTTPRequestHandler):
    bodies: list[bytes] = []
    got = threading.Event()

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        Hook.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(204)
        self.end_headers()
        Hook.got.set()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    Hook.bodies.clear()
    Hook.got.clear()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()
        t.join(5)


def test_webhook_receives_each_alert_change(store: Store, clock: FakeClock, webhook: str) -> None:
    cfg = make_config(1, alerts={"webhook_url": webhook})
    ing, mgr, _ = setup(store, clock, cfg)
    ing.process([state("unit-001", clock, (0, 20)), online("unit-001", clock, True)])
    mgr.run_once()
    assert Hook.got.wait(5)
    alert = Alert.model_validate_json(Hook.bodies[0])
    assert (alert.kind, alert.state, alert.unit) == ("sold_out", "raised", "unit-001")
    assert json.loads(Hook.bodies[0])["alert_id"] == "sold_out:unit-001:1"


def test_a_dead_webhook_never_stops_alerting(store: Store, clock: FakeClock) -> None:
    cfg = make_config(1, alerts={"webhook_url": "http://127.0.0.1:9/nothing-listens-here"})
    ing, mgr, pub = setup(store, clock, cfg)
    ing.process([state("unit-001", clock, (0, 20)), online("unit-001", clock, True)])
    assert [a.kind for a in mgr.run_once()] == ["sold_out"]
    assert len(pub.alerts) == 1


def test_a_unit_that_never_reports_is_offline_after_the_grace(store: Store, clock: FakeClock) -> None:
    _, mgr, pub = setup(store, clock, make_config(1, alerts={"offline_minutes": 15}))
    assert mgr.run_once() == [], "no alert at start-up before the retained status had a chance to arrive"
    clock.advance(16 * 60)
    assert [(a.kind, a.severity) for a in mgr.run_once()] == [("offline", "critical")]
    assert "has not reported since the service started" in pub.alerts[0].message


def test_two_service_processes_publish_each_alert_once(
    store: Store, clock: FakeClock, db_url: tuple[str, str | None]
) -> None:
    """Two alert managers on two connections to one database (as two processes would be)."""
    from inventory.store import open_store

    other = open_store(db_url[0], schema=db_url[1])
    try:
        cfg = make_config(1)
        ing, mgr_a, pub_a = setup(store, clock, cfg)
        pub_b = Published()
        mgr_b = AlertManager(other, cfg.alerts, clock, pub_b)
        ing.process([state("unit-001", clock, (0, 3)), online("unit-001", clock, True)])
        mgr_a.run_once()
        mgr_b.run_once()
        raised = [a.alert_id for a in pub_a.alerts + pub_b.alerts if a.state == "raised"]
        assert sorted(raised) == ["low_stock:unit-001:2", "sold_out:unit-001:1"]
        ing.process([state("unit-001", clock, (20, 20))])
        mgr_b.run_once()
        mgr_a.run_once()
        cleared = [a.alert_id for a in pub_a.alerts + pub_b.alerts if a.state == "cleared"]
        assert sorted(cleared) == ["low_stock:unit-001:2", "sold_out:unit-001:1"]
    finally:
        other.close()


def test_an_alert_is_written_again_only_when_its_words_change(
    store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state's fleet has a thousand active alerts: a pass writes only the new and the changed ones."""
    cfg = make_config(2, alerts={"offline_minutes": 10})
    ing, mgr, _ = setup(store, clock, cfg)
    ing.process([state("unit-001", clock, (3, 0)), online("unit-001", clock, True)])
    ing.process([state("unit-002", clock, (20, 20)), online("unit-002", clock, False)])
    clock.advance(11 * 60)
    mgr.run_once()
    raised: list[str] = []
    real = store.raise_alert
    monkeypatch.setattr(store, "raise_alert", lambda key, *a: raised.append(key) or real(key, *a))
    assert mgr.run_once() == [] and raised == [], "nothing changed: nothing written"
    clock.advance(5 * 60)
    assert mgr.run_once() == [], "a changed message is no new alert"
    assert raised == ["offline:unit-002"], "only the alert whose message changed is written"
    offline = next(a for a in store.active_alerts() if a["kind"] == "offline")
    assert "offline for 16 min" in offline["message"], offline["message"]
