"""The audit trail for staff: a filtered page, a CSV export and the JSON API (viewer role and up)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response

from inventory.audit import Entry, to_csv
from inventory.web.auth import Viewer, require
from inventory.web.deps import Ctx, WebContext, render
from inventory.web.models import AuditOut
from inventory.web.reports import CSV_RESPONSE

pages = APIRouter(include_in_schema=False)
api = APIRouter(tags=["audit"], dependencies=[Depends(require("viewer"))])


class Filters:
    def __init__(
        self,
        actor: Annotated[str | None, Query(max_length=100)] = None,
        action: Annotated[str | None, Query(max_length=64)] = None,
        target: Annotated[str | None, Query(max_length=200, description="unit id or prefix")] = None,
        since: Annotated[date | None, Query(description="first day, in the county's time zone")] = None,
        until: Annotated[date | None, Query(description="last day, in the county's time zone")] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
    ) -> None:
        self.actor, self.action, self.target = actor or None, action or None, target or None
        self.since, self.until, self.limit = since, until, limit

    def entries(self, ctx: WebContext) -> list[Entry]:
        if self.since and self.until and self.until < self.since:
            raise HTTPException(422, f"expected until on or after since, got {self.since} .. {self.until}")
        start = datetime.combine(self.since, time(), ctx.tz) if self.since else None
        end = datetime.combine(self.until + timedelta(days=1), time(), ctx.tz) if self.until else None
        return ctx.audit.entries(self.actor, self.action, self.target, start, end, self.limit)


FiltersDep = Annotated[Filters, Depends()]


@pages.get("/audit", response_class=HTMLResponse)
def audit_page(ctx: Ctx, who: Viewer, request: Request, f: FiltersDep) -> HTMLResponse:
    return render(
        ctx,
        request,
        "audit.html",
        "audit",
        who,
        entries=f.entries(ctx),
        f=f,
        actions=ctx.audit.actions(),
        query=request.url.query,
    )


@api.get("/audit.csv", response_class=Response, responses=CSV_RESPONSE)
def audit_csv(ctx: Ctx, f: FiltersDep) -> Response:
    """The audit trail (same filters as the page) as CSV, newest first."""
    return Response(
        to_csv(f.entries(ctx)),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="nalox-audit.csv"'},
    )


@api.get("/api/audit", response_model=list[AuditOut])
def audit_json(ctx: Ctx, f: FiltersDep) -> list[AuditOut]:
    """Who did what, when, from where, with the before and after; newest first."""
    return [
        AuditOut(
            at=e.at.isoformat(),
            actor=e.actor,
            role=e.role,
            via=e.via,
            source=e.source,
            action=e.action,
            target=e.target,
            outcome=e.outcome,
            before=e.before,
            after=e.after,
            detail=e.detail,
        )
        for e in f.entries(ctx)
    ]
