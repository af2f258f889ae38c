"""Program reports: the reports page, the CSV downloads and their JSON twins."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from inventory import reports
from inventory.web.deps import Ctx, render
from inventory.web.models import Funnel, MonthlyRow, YearlyRow

pages = APIRouter(include_in_schema=False)
csv = APIRouter(prefix="/reports", tags=["reports"])
api = APIRouter(prefix="/api/reports", tags=["reports"])
CSV_RESPONSE: dict[int | str, dict[str, object]] = {
    200: {
        "content": {"text/csv": {"schema": {"type": "string"}}},
        "description": "a CSV file with a header row",
    }
}


@pages.get("/reports", response_class=HTMLResponse)
def reports_page(ctx: Ctx, request: Request) -> HTMLResponse:
    monthly = reports.monthly(ctx.store)
    return render(
        ctx,
        request,
        "reports.html",
        "reports",
        refresh=False,
        tz=ctx.config.reports.timezone,
        monthly=monthly,
        site_month=reports.rollup(monthly, ("month", "site")),
        yearly_site=reports.rollup(monthly, ("year", "site")),
        yearly_unit=reports.rollup(monthly, ("year", "site", "unit")),
        funnel=reports.funnel(monthly),
    )


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
