"""Lots and planning: the fleet's lots page, recall holds (dashboard and API), per-site printable pick
lists, report exports (CSV, JSON, Excel for any period, by program/site/unit) and the open-data file."""

from __future__ import annotations

import json
import uuid
from datetime import date
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from inventory import log, opendata, planning, reports
from inventory.planning import LOTS_PER_PAGE, LotView, pick_list
from inventory.web.auth import InventoryStaff, Principal, Viewer, require
from inventory.web.deps import Ctx, WebContext, fleet_now, form_of, render
from inventory.web.models import copied
from schemas.models import LotHoldCommand

pages = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api", tags=["lots"], dependencies=[Depends(require("viewer"))])
exports = APIRouter(prefix="/reports", tags=["reports"], dependencies=[Depends(require("viewer"))])
PULL_DAYS = 30  # a pick list pulls lots expiring within this many days


class HoldIn(BaseModel):
    reason: str = Field(min_length=3, max_length=300, description="why (e.g. the recall notice number)")
    by: str | None = Field(
        default=None,
        max_length=64,
        description="ignored: the hold is recorded under the signed-in staff member or token",
    )


class HoldOut(BaseModel):
    lot: str
    held: bool
    changed: bool
    units_told: int


class HoldLogOut(BaseModel):
    lot: str
    at: str
    action: str = Field(description="hold | release")
    by: str
    reason: str


class BringOut(BaseModel):
    product: str
    kits: int


class PullOut(BaseModel):
    unit: str
    column: int
    lot: str | None
    kits: int
    why: str


class PicklistOut(BaseModel):
    site: str
    today: str
    pull_before: str
    bring: list[BringOut]
    pull: list[PullOut]
    days_of_stock: dict[str, float | None] = Field(description="unit -> days of stock left")


class PlaceOut(BaseModel):
    site: str
    unit: str
    column: int
    kits: int
    next_to_drop: bool


class LotOut(BaseModel):
    lot: str
    product: str
    expiry: date | None
    kits: int
    dispensed: int
    places: list[PlaceOut]
    hold: dict[str, str] | None
    unit_holds: list[dict[str, str]]
    worst_hours_outside_label: float
    worst_mkt_c: float | None


def lot_out(v: LotView) -> LotOut:
    return copied(
        LotOut,
        v,
        places=[
            PlaceOut(site=p.site, unit=p.unit, column=p.column, kits=p.count, next_to_drop=p.front)
            for p in v.places
        ],
        unit_holds=[{"unit": u, "kind": k, "reason": r} for u, k, r in v.unit_holds],
        worst_hours_outside_label=round(v.worst_outside_label_s / 3600, 2),
        worst_mkt_c=round(v.worst_mkt_c, 2) if v.worst_mkt_c is not None else None,
    )


def tell_units(ctx: WebContext, lot: str, hold: bool, reason: str, by: str) -> int:
    """cmd/lot_hold to every unit (a unit that misses it is told again when its state shows the lot
    without the hold: see Ingestor.reconcile_holds)."""
    if ctx.send_command is None:
        return 0
    units = sorted(ctx.store.known_units())
    for unit in units:
        cmd = LotHoldCommand(
            command_id=f"lot-{uuid.uuid4().hex[:16]}",
            issued_at=ctx.clock.now(),
            lot=lot,
            hold=hold,
            reason=reason,
            by=by,
            issued_by=by[:64] or None,
        )
        ctx.send_command(unit, "lot_hold", cmd.model_dump_json().encode())
    return len(units)


def hold(ctx: WebContext, lot: str, reason: str, who: Principal) -> HoldOut:
    changed = ctx.store.hold_lot(lot, "recall", reason, who.name, ctx.clock.now())
    return _announce(ctx, lot, True, changed, reason, who)


def release(ctx: WebContext, lot: str, reason: str, who: Principal) -> HoldOut:
    changed = ctx.store.release_lot(lot, reason, who.name, ctx.clock.now())
    if not changed:
        raise HTTPException(404, f"expected a lot on hold, got {lot!r} (not held)")
    return _announce(ctx, lot, False, changed, reason, who)


def _announce(ctx: WebContext, lot: str, held: bool, changed: bool, reason: str, who: Principal) -> HoldOut:
    """After the store took a hold (`held`) or a release: tell every unit, audit and log it; a hold
    of a lot held already (not `changed`) is audited as refused."""
    told = tell_units(ctx, lot, held, reason, who.name)
    ctx.audit.record(
        who.actor,
        "lot_hold" if held else "lot_release",
        ctx.clock.now(),
        target=f"lot:{lot}",
        outcome="ok" if changed else "refused",
        before={"held": held != changed},
        after={"held": held, "units_told": told},
        detail=reason if changed else f"held already; {reason}",
    )
    event = "lot_held" if held else "lot_released"
    log.get("web").warning(event, lot=lot, by=who.name, reason=reason, changed=changed, units_told=told)
    return HoldOut(lot=lot, held=held, changed=changed, units_told=told)


def _lot_name(lot: str) -> str:
    lot = lot.strip()
    if not 1 <= len(lot) <= 64:
        raise HTTPException(422, f"expected a lot number of 1-64 characters, got {len(lot)}")
    return lot


# ---------------------------------------------------------------- pages


@pages.get("/lots", response_class=HTMLResponse)
def lots_page(
    ctx: Ctx,
    who: Viewer,
    request: Request,
    product: str | None = Query(None, max_length=100),
    site: str | None = Query(None, max_length=200),
    lot: str | None = Query(None, max_length=64),
    page: int = Query(1, ge=1, le=100_000),
) -> HTMLResponse:
    """Every lot in the fleet, soonest expiry first, LOTS_PER_PAGE a page; filter by product, site
    and lot."""
    got = planning.lots_page(ctx.store, product or "", site or "", lot or "", (page - 1) * LOTS_PER_PAGE)
    today = ctx.clock.now().astimezone(ctx.store.report_tz).date()
    return render(
        ctx,
        request,
        "lots.html",
        "lots",
        who,
        lots=got.lots,
        total=got.total,
        page=page,
        pages=max(1, -(-got.total // LOTS_PER_PAGE)),
        products=got.products,
        sites=got.sites,
        product=product or "",
        site=site or "",
        lot=lot or "",
        today=today,
        log=ctx.store.lot_hold_log(limit=50),
        warn_days=ctx.config.alerts.expiry_days[-1],
    )


async def _hold_form(request: Request) -> tuple[str, str]:
    """The lot and the reason a hold or release form posts."""
    f = await form_of(request)
    try:
        reason = HoldIn(reason=f.get("reason", "")).reason
    except ValueError as e:
        raise HTTPException(422, f"expected a reason (3-300 characters): {e}") from e
    return _lot_name(f.get("lot", "")), reason


@pages.post("/lots/hold")
async def hold_form(ctx: Ctx, who: InventoryStaff, request: Request) -> RedirectResponse:
    lot, reason = await _hold_form(request)
    hold(ctx, lot, reason, who)
    return RedirectResponse(f"/lots?lot={quote(lot)}", status_code=303)


@pages.post("/lots/release")
async def release_form(ctx: Ctx, who: InventoryStaff, request: Request) -> RedirectResponse:
    lot, reason = await _hold_form(request)
    release(ctx, lot, reason, who)
    return RedirectResponse("/lots", status_code=303)


@pages.get("/sites/{site}/picklist", response_class=HTMLResponse)
def picklist_page(
    ctx: Ctx, who: Viewer, request: Request, site: str, pull_days: int = Query(PULL_DAYS, ge=0, le=365)
) -> HTMLResponse:
    """A printable restock pick list for one site."""
    units = fleet_now(ctx)
    if site not in {u.site for u in units}:
        raise HTTPException(404, f"expected a known site, got {site!r}")
    today = ctx.clock.now().astimezone(ctx.store.report_tz).date()
    pl = pick_list(site, units, today, pull_days, ctx.store.lot_holds())
    return render(ctx, request, "picklist.html", "lots", who, refresh=False, pl=pl, pull_days=pull_days)


# ---------------------------------------------------------------- API


@api.get("/lots", response_model=list[LotOut])
def api_lots(
    ctx: Ctx,
    product: str | None = Query(None, max_length=100),
    site: str | None = Query(None, max_length=200),
    limit: int | None = Query(None, ge=1, le=1000, description="one page of this many lots (default: all)"),
    offset: int = Query(0, ge=0),
) -> list[LotOut]:
    """Every lot in the fleet, soonest expiry first (or one page of `limit` from `offset`): where it
    is (site, unit, column, kits), its holds and heat exposure."""
    return [
        lot_out(v) for v in planning.lots_page(ctx.store, product or "", site or "", "", offset, limit).lots
    ]


@api.post("/lots/{lot}/hold", response_model=HoldOut)
def api_hold(ctx: Ctx, who: InventoryStaff, lot: str, body: HoldIn) -> HoldOut:
    """Hold a lot fleet-wide (a recall): every unit stops vending its kits at once and keeps the hold
    across restarts. Recorded with who and why."""
    return hold(ctx, _lot_name(lot), body.reason, who)


@api.post("/lots/{lot}/release", response_model=HoldOut)
def api_release(ctx: Ctx, who: InventoryStaff, lot: str, body: HoldIn) -> HoldOut:
    """Release a held lot, with the reason; recorded with who and why."""
    return release(ctx, _lot_name(lot), body.reason, who)


@api.get("/lots/holds/log", response_model=list[HoldLogOut])
def api_hold_log(ctx: Ctx, lot: str | None = None) -> list[HoldLogOut]:
    """Every hold and release, newest first: lot, when, what, who, why."""
    return [HoldLogOut.model_validate(r) for r in ctx.store.lot_hold_log(lot)]


@api.get("/sites/{site}/picklist", response_model=PicklistOut)
def api_picklist(ctx: Ctx, site: str, pull_days: int = Query(PULL_DAYS, ge=0, le=365)) -> PicklistOut:
    """A site's restock pick list: kits to bring per product, lots to pull, days of stock per unit."""
    units = fleet_now(ctx)
    if site not in {u.site for u in units}:
        raise HTTPException(404, f"expected a known site, got {site!r}")
    today = ctx.clock.now().astimezone(ctx.store.report_tz).date()
    pl = pick_list(site, units, today, pull_days, ctx.store.lot_holds())
    return PicklistOut.model_validate(
        {
            "site": pl.site,
            "today": pl.today.isoformat(),
            "pull_before": pl.pull_before.isoformat(),
            "bring": [{"product": b.product, "kits": b.kits_to_bring} for b in pl.bring],
            "pull": [
                {"unit": p.unit, "column": p.column, "lot": p.lot, "kits": p.count, "why": p.why}
                for p in pl.pull
            ],
            "days_of_stock": pl.days_of_stock,
        }
    )


# ---------------------------------------------------------------- report exports


def export_period(
    ctx: Ctx,
    year: int | None = Query(None, ge=2000, le=2100),
    fy: int | None = Query(None, ge=2000, le=2100),
    start: date | None = None,
    end: date | None = None,
) -> reports.Period:
    """The period an export covers, from its query: a calendar year (`year`, this year by default), a
    fiscal year (`fy`) or a range (`start`, `end`, inclusive), in the county's time zone."""
    tz = ctx.config.reports.timezone
    try:
        if start is not None or end is not None:
            if start is None or end is None:
                raise reports.PeriodError(f"expected both start and end, got start={start} end={end}")
            return reports.date_range(start, end, tz)
        if fy is not None:
            return reports.fiscal_year(fy, ctx.config.reports.fiscal_year_start_month, tz)
        return reports.calendar_year(year or ctx.clock.now().astimezone(ctx.store.report_tz).year, tz)
    except reports.PeriodError as e:
        raise HTTPException(422, str(e)) from e


ExportPeriod = Annotated[reports.Period, Depends(export_period)]


def export_grouping(by: str = "unit") -> str:
    """How an export groups its rows (`by`: program, site or unit, as recorded with each event)."""
    if by not in reports.GROUPINGS:
        raise HTTPException(422, f"expected by= one of {sorted(reports.GROUPINGS)}, got {by!r}")
    return by


ExportGrouping = Annotated[str, Depends(export_grouping)]
XLSX_MEDIA = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _file(body: bytes | str, media: str, name: str) -> Response:
    return Response(body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _described(media: str, what: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {media: {"schema": {"type": "string"}}}, "description": what}}


CSV_FILE = _described("text/csv", "a CSV file: comment lines (period, time zone) then a header row")
XLSX_FILE = _described(
    XLSX_MEDIA, "an Excel workbook: sheet `report` (period and zone first, a SUM row last) and sheet `about`"
)
JSON_FILE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/json": {"schema": {"type": "object"}}},
        "description": "{period: {label, first_day, last_day, time_zone, ...}, grouped_by, rows, totals}",
    }
}


@exports.get("/export.csv", response_class=Response, responses=CSV_FILE)
def export_csv(ctx: Ctx, p: ExportPeriod, by: ExportGrouping) -> Response:
    """Kits, doses, videos, extra and emergency kits, vend failures for a calendar year (`year`), a
    fiscal year (`fy`) or a range (`start`, `end`, inclusive), by program/site/unit as recorded with
    each event; the period and time zone are the file's first line."""
    body = reports.period_csv(reports.period_report(ctx.store, p, by), p, by)
    return _file(body, "text/csv", f"nalox-{p.first}-{p.last}.csv")


@exports.get("/export.json", response_class=Response, responses=JSON_FILE)
def export_json(ctx: Ctx, p: ExportPeriod, by: ExportGrouping) -> Response:
    body = json.dumps(reports.period_json(reports.period_report(ctx.store, p, by), p, by), indent=1)
    return Response(body, media_type="application/json")


@exports.get("/export.xlsx", response_class=Response, responses=XLSX_FILE)
def export_xlsx(ctx: Ctx, p: ExportPeriod, by: ExportGrouping) -> Response:
    body = reports.period_xlsx(reports.period_report(ctx.store, p, by), p, by)
    return _file(body, XLSX_MEDIA, f"nalox-{p.first}-{p.last}.xlsx")


@exports.get("/open-data.csv", response_class=Response, responses=CSV_FILE)
def open_data_csv(ctx: Ctx, p: ExportPeriod) -> Response:
    """For the public: kits per site and month; counts under reports.open_data_min_cell (11) and the
    cells that would reveal them are shown as `*`."""
    rows = ctx.store.period_counts(p.start_utc, p.end_utc, ("site", "month"))
    n = ctx.config.reports.open_data_min_cell
    table, hidden = opendata.open_data(rows, n)
    body = opendata.open_data_csv(table, hidden, n, p.describe())
    return _file(body, "text/csv", f"nalox-open-data-{p.first}-{p.last}.csv")
