"""Alerts and restock discrepancies: their pages, the follow-up forms (acknowledge, assign, snooze,
resolve), and their JSON API. Every change is audited."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from inventory import alert_actions
from inventory.store import StoreError
from inventory.views import describe
from inventory.web.auth import InventoryStaff, Principal, Viewer, require
from inventory.web.deps import Ctx, WebContext, form_of, refused_as, render
from inventory.web.models import (
    AlertAction,
    AlertActionOut,
    AlertHistoryOut,
    AlertOut,
    AlertsOut,
    DiscrepancyOut,
)

pages = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api", tags=["alerts"], dependencies=[Depends(require("viewer"))])

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
MAX_SNOOZE_MINUTES = 7 * 24 * 60


ALERTS_PAGE_SIZE = 100  # active alerts per page (a state's fleet can have a thousand at once)


@pages.get("/alerts", response_class=HTMLResponse)
def alerts_page(
    ctx: Ctx,
    who: Viewer,
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
        who,
        active=active[(page_no - 1) * per : page_no * per],
        total=len(active),
        page_no=page_no,
        pages=max(1, -(-len(active) // per)),
        kind=kind,
        kinds=kinds,
        history=ctx.store.alert_history(100),
        follow={k[0]: v for k, v in alert_actions.follow_ups(ctx.store).items()},
        staff=[u.name for u in ctx.accounts.users() if not u.disabled],
    )


def act_on_alert(ctx: WebContext, who: Principal, body: AlertAction) -> dict[str, object]:
    """Acknowledge (with a note), assign or snooze one active alert; audited with before and after."""
    now = ctx.clock.now()
    changes: dict[str, object] = {}
    if body.action == "acknowledge":
        changes = {"acked_by": who.name, "acked_at": now, "note": (body.note or "").strip()[:500] or None}
    elif body.action == "assign":
        changes = {"assignee": (body.assignee or "").strip()[:64] or None}
    elif body.action == "snooze":
        minutes = body.minutes or 0
        if not 1 <= minutes <= MAX_SNOOZE_MINUTES:
            raise HTTPException(422, f"expected a snooze of 1 to {MAX_SNOOZE_MINUTES} minutes, got {minutes}")
        changes = {"snoozed_until": now + timedelta(minutes=minutes)}
    with refused_as(404, StoreError):
        alert, before, after = alert_actions.update(ctx.store, body.alert_key, changes)  # type: ignore[arg-type]
    ctx.audit.record(
        who.actor,
        f"alert_{body.action}",
        now,
        target=f"{alert['unit'] or '-'}:{body.alert_key}",
        before=before.as_dict(),
        after=after,
        detail=alert["message"],
    )
    if ctx.email is not None and body.action == "acknowledge":
        note = f": {after['note']}" if after.get("note") else ""
        ctx.email.add(f"acknowledged by {who.name}: {alert['message']}{note}")
    return {"alert": alert, "follow_up": after}


@pages.post("/alerts/action")
async def alert_action_form(ctx: Ctx, who: InventoryStaff, request: Request) -> RedirectResponse:
    form = await form_of(request)
    try:
        body = AlertAction.model_validate(
            {
                "alert_key": form.get("alert_key", ""),
                "action": form.get("action", ""),
                "note": form.get("note"),
                "assignee": form.get("assignee"),
                "minutes": int(form["minutes"]) if form.get("minutes", "").strip().isdigit() else None,
            }
        )
    except ValueError as e:
        raise HTTPException(422, f"expected an alert key and an action, got {str(e)[:200]}") from e
    act_on_alert(ctx, who, body)
    return RedirectResponse("/alerts", status_code=303)


@api.post("/alerts/action", response_model=AlertActionOut)
def api_alert_action(ctx: Ctx, who: InventoryStaff, body: AlertAction) -> AlertActionOut:
    """Acknowledge (with a note), assign or snooze an active alert. Needs the inventory role."""
    return AlertActionOut.model_validate(act_on_alert(ctx, who, body))


@pages.get("/discrepancies", response_class=HTMLResponse)
def discrepancies_page(ctx: Ctx, who: Viewer, request: Request) -> HTMLResponse:
    rows = ctx.store.restocks_with_discrepancy()
    return render(
        ctx,
        request,
        "discrepancies.html",
        "discrepancies",
        who,
        open=[e for e, at in rows if at is None],
        resolved=[(e, at) for e, at in rows if at],
    )


@pages.post("/discrepancies/{unit}/{event_id}/resolve")
async def resolve(
    ctx: Ctx, who: InventoryStaff, request: Request, unit: str, event_id: str
) -> RedirectResponse:
    note = (await form_of(request)).get("note", "")[:200] or None
    now = ctx.clock.now()
    done = ctx.store.resolve_discrepancy(unit, event_id, note, now)
    ctx.audit.record(
        who.actor,
        "discrepancy_resolve",
        now,
        target=f"{unit}:{event_id}",
        outcome="ok" if done else "refused",
        before={"resolved": False} if done else None,
        after={"resolved": True, "note": note},
        detail=None if done else "resolved already",
    )
    return RedirectResponse("/discrepancies", status_code=303)


@api.get("/alerts", response_model=AlertsOut)
def api_alerts(ctx: Ctx) -> AlertsOut:
    """The active alerts (with their follow-up) and the last 100 raised (with when each was cleared)."""
    follow = alert_actions.follow_ups(ctx.store)
    return AlertsOut(
        active=[
            AlertOut.model_validate(
                a
                | {"follow_up": f.as_dict() if (f := follow.get((a["alert_key"], a["raised_at"]))) else None}
            )
            for a in ctx.store.active_alerts()
        ],
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
