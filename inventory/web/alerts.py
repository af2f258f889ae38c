"""Alerts and restock discrepancies: their pages, the resolve form, and their JSON API."""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from inventory.views import describe
from inventory.web.deps import Ctx, render
from inventory.web.models import AlertHistoryOut, AlertOut, AlertsOut, DiscrepancyOut

pages = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api", tags=["alerts"])

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


ALERTS_PAGE_SIZE = 100  # active alerts per page (a state's fleet can have a thousand at once)


@pages.get("/alerts", response_class=HTMLResponse)
def alerts_page(
    ctx: Ctx,
    request: Request,
    page_no: int = Query(1, alias="page", ge=1, le=10_000),
    kind: str | None = Query(None, max_length=50),
) -> HTMLResponse:
    """Active alerts, the most severe first, a page at a time (of one kind or all), and recent history."""
    everything = ctx.store.active_alerts()
    kinds = sorted({a["kind"] for a in everything})
    active = sorted(
        (a for a in everything if kind is None or a["kind"] == kind),
        key=lambda a: (SEVERITY_ORDER.get(a["severity"], 3), a["message"]),
    )
    per = ALERTS_PAGE_SIZE
    return render(
        ctx,
        request,
        "alerts.html",
        "alerts",
        active=active[(page_no - 1) * per : page_no * per],
        total=len(active),
        page_no=page_no,
        pages=max(1, -(-len(active) // per)),
        kind=kind,
        kinds=kinds,
        history=ctx.store.alert_history(100),
    )


@pages.get("/discrepancies", response_class=HTMLResponse)
def discrepancies_page(ctx: Ctx, request: Request) -> HTMLResponse:
    rows = ctx.store.restocks_with_discrepancy()
    return render(
        ctx,
        request,
        "discrepancies.html",
        "discrepancies",
        open=[e for e, at in rows if at is None],
        resolved=[(e, at) for e, at in rows if at],
    )


@pages.post("/discrepancies/{unit}/{event_id}/resolve")
async def resolve(ctx: Ctx, request: Request, unit: str, event_id: str) -> RedirectResponse:
    # a plain HTML form post, parsed here (python-multipart is not a dependency)
    note = parse_qs((await request.body()).decode("utf-8", "replace")).get("note", [""])[0]
    ctx.store.resolve_discrepancy(unit, event_id, note[:200] or None, ctx.clock.now())
    return RedirectResponse("/discrepancies", status_code=303)


@api.get("/alerts", response_model=AlertsOut)
def api_alerts(ctx: Ctx) -> AlertsOut:
    """The active alerts and the last 100 raised (with when each was cleared)."""
    return AlertsOut(
        active=[AlertOut.model_validate(a) for a in ctx.store.active_alerts()],
        history=[AlertHistoryOut.model_validate(a) for a in ctx.store.alert_history(100)],
    )


@api.get("/discrepancies", response_model=list[DiscrepancyOut])
def api_discrepancies(ctx: Ctx) -> list[DiscrepancyOut]:
    """Restocks whose blind count differed from the ledger, newest first, with their resolution time."""
    return [
        DiscrepancyOut(
            unit=e.unit,
            event_id=e.event_id,
            seq=e.seq,
            ts=e.ts.isoformat(),
            summary=describe(e),
            resolved_at=at,
        )
        for e, at in ctx.store.restocks_with_discrepancy()
    ]
