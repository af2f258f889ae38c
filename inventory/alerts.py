"""Alerts evaluated on an injected clock: what should be raised now, diffed against what is raised.

A raised or cleared alert is stored (active_alerts + alert_history), published on
`nalox/v1/_central/alert` (schemas.models.Alert) and optionally POSTed to a webhook. The store
decides who raised it first, so several service processes never publish one alert twice.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from inventory import log
from inventory.clock import Clock
from inventory.config import AlertSettings
from inventory.fleet import UnitView, fleet
from inventory.store import Store, coarsen
from schemas.models import TOPIC_ROOT, Alert

ALERT_TOPIC = f"{TOPIC_ROOT}/_central/alert"
# alerts a person's kit (or failed vend) can cause: their times are kept at the kit-time granularity
KIT_DRIVEN = frozenset({"low_stock", "sold_out", "no_dispense", "vend_failure_rate"})
# unit alarms a press raises (a failed vend, an empty machine, a jam or a miscount during a vend)
PRESS_ALARMS = ("vend_failed", "out_of_stock", "stock_discrepancy_", "column_fault_", "board_unreachable")


def kit_driven(key: str) -> bool:
    """An alert whose time could time a person's kit or press (key: kind:... or unit_alarm:code:unit)."""
    kind, _, rest = key.partition(":")
    return kind in KIT_DRIVEN or (kind == "unit_alarm" and rest.startswith(PRESS_ALARMS))


@dataclass(frozen=True)
class Wanted:
    key: str
    unit: str | None
    site: str | None
    kind: str
    severity: str
    message: str


def evaluate(
    units: list[UnitView],
    store: Store,
    cfg: AlertSettings,
    now: datetime,
    watching_since: datetime | None = None,
) -> list[Wanted]:
    """Every alert that should be active at `now`. A unit that never reported counts as offline
    from `watching_since` (when this service started looking)."""
    last_dispense = store.last_event_ts("dispense")
    window = store.counts_since(now - timedelta(hours=cfg.vend_failure_window_hours))
    wanted: list[Wanted] = []
    for u in units:
        wanted += (
            _connection(u, cfg, now, watching_since or now)
            + _stock(u)
            + _expiry(u, cfg, now)
            + _temperature(u, cfg)
        )
        wanted += _quiet(u, last_dispense.get(u.unit), cfg, now) + _failures(u, window, cfg) + _renumbered(u)
        wanted += [
            Wanted(
                f"unit_alarm:{code}:{u.unit}", u.unit, u.site, "unit_alarm", sev, f"{u.unit}: {code}: {msg}"
            )
            for sev, code, msg in u.alarms
        ]
        wanted += _unit_certificate(u, cfg, now)
    sites = {u.unit: u.site for u in units}
    wanted += _refused(store.quarantine_summary(), sites)
    return wanted


def _unit_certificate(u: UnitView, cfg: AlertSettings, now: datetime) -> list[Wanted]:
    if u.cert_not_after is None:
        return []
    days = (u.cert_not_after - now).total_seconds() / 86400
    if days > cfg.pki_warn_days:
        return []
    return [
        _w(
            "certificate_expiry",
            u,
            "critical" if days <= 7 else "warning",
            f"its MQTT certificate {'expired' if days < 0 else 'expires'} on {u.cert_not_after:%Y-%m-%d} "
            f"({days:.0f} days): issue a new one (deploy/pki/make-certs.sh) before the broker refuses it",
        )
    ]


def pki_alerts(cfg: AlertSettings, files: list[Path], now: datetime) -> list[Wanted]:
    """The CRL's next update and every watched certificate's expiry, `pki_warn_days` ahead. A CRL past
    its next update makes the broker refuse every client; an expired certificate, its holder."""
    out: list[Wanted] = []
    dated: list[tuple[str, Path, datetime | None]] = [("certificate", f, None) for f in files]
    if cfg.crl_file is not None:
        dated.append(("crl", cfg.crl_file, None))
    for kind, path, _ in dated:
        try:
            when = openssl_date(path, kind)
        except (OSError, ValueError) as exc:
            out.append(Wanted(f"pki_unreadable:{path}", None, None, "pki_expiry", "warning",
                              f"cannot read the {kind} {path}: {str(exc)[:200]}"))
            continue
        days = (when - now).total_seconds() / 86400
        if days > cfg.pki_warn_days:
            continue
        what = "CRL's next update" if kind == "crl" else f"certificate {path.name}"
        fix = ("renew it (make-certs.sh DIR crl) and reload the broker, or every client is refused"
               if kind == "crl" else "issue a new one before it is refused")
        severity = "critical" if days <= 7 else "warning"
        out.append(Wanted(f"pki_expiry:{path}", None, None, "pki_expiry", severity,
                          f"the {what} is {when:%Y-%m-%d} ({days:.0f} days): {fix}"))
    return out


def openssl_date(path: Path, kind: str) -> datetime:
    """A certificate's notAfter or a CRL's nextUpdate, read with openssl (no extra Python package)."""
    args = ["openssl", "x509", "-noout", "-enddate"] if kind == "certificate" else [
        "openssl", "crl", "-noout", "-nextupdate"]
    out = subprocess.run([*args, "-in", str(path)], capture_output=True, text=True, timeout=10)
    if out.returncode != 0 or "=" not in out.stdout:
        raise ValueError(out.stderr.strip()[:200] or f"expected a PEM {kind}")
    stamp = out.stdout.strip().split("=", 1)[1]
    return datetime.fromtimestamp(ssl.cert_time_to_seconds(stamp), UTC)


def _refused(summary: dict[tuple[str, str], int], sites: dict[str, str]) -> list[Wanted]:
    """One alert per unit and refusal reason while refused messages sit in quarantine (so a flood of
    refusals raises one alert, not one per message); a unit speaking for another is critical."""
    out = []
    for (unit, reason), n in sorted(summary.items()):
        speaking_for_another = reason == "unit_mismatch"
        out.append(
            Wanted(
                f"refused:{reason}:{unit}",
                unit,
                sites.get(unit),
                "refused_messages",
                "critical" if speaking_for_another else "warning",
                f"{unit}: {n} message(s) refused ({reason.replace('_', ' ')})"
                + ("; the unit spoke for another unit: its certificate may be stolen" if speaking_for_another
                   else "")
                + "; see the quarantine (/api/quarantine) to release or accept them",
            )
        )
    return out


def _w(kind: str, u: UnitView, severity: str, message: str, suffix: str = "") -> Wanted:
    return Wanted(f"{kind}:{u.unit}{suffix}", u.unit, u.site, kind, severity, f"{u.unit}: {message}")


def _connection(u: UnitView, cfg: AlertSettings, now: datetime, watching_since: datetime) -> list[Wanted]:
    if u.online:
        return []
    if u.since is None:
        if (now - watching_since).total_seconds() / 60 < cfg.offline_minutes:
            return []
        return [
            _w(
                "offline",
                u,
                "critical",
                f"has not reported since the service started ({watching_since:%Y-%m-%d %H:%M} UTC)",
            )
        ]
    minutes = (now - u.since).total_seconds() / 60
    if minutes < cfg.offline_minutes:
        return []
    return [
        _w("offline", u, "critical", f"offline for {minutes:.0f} min (since {u.since:%Y-%m-%d %H:%M} UTC)")
    ]


def _stock(u: UnitView) -> list[Wanted]:
    out = []
    for c in u.columns:
        if c.stock == 0:
            out.append(
                _w("sold_out", u, "critical", f"column {c.column} ({c.product}) is sold out", f":{c.column}")
            )
        elif c.stock < c.par:
            out.append(
                _w(
                    "low_stock",
                    u,
                    "warning",
                    f"column {c.column} ({c.product}) has {c.stock} kits, under par {c.par}",
                    f":{c.column}",
                )
            )
    return out


def _expiry(u: UnitView, cfg: AlertSettings, now: datetime) -> list[Wanted]:
    out, today = [], now.date()
    for c in u.columns:
        dated = [s for s in c.segments if s.expiry is not None and s.count > 0]
        first = min(dated, key=lambda s: s.expiry or today) if dated else None
        if first is None or first.expiry is None:
            continue
        lot, expiry = first.lot, first.expiry
        days = (expiry - today).days
        if days > cfg.expiry_days[-1]:
            continue
        if days < 0:
            out.append(
                _w(
                    "lot_expired",
                    u,
                    "critical",
                    f"column {c.column} lot {lot} expired on {expiry}",
                    f":{c.column}",
                )
            )
            continue
        window = next(d for d in cfg.expiry_days if days <= d)
        severity = (
            "critical"
            if window == cfg.expiry_days[0]
            else ("warning" if len(cfg.expiry_days) > 2 and window == cfg.expiry_days[1] else "info")
        )
        out.append(
            _w(
                f"lot_expiring_{window}d",
                u,
                severity,
                f"column {c.column} lot {lot} expires on {expiry} (in {days} days)",
                f":{c.column}",
            )
        )
    return out


def _temperature(u: UnitView, cfg: AlertSettings) -> list[Wanted]:
    t = u.temperature_c
    lo, hi = u.label.storage_min_c, u.label.storage_max_c
    if t is None or lo <= t <= hi:
        return []
    return [
        _w(
            "temperature",
            u,
            "warning",
            f"temperature {t:.1f} °C is outside the label range {lo:g}-{hi:g} °C",
        )
    ]


def _quiet(u: UnitView, last: datetime | None, cfg: AlertSettings, now: datetime) -> list[Wanted]:
    if last is None or now - last < timedelta(hours=cfg.no_dispense_hours):
        return []
    hours = (now - last).total_seconds() / 3600
    return [_w("no_dispense", u, "info", f"no kit dispensed for {hours:.0f} h")]


def _renumbered(u: UnitView) -> list[Wanted]:
    if u.seq_reset_at is None:
        return []
    return [
        _w(
            "seq_reset",
            u,
            "critical",
            "event numbering restarted at the unit (ledger replaced or wiped?) on "
            f"{u.seq_reset_at:%Y-%m-%d %H:%M} UTC: acks to it are paused so it keeps every event; "
            "events are still counted. An operator must reconcile it (docs/inventory.md)",
        )
    ]


def _failures(u: UnitView, window: dict[tuple[str, str], int], cfg: AlertSettings) -> list[Wanted]:
    failed = window.get((u.unit, "vend_failed"), 0)
    attempts = failed + window.get((u.unit, "dispense"), 0)
    if attempts < cfg.vend_failure_min_attempts or failed / attempts <= cfg.vend_failure_rate:
        return []
    return [
        _w(
            "vend_failure_rate",
            u,
            "warning",
            f"{failed} of {attempts} vends failed in the last "
            f"{cfg.vend_failure_window_hours:.0f} h ({100 * failed / attempts:.0f}%)",
        )
    ]


class AlertManager:
    """Runs evaluate() and turns the difference into raised/cleared alerts."""

    def __init__(
        self,
        store: Store,
        cfg: AlertSettings,
        clock: Clock,
        publish: Callable[[str, bytes], None] | None = None,
        products: Mapping[str, Any] | None = None,
        tz: tzinfo = UTC,
        notify: Callable[[Alert], None] | None = None,
        pki_files: list[Path] | None = None,
    ) -> None:
        self.store, self.cfg, self.clock, self.publish = store, cfg, clock, publish
        self.products, self.tz = products, tz
        self.notify = notify  # e-mail digest
        self.pki_files = [*(pki_files or []), *cfg.certificate_files]  # central's own + configured
        self.log = log.get("alerts")
        self.started = clock.now()

    def run_once(self) -> list[Alert]:
        now = self.clock.now()
        wanted = {
            w.key: w
            for w in evaluate(
                fleet(self.store, now, None, self.products, self.tz, rates=False),
                self.store,
                self.cfg,
                now,
                self.started,
            )
        }
        wanted.update({w.key: w for w in pki_alerts(self.cfg, self.pki_files, now)})
        # alert key -> (severity, message) of the active ones: one raised already with the same words
        # is left as it is (a state's fleet has a thousand active alerts: no write for each every pass)
        active = {a["alert_key"]: (a["severity"], a["message"]) for a in self.store.active_alerts()}
        changes: list[Alert] = []
        g = self.store.kit_time_granularity_s

        def when(key: str) -> datetime:
            return coarsen(now, g) if kit_driven(key) else now

        for w in wanted.values():
            if active.get(w.key) == (w.severity, w.message):
                continue
            if self.store.raise_alert(w.key, w.unit, w.site, w.kind, w.severity, w.message, when(w.key)):
                changes.append(
                    Alert(
                        alert_id=w.key,
                        unit=w.unit,
                        site=w.site,
                        kind=w.kind,
                        severity=w.severity,  # type: ignore[arg-type]
                        state="raised",
                        message=w.message,
                        ts=when(w.key),
                    )
                )
        for key in active.keys() - wanted.keys():
            row = self.store.clear_alert(key, when(key))
            if row is not None:
                changes.append(
                    Alert(
                        alert_id=key,
                        unit=row[1],
                        site=row[2],
                        kind=row[3],
                        severity=row[4],
                        state="cleared",
                        message=row[5],
                        ts=when(key),
                    )
                )
        for a in changes:
            self._announce(a)
        return changes

    def _announce(self, a: Alert) -> None:
        # a log line is stamped with the time it is written: for an alert a kit caused (sold out,
        # low stock) that would time the kit, so those go out on MQTT and the webhook (coarse ts) only
        level = self.log.debug if kit_driven(a.alert_id) else self.log.info
        level("alert", **a.model_dump(mode="json"))
        body = a.model_dump_json().encode()
        if self.publish is not None:
            self.publish(ALERT_TOPIC, body)
        if self.cfg.webhook_url:
            post_webhook(self.cfg.webhook_url, body)  # this runs on the alert thread, never on ingest
        if self.notify is not None:
            self.notify(a)


def post_webhook(url: str, body: bytes) -> bool:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 (operator-configured URL)
            ok = 200 <= resp.status < 300
    except OSError as e:
        log.get("alerts").warning("webhook_failed", url=url, error=str(e))
        return False
    if not ok:
        log.get("alerts").warning("webhook_refused", url=url, body=json.loads(body).get("alert_id"))
    return ok
