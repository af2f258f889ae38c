"""Program reports: the reports page, the CSV downloads and their JSON twins."""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import TypeAdapter

from inventory import reports
from inventory.web.auth import Viewer, require
from inventory.web.deps import Ctx, WebContext, render
from inventory.web.models import Funnel, MonthlyRow, PeriodRow, YearlyRow

pages = APIRouter(include_in_schema=False)
csv = APIRouter(prefix="/reports", tags=["reports"], dependencies=[Depends(require("viewer"))])
api = APIRouter(prefix="/api/reports", tags=["reports"], dependencies=[Depends(require("viewer"))])
CSV_RESPONSE: dict[int | str, dict[str, object]] = {
    200: {
        "content": {"text/csv": {"schema": {"type": "string"}}},
        "description": "a CSV file with a header row",
    }
}


def report_span(
    ctx: WebContext, year: int | None, fiscal_year: int | None, start: date | None, end: date | None
) -> tuple[str, date, date]:
    """The period a report covers: a calendar year, a fiscal year, or a range of days."""
    try:
        if start is not None or end is not None:
            if start is None or end is None:
                raise ValueError(f"expected both start and end, got start={start} end={end}")
            if end < start or (end - start).days > 366 * 20:
                raise ValueError(f"expected start <= end within 20 years, got {start} to {end}")
            return f"{start} to {end}", start, end
        if fiscal_year is not None:
            a, b = reports.fiscal_year_bounds(fiscal_year, ctx.config.reports.fiscal_year_start_month)
            return f"fiscal year {fiscal_year} ({a} to {b})", a, b
        y = year if year is not None else ctx.clock.now().astimezone(ctx.store.report_tz).year
        a, b = reports.year_bounds(y)
        return f"{y}", a, b
    except ValueError as e:
        raise HTTPException(422, str(e)) from e


DETAIL_ROWS = 60  # more units or sites than this: the page sums them and asks for a site (or the CSV)


@pages.get("/reports", response_class=HTMLResponse)
def reports_page(
    ctx: Ctx,
    who: Viewer,
    request: Request,
    year: int | None = Query(None, ge=2000, le=2100),
    fy: int | None = Query(None, ge=2000, le=2100),
    start: date | None = None,
    end: date | None = None,
    site: str | None = Query(None, max_length=200),
) -> HTMLResponse:
    """One period (this year by default, a year, a fiscal year or a range of days) per site, and per
    unit and per month for one site (or the whole fleet when it is small), from the counts kept at
    ingest."""
    label, a, b = report_span(ctx, year, fy, start, end)
    site = site or None
    store, first, last = ctx.store, a.isoformat(), b.isoformat()
    # summed per site in the database (a state's 2,000 unit rows are listed for one site only)
    per_site = reports.with_rates(store.period(first, last, ("site",)))
    pairs = sum(r["units"] for r in per_site)  # (site, unit) rows of the period
    detail = site is not None or pairs <= DETAIL_ROWS
    picked = reports.with_rates(store.period(first, last, site=site)) if detail else []
    month = first[:7]
    if site is None and len(per_site) > DETAIL_ROWS:
        months = reports.with_rates(store.monthly_by_site(month, last[:7], by_site=False))
    else:
        months = reports.with_rates(store.monthly_by_site(month, last[:7], site))
    return render(
        ctx,
        request,
        "reports.html",
        "reports",
        who,
        refresh=False,
        tz=ctx.config.reports.timezone,
        label=label,
        year=a.year if fy is None and start is None else None,
        period_start=a.isoformat(),
        min_cell=ctx.config.reports.open_data_min_cell,
        period_end=b.isoformat(),
        site=site,
        sites=[r["site"] for r in per_site],
        yearly_site=per_site,
        yearly_unit=picked,
        units_hidden=0 if detail else pairs,
        site_month=months,
        funnel=reports.funnel([{**r, "month": month} for r in (picked if site is not None else per_site)]),
    )


@api.get("/period", response_model=list[PeriodRow])
def period_json(ctx: Ctx, start: date, end: date) -> Response:
    """Counts per site and unit over the days start..end inclusive (calendar days in the reporting
    time zone), from the counts kept at ingest."""
    return _period_rows(ctx, report_span(ctx, None, None, start, end))


@api.get("/year/{year}", response_model=list[PeriodRow])
def year_json(ctx: Ctx, year: int = Path(ge=2000, le=2100)) -> Response:
    """Counts per site and unit over one calendar year."""
    return _period_rows(ctx, report_span(ctx, year, None, None, None))


@api.get("/fiscal-year/{year}", response_model=list[PeriodRow])
def fiscal_year_json(ctx: Ctx, year: int = Path(ge=2000, le=2100)) -> Response:
    """Counts per site and unit over fiscal year `year` (it ends in that calendar year; its first
    month is reports.fiscal_year_start_month in central.toml)."""
    return _period_rows(ctx, report_span(ctx, None, year, None, None))


PERIOD_ROWS = TypeAdapter(list[PeriodRow])


def _period_rows(ctx: WebContext, span: tuple[str, date, date]) -> Response:
    """A period's rows per site and unit as JSON, each checked against PeriodRow once and written by
    pydantic (a state's 2,000 rows: returning models had FastAPI check each a second time)."""
    _, a, b = span
    rows = PERIOD_ROWS.validate_python(reports.period(ctx.store, a, b))
    return Response(PERIOD_ROWS.dump_json(rows), media_type="application/json")


def _download(body: str, filename: str) -> Response:
    return Response(
        body, media_type="text/csv", headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )


@csv.get("/monthly.csv", response_class=Response, responses=CSV_RESPONSE)
def monthly_csv(ctx: Ctx) -> Response:
    """Kits, doses, test vends, vend failures and the video funnel per month, site and unit."""
    return _download(reports.monthly_csv(ctx.store), "nalox-monthly.csv")


@csv.get("/yearly.csv", response_class=Response, responses=CSV_RESPONSE)
def yearly_csv(ctx: Ctx) -> Response:
    """The same counts per year, site and unit."""
    return _download(reports.yearly_csv(ctx.store), "nalox-yearly.csv")


@api.get("/monthly", response_model=list[MonthlyRow])
def monthly_json(ctx: Ctx) -> list[MonthlyRow]:
    """One row per month (in the reporting time zone), site and unit."""
    return [MonthlyRow.model_validate(r) for r in reports.monthly(ctx.store)]


@api.get("/yearly", response_model=list[YearlyRow])
def yearly_json(ctx: Ctx) -> list[YearlyRow]:
    """One row per year, site and unit."""
    return [YearlyRow.model_validate(r) for r in reports.yearly(ctx.store)]


@api.get("/funnel", response_model=Funnel)
def funnel_json(ctx: Ctx) -> Funnel:
    """The training funnel over all time: videos started, completed, kits taken after the video."""
    return Funnel.model_validate(reports.funnel(reports.monthly(ctx.store)))
