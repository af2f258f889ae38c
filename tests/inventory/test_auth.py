"""Staff accounts without a browser, on an injected clock: lock-out, rate limit, idle sessions, CSRF,
roles, the SSO header from the trusted proxy only, API tokens (hashed, revocable), the audit trail."""

from __future__ import annotations

import re
import subprocess
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from inventory.accounts import AccountError, Accounts, sha256
from inventory.audit import Actor, AuditTrail
from inventory.clock import FakeClock, RealClock
from inventory.config import CentralConfig
from inventory.service import Service
from inventory.store import Store
from inventory.web import create_app
from nalox.broker import Broker
from tests.inventory.conftest import make_config
from tests.inventory.staff import PASSWORD, add_staff, make_token

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SSO = {
    "trusted_proxies": ["127.0.0.2/32"],
    "group_roles": {"facilities": "operations", "staff": "viewer"},
}


def config(**auth: object) -> CentralConfig:
    return make_config(1, auth={"max_failed_logins": 3, "lockout_minutes": 15, **auth})


@pytest.fixture
def app_of(store: Store, clock: FakeClock) -> Iterator[object]:
    def make(cfg: CentralConfig | None = None, peer: str = "10.1.1.9") -> TestClient:
        cfg = cfg or config()
        store.sync_config_units([(u.id, u.site, u.name) for u in cfg.units], clock.now())
        return TestClient(create_app(store, cfg, clock), client=(peer, 40000), follow_redirects=False)

    yield make


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html) or re.search(
        r'name="csrf-token" content="([^"]+)"', html
    )
    assert m, "the page carries a CSRF token"
    return m.group(1)


def sign_in(c: TestClient, name: str, password: str = PASSWORD) -> object:
    form = c.get("/login").text
    return c.post(
        "/login", data={"username": name, "password": password, "csrf_token": csrf_of(form), "next": "/"}
    )


def test_lock_out_after_failures_and_idle_sessions_end(store: Store, clock: FakeClock, app_of) -> None:  # type: ignore[no-untyped-def]
    add_staff(store, "ivan", "inventory")
    c = app_of()
    assert c.get("/").status_code == 303 and c.get("/").headers["location"].startswith("/login")
    for _ in range(2):
        r = sign_in(c, "ivan", "not the password")
        assert r.status_code == 401 and "Wrong user name or password." in r.text
    r = sign_in(c, "ivan", "not the password")
    assert "now locked for 15 minutes" in r.text
    r = sign_in(c, "ivan")
    assert r.status_code == 401 and "locked after repeated failed sign-ins" in r.text, (
        "even the right password"
    )
    clock.advance(16 * 60)
    r = sign_in(c, "ivan")
    assert (
        r.status_code == 303
        and "HttpOnly" in r.headers["set-cookie"]
        and "SameSite=lax" in r.headers["set-cookie"]
    )
    assert c.get("/").status_code == 200
    clock.advance(29 * 60)
    assert c.get("/").status_code == 200, "used within the idle timeout: still signed in"
    clock.advance(31 * 60)
    assert c.get("/").status_code == 303, "idle past 30 minutes: signed out"
    outcomes = [(e.action, e.outcome, e.detail) for e in AuditTrail(store).entries(action="login")][::-1]
    assert outcomes == [
        ("login", "refused", "wrong"),
        ("login", "refused", "wrong"),
        ("login", "refused", "locked_now"),
        ("login", "refused", "locked"),
        ("login", "ok", None),
    ]
    assert all(e.source == "10.1.1.9" for e in AuditTrail(store).entries())


def test_failed_logins_from_one_address_are_rate_limited(store: Store, app_of) -> None:  # type: ignore[no-untyped-def]
    add_staff(store, "ivan", "inventory")
    c = app_of(config(login_attempts_per_ip=4, max_failed_logins=100))
    for i in range(4):
        assert sign_in(c, f"guess{i}", "wrong password").status_code == 401
    r = sign_in(c, "ivan")
    assert r.status_code == 429 and "Too many failed sign-ins from this address" in r.text
    assert sign_in(app_of(config(login_attempts_per_ip=4), peer="10.1.1.10"), "ivan").status_code == 303


def test_roles_csrf_and_logout(store: Store, app_of) -> None:  # type: ignore[no-untyped-def]
    add_staff(store, "vera", "viewer")
    c = app_of()
    assert sign_in(c, "vera").status_code == 303
    page = c.get("/units/unit-001").text
    assert "Commands to the unit need the operations role" in page and 'id="lock-form"' not in page
    r = c.post("/units/unit-001/commands", data={"name": "lock", "reason": "x", "csrf_token": csrf_of(page)})
    assert r.status_code == 403 and "this needs the operations role" in r.text
    r = c.post(
        "/api/alerts/action",
        json={"alert_key": "k", "action": "acknowledge"},
        headers={"X-CSRF-Token": csrf_of(page)},
    )
    assert (
        r.status_code == 403 and r.json()["needed_role"] == "inventory" and r.json()["your_role"] == "viewer"
    )
    r = c.post("/logout", data={})
    assert r.status_code == 403 and "no CSRF token" in r.text, "logout without the token is refused too"
    r = c.post("/logout", data={"csrf_token": "0" * 40})
    assert r.status_code == 403 and "CSRF token is wrong" in r.text
    assert c.post("/logout", data={"csrf_token": csrf_of(page)}).status_code == 303
    assert c.get("/").status_code == 303, "the session ended at logout"
    refused = AuditTrail(store).entries(action="refused")
    assert len(refused) == 4 and all(e.actor == "vera" for e in refused)
    assert [e.action for e in AuditTrail(store).entries(actor="vera")][:1] == ["logout"]


def test_sso_header_is_believed_only_from_the_trusted_proxy(store: Store, app_of) -> None:  # type: ignore[no-untyped-def]
    cfg = config(sso=SSO)
    sam = {"X-Remote-User": "sam", "X-Remote-Groups": "staff, facilities", "X-Forwarded-For": "10.9.9.9"}
    direct = app_of(cfg, peer="127.0.0.1")
    assert direct.get("/", headers=sam).status_code == 303, "a forged header from elsewhere is ignored"
    assert direct.get("/api/units", headers=sam).status_code == 401
    proxy = app_of(cfg, peer="127.0.0.2")
    page = proxy.get("/units/unit-001", headers=sam)
    assert page.status_code == 200 and "sam (operations)" in page.text
    assert proxy.get("/", headers={"X-Remote-User": "kim", "X-Remote-Groups": "payroll"}).status_code == 403
    r = proxy.post("/units/unit-001/commands", headers=sam, data={"name": "lock", "reason": "x"})
    assert r.status_code == 403 and "no CSRF token" in r.text, "SSO requests need the CSRF token too"
    e = AuditTrail(store).entries(actor="sam")[0]
    assert (e.via, e.source, e.outcome) == ("sso", "10.9.9.9", "refused"), "the forwarded client address"


def test_api_tokens_are_hashed_scoped_and_revocable(store: Store, clock: FakeClock, app_of) -> None:  # type: ignore[no-untyped-def]
    c = app_of()
    secret = make_token(store, "viewer", "county BI")
    auth = {"Authorization": f"Bearer {secret}"}
    units = c.get("/api/units", headers=auth)
    assert units.status_code == 200 and [u["id"] for u in units.json()] == ["unit-001"]
    with store.tx() as tx:
        stored = tx.rows("SELECT token_hash FROM api_tokens")
    assert stored == [(sha256(secret),)] and secret not in str(stored), "only the hash is kept"
    r = c.post("/api/units/unit-001/accept-gap", headers=auth, json={"through_seq": 1, "reason": "x"})
    assert r.status_code == 403 and r.json()["needed_role"] == "inventory", (
        "a viewer token cannot change data"
    )
    token = Accounts(store).tokens()[0]
    assert token.last_used_at == clock.now()
    Accounts(store).revoke_token(token.id, clock.now())
    r = c.get("/api/units", headers=auth)
    assert r.status_code == 401 and "unknown or revoked" in r.json()["detail"]
    assert c.get("/reports/monthly.csv", headers=auth).status_code == 401
    assert c.get("/healthz").status_code in (200, 503), "/healthz stays open"
    with pytest.raises(AccountError, match="revoked already"):
        Accounts(store).revoke_token(token.id, clock.now())


def test_the_audit_trail_filters_and_exports(store: Store, clock: FakeClock, app_of) -> None:  # type: ignore[no-untyped-def]
    add_staff(store, "ivan", "inventory")
    c = app_of()
    sign_in(c, "ivan")
    clock.advance(600)
    secret = make_token(store, "inventory", "gap script")
    with store.tx() as tx:  # the unit reported seq 5: a gap may be accepted only up to it (issue 11)
        tx.execute("UPDATE units SET reported_last_seq = 5 WHERE unit = 'unit-001'")
    r = c.post(
        "/api/units/unit-001/accept-gap",
        headers={"Authorization": f"Bearer {secret}"},
        json={"through_seq": 2, "reason": "restored backup"},
    )
    assert r.status_code == 200
    gap = c.get("/api/audit", params={"action": "gap_accept"}).json()
    assert len(gap) == 1 and gap[0]["actor"] == "token:gap script" and gap[0]["via"] == "token"
    assert gap[0]["before"] == {"acked_seq": 0} and gap[0]["after"]["through_seq"] == 2
    assert gap[0]["detail"] == "restored backup"
    csv_text = c.get("/audit.csv", params={"actor": "ivan"}).text
    assert csv_text.splitlines()[0].startswith("at,actor,role,via,source,action")
    assert len(csv_text.splitlines()) == 2 and ",login," in csv_text
    page = c.get("/audit", params={"target": "unit-001"}).text
    assert 'data-action="gap_accept"' in page and 'data-action="login"' not in page
    tomorrow = (clock.now() + timedelta(days=2)).date().isoformat()
    assert "No entry matches these filters." in c.get("/audit", params={"since": tomorrow}).text


def test_every_route_but_healthz_login_and_static_needs_a_session_or_token(store: Store, app_of) -> None:  # type: ignore[no-untyped-def]
    c = app_of()
    open_paths = {"/healthz", "/login", "/favicon.ico", "/static"}
    checked = 0
    from inventory.web import admin, alerts, audit, ingest, reports, session, units

    routers = (session.router, units.pages, units.api, alerts.pages, alerts.api, reports.pages, reports.csv)
    routers += (reports.api, audit.pages, audit.api, admin.pages, ingest.router)
    routes = [(r.path, r.methods) for router in routers for r in router.routes]  # type: ignore[attr-defined]
    routes += [("/docs", {"GET"}), ("/openapi.json", {"GET"})]
    for path, methods in routes:
        if path in open_paths:
            continue
        url = path.replace("{unit}", "unit-001").replace("{name}", "lock").replace("{event_id}", "e")
        url = url.replace("{token_id}", "t").replace("{path}", "x")
        for m in set(methods) - {"HEAD"}:
            r = c.request(m, url, headers={"Accept": "application/json"})
            assert r.status_code == 401, f"{m} {path} answered {r.status_code} without credentials"
            checked += 1
    assert checked >= 33


def test_served_over_tls_the_session_cookie_is_secure(broker: Broker, tmp_path: Path) -> None:
    cert, key = tmp_path / "dash.crt", tmp_path / "dash.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    cfg = make_config(
        1,
        mqtt={"port": broker.port, "client_id": "central-tls"},
        store={"db": str(tmp_path / "central.db")},
        server={"port": 0, "tls_cert_file": str(cert), "tls_key_file": str(key)},
    )
    with Service(cfg, RealClock()) as central:
        assert central.url and central.url.startswith("https://")
        assert central.store is not None
        add_staff(central.store, "ivan", "inventory")
        with httpx.Client(base_url=central.url, verify=str(cert), timeout=10) as c:
            assert c.get("/healthz").status_code in (200, 503)
            form = c.get("/login").text
            assert "Secure" in c.get("/login").headers["set-cookie"]
            r = c.post(
                "/login",
                data={"username": "ivan", "password": PASSWORD, "csrf_token": csrf_of(form), "next": "/"},
            )
            assert r.status_code == 303
            cookie = r.headers["set-cookie"]
            assert "nalox_session=" in cookie and "Secure" in cookie and "HttpOnly" in cookie
        with pytest.raises(httpx.HTTPError):
            httpx.get(central.url.replace("https://", "http://") + "/healthz", timeout=5)


def test_the_database_refuses_to_change_or_remove_an_audit_entry(store: Store, clock: FakeClock) -> None:
    trail = AuditTrail(store)
    trail.record(Actor("ivan", "inventory", "password", "10.0.0.1"), "alert_acknowledge", clock.now(), "u:k")
    for sql in ("UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"):
        with pytest.raises(Exception, match="append-only"), store.tx() as tx:
            tx.execute(sql)
    assert [(e.actor, e.action) for e in trail.entries()] == [("ivan", "alert_acknowledge")]
    if store.dialect == "postgresql":
        with pytest.raises(Exception, match="append-only"), store.tx() as tx:
            tx.execute("TRUNCATE audit_log")
    assert len(trail.entries()) == 1


def test_alert_follow_up_assign_and_snooze_over_the_api(store: Store, clock: FakeClock, app_of) -> None:  # type: ignore[no-untyped-def]
    c = app_of()
    add_staff(store, "ivan", "inventory")
    store.raise_alert(
        "low_stock:unit-001:1", "unit-001", "Site B", "low_stock", "warning", "C1 low", clock.now()
    )
    auth = {"Authorization": f"Bearer {make_token(store, 'inventory', 'night desk')}"}
    r = c.post(
        "/api/alerts/action",
        headers=auth,
        json={"alert_key": "low_stock:unit-001:1", "action": "assign", "assignee": "ivan"},
    )
    assert r.status_code == 200 and r.json()["follow_up"]["assignee"] == "ivan"
    assert 'id="alert-count"' in c.get("/alerts", headers=auth).text
    r = c.post(
        "/api/alerts/action",
        headers=auth,
        json={"alert_key": "low_stock:unit-001:1", "action": "snooze", "minutes": 0},
    )
    assert r.status_code == 422 and "1 to 10080 minutes" in r.json()["detail"]
    r = c.post(
        "/api/alerts/action",
        headers=auth,
        json={"alert_key": "low_stock:unit-001:1", "action": "snooze", "minutes": 60},
    )
    assert r.status_code == 200
    assert 'id="alert-count"' not in c.get("/alerts", headers=auth).text, "a snoozed alert leaves the badge"
    active = c.get("/api/alerts", headers=auth).json()["active"][0]["follow_up"]
    assert active["assignee"] == "ivan" and active["snoozed_until"].startswith(
        (clock.now() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    )
    r = c.post("/api/alerts/action", headers=auth, json={"alert_key": "gone", "action": "acknowledge"})
    assert r.status_code == 404 and "expected an active alert" in r.json()["detail"]
    trail = [
        (e.action, e.before["assignee"] if e.before else None)
        for e in AuditTrail(store).entries(actor="token:night desk")
    ]
    assert trail == [("alert_snooze", "ivan"), ("alert_assign", None)]
