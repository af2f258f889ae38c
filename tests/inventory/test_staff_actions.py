"""Staff in Chromium against the real central service, a real broker and a real simulated unit: an
operations user locks the unit from its page and sees its answer (audit page and unit ledger both keep
who sent it); an alert is acknowledged and the e-mail digest reaches a real SMTP server (aiosmtpd); a
viewer is refused with a clear page; the SSO header counts only through the trusted proxy; an admin
makes an API token on the admin page and revokes it. Screenshots go to the test artifacts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from playwright.sync_api import Browser, Page, expect

from inventory.service import Service
from nalox.broker import Broker, free_port
from nalox.simunit import SimUnit
from tests.inventory.conftest import heated_unit, make_config, running
from tests.inventory.staff import add_staff, login
from tests.waiting import wait_for

PROXY = "127.0.0.2"  # the county's reverse proxy, as far as the service can tell


class Inbox:
    """aiosmtpd handler: every mail the service sends, parsed."""

    def __init__(self) -> None:
        self.mails: list[Message] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd API)
        with self.lock:
            self.mails.append(message_from_bytes(envelope.content))
        return "250 OK"

    def texts(self) -> list[str]:
        with self.lock:
            return [f"{m['Subject']}\n{m.get_payload(decode=True).decode()}" for m in self.mails]


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox, port = Inbox(), free_port()
    server = Controller(inbox, hostname="127.0.0.1", port=port)
    server.start()
    try:
        yield inbox, port
    finally:
        server.stop()


@pytest.fixture
def central(broker: Broker, tmp_path: Path, smtp: tuple[Inbox, int]) -> Iterator[Service]:
    cfg = make_config(
        3,
        mqtt={"port": broker.port, "client_id": "central-staff", "commands_client_id": "central-staff-cmd"},
        store={"db": str(tmp_path / "central.db")},
        server={"port": 0, "refresh_s": 2, "command_timeout_s": 30, "timezone": "America/Los_Angeles"},
        alerts={
            "interval_s": 0.2,
            "offline_minutes": 0.02,  # units 2 and 3 never report: offline alerts within a second
            "email": {
                "smtp_host": "127.0.0.1",
                "smtp_port": smtp[1],
                "recipients": ["pharmacy@county.example"],
                "digest_minutes": 0.02,
            },
        },
        auth={"sso": {"trusted_proxies": [f"{PROXY}/32"], "group_roles": {"facilities": "operations"}}},
    )
    with running(cfg) as svc:
        yield svc


@pytest.fixture
def real_unit(broker: Broker, tmp_path: Path) -> Iterator[SimUnit]:
    with heated_unit(broker.port, tmp_path, par=2) as u:
        yield u


def send(page: Page, form: str, **fields: str) -> None:
    """Fill one action form on the unit page and submit it; the page comes back with the command."""
    for name, value in fields.items():
        page.locator(f"#{form} [name={name}]").fill(value)
    page.locator(f"#{form} button").click()
    page.wait_for_url("**/units/unit-001?sent=*")


def answer_of(page: Page, name: str, status: str = "ok") -> Any:
    row = page.locator("#command-log tr[data-command]").filter(has_text=name).first
    expect(row).to_have_attribute("data-status", status, timeout=20_000)  # the page polls while "sent"
    return row


def test_operations_user_locks_the_unit_from_its_page_and_sees_the_answer(
    central: Service,
    real_unit: SimUnit,
    browser: Browser,
    artifacts: Path,
) -> None:
    assert central.store is not None
    add_staff(central.store, "olivia", "operations")
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{central.url}/login")
    expect(page.get_by_label("User name")).to_be_visible()
    page.screenshot(path=str(artifacts / "inventory-login.png"), full_page=True)
    login(page, central.url or "", "olivia")
    page.goto(f"{central.url}/units/unit-001")
    expect(page.locator("h2 .pill")).to_have_text("online", timeout=20_000)
    send(page, "lock-form", reason="recount after a jam")
    sent = page.locator("#command-log tr[data-command]").first
    expect(sent).to_contain_text("lock")
    expect(sent).to_contain_text("olivia")
    row = answer_of(page, "lock")
    expect(row.locator(".answer")).to_contain_text("mode: locked")
    expect(page.locator("#unit-mode")).to_have_text("locked", timeout=20_000)
    send(page, "test-vend-form")
    expect(answer_of(page, "test_vend").locator(".answer")).to_contain_text("dropped")
    wait_for(lambda: real_unit.physical_dropped() == 1, 20, "the board to drop the test kit")
    send(page, "diag-form")
    report = answer_of(page, "diag").locator("table.report")
    expect(report).to_contain_text("sensors.door")
    expect(report).to_contain_text("pass")
    page.screenshot(path=str(artifacts / "inventory-unit-actions.png"), full_page=True)
    send(page, "unlock-form", reason="recounted, all good")
    answer_of(page, "unlock")
    expect(page.locator("#unit-mode")).to_have_text("vending", timeout=20_000)

    page.goto(f"{central.url}/audit?target=unit-001")
    lock_rows = page.locator('#audit tr[data-action="command_lock"]')
    expect(lock_rows).to_have_count(2)  # sent, then the unit's answer
    expect(lock_rows.and_(page.locator('[data-outcome="sent"]'))).to_contain_text("olivia (operations)")
    answered = lock_rows.and_(page.locator('[data-outcome="answered"]'))
    expect(answered).to_contain_text("olivia")
    expect(answered).to_contain_text('"mode": "locked"')
    expect(answered).to_contain_text("recount after a jam")
    expect(page.locator("#audit")).to_contain_text("PST")  # the county's zone, named
    page.screenshot(path=str(artifacts / "inventory-audit.png"), full_page=True)

    remembered = {c.name: c for c in real_unit.daemon.reporter.commands.memory.history()}
    lock = remembered["lock"]
    assert lock.issued_by == "olivia" and lock.answer.status == "ok", "the unit's ledger keeps the sender"
    assert lock.command is not None and lock.command["reason"] == "recount after a jam"
    assert lock.answer.result == {"mode": "locked"}
    assert remembered["test_vend"].issued_by == "olivia"
    assert not [e for e in errors if "favicon" in e or "Uncaught" in e], errors
    page.close()


def submit_as_if_the_form_were_there(page: Page, action: str, fields: dict[str, str]) -> None:
    """A viewer's browser posting an action (a stale tab, or a hand-made request) with its own CSRF token."""
    page.evaluate(
        """([action, fields]) => {
            const f = document.createElement('form'); f.method = 'post'; f.action = action;
            const csrf = document.querySelector('meta[name=csrf-token]').content;
            for (const [k, v] of Object.entries(Object.assign({csrf_token: csrf}, fields))) {
                const i = document.createElement('input');
                i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i);
            }
            document.body.appendChild(f); f.submit();
        }""",
        [action, fields],
    )


def test_alert_acknowledged_mailed_and_a_viewer_refused(
    central: Service,
    smtp: tuple[Inbox, int],
    browser: Browser,
    artifacts: Path,
) -> None:
    inbox = smtp[0]
    assert central.store is not None
    add_staff(central.store, "ivan", "inventory")
    add_staff(central.store, "vera", "viewer")
    wait_for(lambda: any("unit-002" in t and "unit-003" in t for t in inbox.texts()), 20, "the digest mail")
    first = inbox.texts()
    assert len(first) == 1, "three units offline, one digest mail"
    assert first[0].count("raised: critical:") == 3 and "has not reported" in first[0]

    viewer = browser.new_page()
    login(viewer, central.url or "", "vera")
    viewer.goto(f"{central.url}/alerts")
    expect(viewer.locator('#active-alerts tr[data-kind="offline"]')).to_have_count(3)
    expect(viewer.locator("#active-alerts form")).to_have_count(0)  # no follow-up forms for a viewer
    key = viewer.locator('#active-alerts tr[data-kind="offline"]').first.get_attribute("data-key") or ""
    submit_as_if_the_form_were_there(viewer, "/alerts/action", {"alert_key": key, "action": "acknowledge"})
    expect(viewer.locator("#refusal")).to_contain_text("this needs the inventory role")
    expect(viewer.locator("#refusal")).to_contain_text("vera with the viewer role")
    viewer.close()

    phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    errors: list[str] = []
    phone.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    login(phone, central.url or "", "vera")
    phone.goto(f"{central.url}/?view=table")
    expect(phone.locator("#fleet-table tr[data-unit]")).to_have_count(3)
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the unit table must fit a phone without sideways scrolling, is {width}px wide"
    phone.screenshot(path=str(artifacts / "inventory-phone-table.png"), full_page=True)
    assert not errors, errors
    phone.close()

    page = browser.new_page()
    login(page, central.url or "", "ivan")
    page.goto(f"{central.url}/alerts")
    row = page.locator('#active-alerts tr[data-kind="offline"]').filter(has_text="unit-002")
    row.get_by_label("Note").fill("jail IT is rebooting the switch")
    with page.expect_response(
        lambda r: r.url == f"{central.url}/alerts" and r.request.resource_type == "fetch"
    ):
        pass  # the page's next self-refresh: the typed note must survive it
    expect(row.get_by_label("Note")).to_have_value("jail IT is rebooting the switch")
    row.locator("form.ack button").click()
    row = page.locator('#active-alerts tr[data-kind="offline"]').filter(has_text="unit-002")
    expect(row.locator(".acked")).to_contain_text("Acknowledged by ivan")
    expect(row.locator(".acked")).to_contain_text("jail IT is rebooting the switch")
    wait_for(lambda: any("acknowledged by ivan" in t for t in inbox.texts()), 20, "the acknowledgement mail")
    ack_mail = next(t for t in inbox.texts() if "acknowledged by ivan" in t)
    assert "jail IT is rebooting the switch" in ack_mail and "unit-002" in ack_mail
    assert central.store is not None
    from inventory.audit import AuditTrail

    acks = AuditTrail(central.store).entries(action="alert_acknowledge")
    assert [(e.actor, e.after["note"]) for e in acks] == [("ivan", "jail IT is rebooting the switch")]
    assert len(AuditTrail(central.store).entries(action="refused", actor="vera")) == 1
    page.close()


class _Proxy(BaseHTTPRequestHandler):
    """The county's SSO proxy: it authenticated `sam` (group facilities) and forwards from PROXY."""

    target = ""

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        headers |= {"X-Remote-User": "sam", "X-Remote-Groups": "facilities", "X-Forwarded-For": "10.20.0.7"}
        transport = httpx.HTTPTransport(local_address=PROXY)
        with httpx.Client(transport=transport, timeout=10) as client:
            r = client.request(self.command, self.target + self.path, headers=headers, content=body)
        self.send_response(r.status_code)
        for k, v in r.headers.items():
            if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(r.content)))
        self.end_headers()
        self.wfile.write(r.content)

    do_GET = do_POST = _forward  # noqa: N815

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def proxy(central: Service) -> Iterator[str]:
    handler = type("Proxy", (_Proxy,), {"target": central.url})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, name="sso-proxy")
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        t.join(5)


def test_sso_only_through_the_proxy_and_an_api_token_made_and_revoked(
    central: Service,
    proxy: str,
    browser: Browser,
    artifacts: Path,
) -> None:
    forged = browser.new_page(extra_http_headers={"X-Remote-User": "sam", "X-Remote-Groups": "facilities"})
    forged.goto(central.url or "")
    expect(
        forged.locator("#login-form")
    ).to_be_visible()  # the header straight from a browser counts for nothing
    forged.close()
    via = browser.new_page()
    via.goto(f"{proxy}/units/unit-001")
    expect(via.locator("#who")).to_contain_text("sam (operations)")
    expect(via.locator("#lock-form")).to_be_visible()
    via.close()

    assert central.store is not None
    add_staff(central.store, "ada", "admin")
    page = browser.new_page()
    login(page, central.url or "", "ada")
    page.goto(f"{central.url}/admin")
    page.get_by_label("Name").fill("county BI export")
    page.locator("form[action='/admin/tokens'] select[name=role]").select_option("viewer")
    page.locator("form[action='/admin/tokens'] button").click()
    token = page.locator("#new-token code").inner_text()
    assert token.startswith("nalox_")
    auth = {"Authorization": f"Bearer {token}"}
    units = httpx.get(f"{central.url}/api/units", headers=auth, timeout=10)
    assert units.status_code == 200 and {u["id"] for u in units.json()} == {
        "unit-001",
        "unit-002",
        "unit-003",
    }
    page.goto(f"{central.url}/admin")
    row = page.locator("#tokens tr[data-token]").filter(has_text="county BI export")
    expect(row).to_contain_text("viewer")
    expect(row).not_to_contain_text("never")  # last used: just now
    row.locator("button").click()
    expect(page.locator("#tokens tr[data-token]").filter(has_text="county BI export")).to_contain_text(
        "revoked"
    )
    assert httpx.get(f"{central.url}/api/units", headers=auth, timeout=10).status_code == 401
    page.close()
