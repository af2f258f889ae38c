"""The ingest's health: /healthz for probes and /api/ingest for counters, refusals and open gaps."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from inventory import log
from inventory.store import GapBeyondUnit, StoreError
from inventory.web.auth import InventoryStaff, require
from inventory.web.deps import Ctx
from inventory.web.models import Health, IngestOut, QuarantineDecision, QuarantineOut

router = APIRouter(tags=["ingest"])


@router.get("/api/ingest", response_model=IngestOut, dependencies=[Depends(require("viewer"))])
def api_ingest(ctx: Ctx) -> IngestOut:
    """Ingest counters, refused messages per reason (with the last detail), open seq gaps."""
    return IngestOut.model_validate(
        {"counters": ctx.store.counters(), "rejected": ctx.store.rejects(), **ctx.runtime()}
    )


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "the database or the broker is unreachable"}},
)
def healthz(ctx: Ctx) -> JSONResponse:
    """200 when the database answers and every ingest worker is connected to the broker, else 503."""
    try:
        version = ctx.store.schema_version()
    except Exception as e:
        return JSONResponse(
            Health(ok=False, error=f"database: {type(e).__name__}").model_dump(exclude_none=True), 503
        )
    ok = bool(ctx.runtime().get("mqtt_connected", True))
    body = Health(ok=ok, schema_version=version, mqtt_connected=ok).model_dump(exclude_none=True)
    return JSONResponse(body, 200 if ok else 503)


@router.get("/api/quarantine", response_model=list[QuarantineOut], dependencies=[Depends(require("viewer"))])
def api_quarantine(
    ctx: Ctx,
    state: Literal["open", "released", "accepted", "all"] = "open",
    unit: str | None = Query(None, max_length=64),
    limit: int = Query(500, ge=1, le=5000),
) -> list[QuarantineOut]:
    """Refused messages, newest first: reason, size, seq and event_id when well-formed; never content."""
    rows = ctx.store.quarantined(None if state == "all" else state, unit, limit)
    return [QuarantineOut.model_validate(r) for r in rows]


QuarantineId = Annotated[int, PathParam(ge=1, le=2**53, description="a quarantine row's id")]


def _json_only(request: Request) -> None:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise HTTPException(415, f"expected Content-Type application/json, got {kind or 'none'!r}")


@router.post("/api/quarantine/{qid}/release", response_model=QuarantineOut)
def release(
    ctx: Ctx, who: InventoryStaff, request: Request, qid: QuarantineId, body: QuarantineDecision
) -> QuarantineOut:
    """After central was upgraded to accept it: the unit is asked for the event again (it keeps every
    event until acknowledged); a message refused again comes back to the quarantine."""
    _json_only(request)
    try:
        row = ctx.store.resolve_quarantine(qid, "released", body.reason.strip(), ctx.clock.now())
    except StoreError as e:
        raise HTTPException(409, str(e)) from e
    log.get("web").warning("quarantine_released", id=qid, unit=row["unit"], seq=row["seq"])
    ctx.audit.record(who.actor, "quarantine_release", ctx.clock.now(), target=row["unit"],
                     before={"id": qid, "state": "open"}, after={"state": "released", "seq": row["seq"]},
                     detail=body.reason.strip()[:500])
    return QuarantineOut.model_validate(row)


@router.post("/api/quarantine/{qid}/accept", response_model=QuarantineOut)
def accept(
    ctx: Ctx, who: InventoryStaff, request: Request, qid: QuarantineId, body: QuarantineDecision
) -> QuarantineOut:
    """Give the refused event up as a gap (acks move past its seq), with a reason."""
    _json_only(request)
    found = ctx.store.quarantined(None, qid=qid)
    if not found:
        raise HTTPException(404, f"expected a quarantine id, got {qid}")
    q = found[0]
    if q["state"] != "open":
        raise HTTPException(409, f"quarantine {qid} is already {q['state']}")
    try:
        if q["seq"] is not None:
            ctx.store.accept_gap(q["unit"], int(q["seq"]), f"quarantine {qid}: {body.reason.strip()}"[:500],
                                 ctx.clock.now())
        row = ctx.store.resolve_quarantine(qid, "accepted", body.reason.strip(), ctx.clock.now())
    except (GapBeyondUnit, StoreError) as e:
        raise HTTPException(409, str(e)) from e
    if q["seq"] is not None:
        ctx.store.advance_acked(q["unit"])
    log.get("web").warning("quarantine_accepted", id=qid, unit=row["unit"], seq=row["seq"])
    ctx.audit.record(who.actor, "quarantine_accept", ctx.clock.now(), target=row["unit"],
                     before={"id": qid, "state": "open"}, after={"state": "accepted", "seq": row["seq"]},
                     detail=body.reason.strip()[:500])
    return QuarantineOut.model_validate(row)
