"""The ingest's health: /healthz for probes and /api/ingest for counters, refusals and open gaps."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from inventory.web.auth import require
from inventory.web.deps import Ctx
from inventory.web.models import Health, IngestOut

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
