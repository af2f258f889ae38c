"""The fleet: the overview page, a unit's page, and the units' JSON API (stock, events, accepted gaps)."""

from __future__ import annotations

import json
from datetime import timedelta

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from inventory import commands, log
from inventory.commands import CommandError
from inventory.fleet import ColumnView, UnitView
from inventory.store import GapBeyondUnit
from inventory.views import bar_chart, daily_series, temperature_chart
from inventory.web.auth import InventoryStaff, Operations, Principal, Viewer, require
from inventory.web.deps import Ctx, find_unit, fleet_now, form_of, render
from inventory.web.models import (
    AcceptedGap,
    AcceptGap,
    AcceptGapOut,
    CommandIn,
    CommandOut,
    EventOut,
    UnitOut,
    command_out,
    unit_out,
)

pages = APIRouter(include_in_schema=False)
TEMP_DAYS = 7  # the unit page's temperature chart
api = APIRouter(prefix="/api/units", tags=["units"], dependencies=[Depends(require("viewer"))])


FLEET_PAGE_SIZE = 50  # units per fleet page (a state has thousands)


@pages.get("/", response_class=HTMLResponse)
def fleet_page(
    ctx: Ctx,
    who: Viewer,
    request: Request,
    site: str | None = None,
    view: str = "cards",
    q: str | None = Query(None, max_length=100),
    page_no: int = Query(1, alias="page", ge=1, le=10_000),
) -> HTMLResponse:
    """One page of the fleet, units needing attention first (offline, then sold out, then under par:
    ranked in SQL), filtered by site and by a search over id, name and site."""
    store, cfg, now = ctx.store, ctx.config, ctx.clock.now()
    site, q = site or None, (q or "").strip() or None
    per = FLEET_PAGE_SIZE
    ids, figures = store.fleet_page(site, q, (page_no - 1) * per, per)
    units = fleet_now(ctx, ids)
    alerts_by_unit, severities = store.alert_counts(ids, site)

    def expiring(u: UnitView) -> list[tuple[ColumnView, int]]:
        today, horizon = now.date(), cfg.alerts.expiry_days[-1]
        out = [(c, c.expires_in_days(today)) for c in u.columns]
        return [(c, d) for c, d in out if d is not None and d <= horizon]

    return render(
        ctx,
        request,
        "fleet.html",
        "fleet",
        who,
        units=units,
        figures=figures,
        sites=store.sites(),
        site=site,
        q=q,
        page_no=page_no,
        pages=max(1, -(-figures["units"] // per)),
        per=per,
        view="table" if view == "table" else "cards",
        alerts_by_unit=alerts_by_unit,
        online=figures["online"],
        kits_total=figures["kits"],
        kits_week=store.count_since("dispense", now - timedelta(days=7), site),
        critical=severities.get("critical", 0),
        warning=severities.get("warning", 0),
        expiring=expiring,
        last_kit=store.last_event_ts("dispense", ids),
    )


@pages.get("/units/{unit}", response_class=HTMLResponse)
def unit_page(ctx: Ctx, who: Viewer, request: Request, unit: str, before: int | None = None) -> HTMLResponse:
    u, days, limit = find_unit(ctx, unit), 30, 100
    now = ctx.clock.now()
    counts = ctx.store.daily_counts("dispense", now - timedelta(days=days + 1), unit)
    series = daily_series({d: n for (un, d), n in counts.items() if un == unit}, now.date(), days)
    return render(
        ctx,
        request,
        "unit.html",
        "unit",
        who,
        u=u,
        days=days,
        limit=limit,
        chart=bar_chart(series, f"kits dispensed per day at {unit}"),
        temp_chart=temperature_chart(
            ctx.store.temperatures(unit, now - timedelta(days=TEMP_DAYS)),
            u.label,
            f"storage temperature at {unit}, last {TEMP_DAYS} days",
        ),
        temp_days=TEMP_DAYS,
        events=ctx.store.events(unit, limit=limit, before_seq=before),
        commands=commands.recent(ctx.store, unit, 10),
        command_timeout=ctx.config.server.command_timeout_s,
    )


def send_command(
    ctx: Ctx, who: Principal, unit: str, name: str, fields: dict[str, object]
) -> commands.SentCommand:
    find_unit(ctx, unit)
    if ctx.commander is None:
        raise HTTPException(
            503, "commands are not available: this service runs without its MQTT command client"
        )
    try:
        return ctx.commander.send(unit, name, fields, who.actor)
    except CommandError as e:
        ctx.audit.record(
            who.actor,
            f"command_{name}"[:64],
            ctx.clock.now(),
            target=unit,
            outcome="refused",
            after=fields,
            detail=str(e),
        )
        raise HTTPException(422 if "field" in str(e) or "expected" in str(e) else 503, str(e)) from e


def _fields(name: str, form: dict[str, str]) -> dict[str, object]:
    """The command's fields from the unit page's form (only the ones that command takes)."""
    wanted = {
        "lock": ("reason",),
        "unlock": ("reason",),
        "set_lot": ("column", "lot", "expiry"),
        "test_vend": ("column",),
        "replay": ("from_seq",),
        "diag": (),
    }.get(name, ())
    out: dict[str, object] = {}
    for k in wanted:
        v = form.get(k, "").strip()
        if v:
            out[k] = v
    return out


@pages.post("/units/{unit}/commands")
async def command_form(ctx: Ctx, who: Operations, request: Request, unit: str) -> RedirectResponse:
    form = await form_of(request)
    name = form.get("name", "")
    fields = _fields(name, form)
    sent = send_command(ctx, who, unit, name, fields)
    return RedirectResponse(f"/units/{unit}?sent={sent.command_id}#commands", status_code=303)


UNITS_PER_PAGE = 100  # /api/units: the default and largest page (each unit is read in full)


@api.get("", response_model=list[UnitOut])
def api_units(
    ctx: Ctx,
    site: str | None = Query(None, max_length=200),
    limit: int = Query(
        UNITS_PER_PAGE, ge=1, description=f"units per page, at most {UNITS_PER_PAGE} (the default)"
    ),
    offset: int = Query(0, ge=0, le=2**53),  # past SQLite's integer range it was a 500 (schemathesis)
    firmware: str | None = Query(
        None, max_length=40, description="only the page's units whose board runs this version"
    ),
) -> list[UnitOut]:
    """One page of units (of all, or one site's), by site and id: `limit` (at most 100, the default)
    from `offset`; page on with offset += limit until a page comes back short. Each: id, site, online
    state, stock per column and board firmware; `firmware=0.3.0` keeps the page's units running that
    version."""
    if limit > UNITS_PER_PAGE:
        raise HTTPException(
            422,
            f"expected limit of at most {UNITS_PER_PAGE} units a page (page on with offset), got {limit}",
        )
    units = fleet_now(ctx, ctx.store.unit_ids(site, offset, limit))
    return [unit_out(u) for u in units if firmware is None or u.firmware_version == firmware]


@api.get("/{unit}", response_model=UnitOut)
def api_unit(ctx: Ctx, unit: str) -> UnitOut:
    return unit_out(find_unit(ctx, unit))


@api.get("/{unit}/events", response_model=list[EventOut])
def api_events(
    ctx: Ctx,
    unit: str,
    limit: int = Query(100, ge=1, le=1000),
    before_seq: int | None = None,
    type: str | None = None,  # noqa: A002 (query parameter name)
) -> list[EventOut]:
    """A unit's events, newest first; page with before_seq."""
    find_unit(ctx, unit)
    return [
        EventOut(
            seq=e.seq, event_id=e.event_id, type=e.type, ts=e.ts.isoformat(), payload=json.loads(e.payload)
        )
        for e in ctx.store.events(unit, limit=limit, before_seq=before_seq, type_=type)
    ]


@api.post("/{unit}/commands/{name}", response_model=CommandOut, status_code=202)
def api_send_command(ctx: Ctx, who: Operations, unit: str, name: str, body: CommandIn) -> CommandOut:
    """Send a command to a unit (lock, unlock, set_lot, diag, test_vend, replay) through the central
    service's broker identity; answers 202 with the command as sent. Poll
    /api/units/{unit}/commands for the unit's answer. Needs the operations role."""
    fields = body.model_dump(exclude_none=True)
    return command_out(send_command(ctx, who, unit, name, fields))


@api.get("/{unit}/commands", response_model=list[CommandOut])
def api_commands(ctx: Ctx, unit: str, limit: int = Query(20, ge=1, le=200)) -> list[CommandOut]:
    """Commands staff sent to this unit, newest first, each with its status and the unit's answer."""
    find_unit(ctx, unit)
    return [command_out(c) for c in commands.recent(ctx.store, unit, limit)]


@api.post("/{unit}/accept-gap", response_model=AcceptGapOut)
def accept_gap(ctx: Ctx, who: InventoryStaff, request: Request, unit: str, body: AcceptGap) -> AcceptGapOut:
    """Give up on missing seqs up to `through_seq` (the unit no longer has them, e.g. after the
    central database was restored from a backup). Recorded with the reason; acks resume past it.
    `through_seq` may not pass the last seq the unit reported (409): an ack beyond it is refused by
    the unit and would stop acks for good. Only a JSON body is taken (415): a cross-site form post
    cannot send one without the browser asking first."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise HTTPException(415, f"expected Content-Type application/json, got {kind or 'none'!r}")
    acked_before = find_unit(ctx, unit).acked_seq
    if not body.reason.strip():
        raise HTTPException(422, "expected a reason for giving up on events, got an empty one")
    store = ctx.store
    try:
        missing = store.accept_gap(unit, body.through_seq, body.reason.strip()[:500], ctx.clock.now())
    except GapBeyondUnit as e:
        raise HTTPException(409, str(e)) from e
    log.get("web").warning(
        "gap_accepted", unit=unit, through_seq=body.through_seq, missing=missing, reason=body.reason[:200]
    )
    p = store.advance_acked(unit)
    ctx.audit.record(
        who.actor,
        "gap_accept",
        ctx.clock.now(),
        target=unit,
        before={"acked_seq": acked_before},
        after={"through_seq": body.through_seq, "given_up": missing, "acked_seq": p.acked_seq},
        detail=body.reason.strip()[:500],
    )
    return AcceptGapOut(
        unit=unit,
        given_up=missing,
        acked_seq=p.acked_seq,
        gaps=[AcceptedGap.model_validate(g) for g in store.accepted_gaps(unit)],
    )
