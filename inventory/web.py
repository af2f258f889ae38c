"""The dashboard and JSON API: FastAPI with server-rendered Jinja2 pages (no JavaScript build step),
self-refreshing, usable on a phone; OpenAPI docs at /docs and /openapi.json."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel

from inventory import log, reports
from inventory.clock import Clock
from inventory.config import CentralConfig
from inventory.fleet import ColumnView, UnitView, fleet
from inventory.store import Store
from inventory.views import ago, bar_chart, daily_series, describe

TEMPLATES = Path(__file__).resolve().parent / "templates"


class ColumnOut(BaseModel):
    column: int
    product: str
    stock: int
    par: int
    capacity: int
    lot: str | None
    expiry: date | None


class UnitOut(BaseModel):
    id: str
    site: str
    name: str | None
    online: bool
    status: str
    status_since: str | None
    stock: dict[int, int]
    columns: list[ColumnOut]
    temperature_c: float | None
    outbox_depth: int | None
    acked_seq: int
    last_seq: int
    days_left: float | None


class AcceptGap(BaseModel):
    through_seq: int
    reason: str


class EventOut(BaseModel):
    seq: int
    event_id: str
    type: str
    ts: str
    payload: dict[str, Any]


def unit_out(u: UnitView) -> UnitOut:
    return UnitOut(
        id=u.unit,
        site=u.site,
        name=u.name,
        online=u.online,
        status=u.status,
        status_since=u.since.isoformat() if u.since else None,
        stock={c.column: c.stock for c in u.columns},
        columns=[
            ColumnOut(
                column=c.column,
                product=c.product,
                stock=c.stock,
                par=c.par,
                capacity=c.capacity,
                lot=c.lot,
                expiry=c.expiry,
            )
            for c in u.columns
        ],
        temperature_c=u.temperature_c,
        outbox_depth=u.outbox_depth,
        acked_seq=u.acked_seq,
        last_seq=u.last_seq,
        days_left=round(u.days_left, 1) if u.days_left is not None else None,
    )


def attention(u: UnitView) -> tuple[int, str, str]:
    """Units that need someone first: offline, then sold out, then under par, then the rest."""
    levels = {c.level for c in u.columns}
    rank = 0 if not u.online else 1 if "out" in levels else 2 if "low" in levels else 3
    return rank, u.site, u.unit


def create_app(
    store: Store, config: CentralConfig, clock: Clock, runtime: Callable[[], dict[str, Any]] | None = None
) -> FastAPI:
    app = FastAPI(
        title="nalox central inventory",
        version="1",
        description="Fleet stock, events, alerts and reports for naloxone vending units.",
    )
    templates = Jinja2Templates(directory=str(TEMPLATES))
    runtime = runtime or (lambda: {})

    def ingest_summary() -> dict[str, Any]:
        c, rejects = store.counters(), store.rejects()
        return {
            "messages": c.get("messages", 0),
            "events": c.get("events_inserted", 0),
            "duplicates": c.get("events_duplicate", 0),
            "rejected": sum(r["count"] for r in rejects.values()),
            "by_reason": sorted((reason, r["count"]) for reason, r in rejects.items()),
        }

    def page(request: Request, name: str, page_name: str, refresh: bool = True, **ctx: Any) -> HTMLResponse:
        now = clock.now()
        base = {
            "now": now,
            "page": page_name,
            "refresh": config.server.refresh_s if refresh else None,
            "alert_count": len(store.active_alerts()),
            "ingest": ingest_summary(),
            "broker_connected": runtime().get("mqtt_connected", True),
            "ago": lambda t: ago(t, now),
            "describe": describe,
        }
        return templates.TemplateResponse(request, name, base | ctx)

    def find_unit(unit: str) -> UnitView:
        u = next((u for u in fleet(store, clock.now()) if u.unit == unit), None)
        if u is None:
            raise HTTPException(404, f"expected a known unit id, got {unit!r}")
        return u

    def expiring(u: UnitView) -> list[tuple[ColumnView, int]]:
        today, horizon = clock.now().date(), config.alerts.expiry_days[-1]
        out = [(c, c.expires_in_days(today)) for c in u.columns]
        return [(c, d) for c, d in out if d is not None and d <= horizon]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def fleet_page(request: Request, site: str | None = None, view: str = "cards") -> HTMLResponse:
        everything = sorted(fleet(store, clock.now()), key=attention)
        units = [u for u in everything if site is None or u.site == site]
        active = [a for a in store.active_alerts() if site is None or a["site"] == site]
        alerts_by_unit: dict[str, int] = {}
        for a in active:
            alerts_by_unit[a["unit"]] = alerts_by_unit.get(a["unit"], 0) + 1
        return page(
            request,
            "fleet.html",
            "fleet",
            units=units,
            sites=sorted({u.site for u in everything}),
            site=site,
            view="table" if view == "table" else "cards",
            alerts_by_unit=alerts_by_unit,
            online=sum(u.online for u in units),
            kits_total=sum(u.total_stock for u in units),
            kits_week=sum(u.dispenses_recent for u in units),
            critical=sum(a["severity"] == "critical" for a in active),
            warning=sum(a["severity"] == "warning" for a in active),
            expiring=expiring,
            last_kit=store.last_event_ts("dispense"),
            tmin=config.alerts.temperature_min_c,
            tmax=config.alerts.temperature_max_c,
        )

    @app.get("/units/{unit}", response_class=HTMLResponse, include_in_schema=False)
    def unit_page(request: Request, unit: str, before: int | None = None) -> HTMLResponse:
        u, days, limit = find_unit(unit), 30, 100
        today = clock.now().date()
        counts = store.daily_counts("dispense", clock.now() - timedelta(days=days + 1))
        series = daily_series({d: n for (un, d), n in counts.items() if un == unit}, today, days)
        return page(
            request,
            "unit.html",
            "unit",
            u=u,
            days=days,
            limit=limit,
            chart=bar_chart(series, f"kits dispensed per day at {unit}"),
            events=store.events(unit, limit=limit, before_seq=before),
        )

    @app.get("/alerts", response_class=HTMLResponse, include_in_schema=False)
    def alerts_page(request: Request) -> HTMLResponse:
        order = {"critical": 0, "warning": 1, "info": 2}
        active = sorted(store.active_alerts(), key=lambda a: (order.get(a["severity"], 3), a["message"]))
        return page(request, "alerts.html", "alerts", active=active, history=store.alert_history(100))

    @app.get("/discrepancies", response_class=HTMLResponse, include_in_schema=False)
    def discrepancies_page(request: Request) -> HTMLResponse:
        rows = store.restocks_with_discrepancy()
        return page(
            request,
            "discrepancies.html",
            "discrepancies",
            open=[e for e, at in rows if at is None],
            resolved=[(e, at) for e, at in rows if at],
        )

    @app.post("/discrepancies/{unit}/{event_id}/resolve", include_in_schema=False)
    async def resolve(request: Request, unit: str, event_id: str) -> RedirectResponse:
        # a plain HTML form post, parsed here (python-multipart is not a dependency)
        note = parse_qs((await request.body()).decode("utf-8", "replace")).get("note", [""])[0]
        store.resolve_discrepancy(unit, event_id, note[:200] or None, clock.now())
        return RedirectResponse("/discrepancies", status_code=303)

    @app.get("/reports", response_class=HTMLResponse, include_in_schema=False)
    def reports_page(request: Request) -> HTMLResponse:
        monthly = reports.monthly(store)
        return page(
            request,
            "reports.html",
            "reports",
            refresh=False,
            tz=config.reports.timezone,
            monthly=monthly,
            site_month=reports.rollup(monthly, ("month", "site")),
            yearly_site=reports.rollup(monthly, ("year", "site")),
            yearly_unit=reports.rollup(monthly, ("year", "site", "unit")),
            funnel=reports.funnel(monthly),
        )

    @app.get("/reports/monthly.csv", response_class=PlainTextResponse, tags=["reports"])
    def monthly_csv() -> Response:
        """Kits, doses, test vends, vend failures and the video funnel per month, site and unit."""
        return Response(
            reports.monthly_csv(store),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="nalox-monthly.csv"'},
        )

    @app.get("/reports/yearly.csv", response_class=PlainTextResponse, tags=["reports"])
    def yearly_csv() -> Response:
        """The same counts per year, site and unit."""
        return Response(
            reports.yearly_csv(store),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="nalox-yearly.csv"'},
        )

    @app.get("/api/reports/monthly", tags=["reports"])
    def monthly_json() -> list[dict[str, Any]]:
        return reports.monthly(store)

    @app.get("/api/reports/yearly", tags=["reports"])
    def yearly_json() -> list[dict[str, Any]]:
        return reports.yearly(store)

    @app.get("/api/reports/funnel", tags=["reports"])
    def funnel_json() -> dict[str, Any]:
        return reports.funnel(reports.monthly(store))

    @app.get("/api/units", tags=["units"])
    def api_units() -> list[UnitOut]:
        """Every unit: id, site, online state and stock per column."""
        return [unit_out(u) for u in fleet(store, clock.now())]

    @app.get("/api/units/{unit}", tags=["units"])
    def api_unit(unit: str) -> UnitOut:
        return unit_out(find_unit(unit))

    @app.get("/api/units/{unit}/events", tags=["units"])
    def api_events(
        unit: str,
        limit: int = Query(100, ge=1, le=1000),
        before_seq: int | None = None,
        type: str | None = None,
    ) -> list[EventOut]:  # noqa: A002 (query parameter name)
        """A unit's events, newest first; page with before_seq."""
        find_unit(unit)

        return [
            EventOut(
                seq=e.seq,
                event_id=e.event_id,
                type=e.type,
                ts=e.ts.isoformat(),
                payload=json.loads(e.payload),
            )
            for e in store.events(unit, limit=limit, before_seq=before_seq, type_=type)
        ]

    @app.post("/api/units/{unit}/accept-gap", tags=["units"])
    def accept_gap(unit: str, body: AcceptGap) -> dict[str, Any]:
        """Give up on missing seqs up to `through_seq` (the unit no longer has them, e.g. after the
        central database was restored from a backup). Recorded with the reason; acks resume past it."""
        find_unit(unit)
        if not body.reason.strip():
            raise HTTPException(422, "expected a reason for giving up on events, got an empty one")
        missing = store.accept_gap(unit, body.through_seq, body.reason.strip()[:500], clock.now())
        log.get("web").warning(
            "gap_accepted", unit=unit, through_seq=body.through_seq, missing=missing, reason=body.reason[:200]
        )
        p = store.advance_acked(unit)
        return {
            "unit": unit,
            "given_up": missing,
            "acked_seq": p.acked_seq,
            "gaps": store.accepted_gaps(unit),
        }

    @app.get("/api/alerts", tags=["alerts"])
    def api_alerts() -> dict[str, Any]:
        return {"active": store.active_alerts(), "history": store.alert_history(100)}

    @app.get("/api/discrepancies", tags=["alerts"])
    def api_discrepancies() -> list[dict[str, Any]]:
        return [
            {
                "unit": e.unit,
                "event_id": e.event_id,
                "seq": e.seq,
                "ts": e.ts.isoformat(),
                "summary": describe(e),
                "resolved_at": at,
            }
            for e, at in store.restocks_with_discrepancy()
        ]

    @app.get("/api/ingest", tags=["ingest"])
    def api_ingest() -> dict[str, Any]:
        """Ingest counters, refused messages per reason (with the last detail), open seq gaps."""
        return {"counters": store.counters(), "rejected": store.rejects(), **runtime()}

    @app.get("/healthz", tags=["ingest"])
    def healthz() -> Response:
        info = runtime()
        try:
            version = store.schema_version()
        except Exception as e:
            body = json.dumps({"ok": False, "error": f"database: {type(e).__name__}"})
            return Response(body, 503, media_type="application/json")
        ok = info.get("mqtt_connected", True)
        body = json.dumps({"ok": bool(ok), "schema_version": version, "mqtt_connected": bool(ok)})
        return Response(body, 200 if ok else 503, media_type="application/json")

    return app
