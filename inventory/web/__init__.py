"""The dashboard and JSON API: FastAPI with server-rendered Jinja2 pages (no JavaScript build step),
self-refreshing, usable on a phone; OpenAPI docs at /docs and /openapi.json.

One router per area (units, alerts, reports, ingest), each in its own module; the store, settings,
clock and page renderer reach them through the dependencies in `deps`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.templating import Jinja2Templates

from inventory.clock import Clock
from inventory.config import CentralConfig
from inventory.store import Store
from inventory.web import alerts, ingest, lots, reports, units
from inventory.web.deps import TEMPLATES, WebContext


def create_app(
    store: Store,
    config: CentralConfig,
    clock: Clock,
    runtime: Callable[[], dict[str, Any]] | None = None,
    send_command: Callable[[str, str, bytes], None] | None = None,
) -> FastAPI:
    app = FastAPI(
        title="nalox central inventory",
        version="1",
        description="Fleet stock, events, alerts and reports for naloxone vending units.",
    )
    app.state.web = WebContext(
        store=store,
        config=config,
        clock=clock,
        runtime=runtime or (lambda: {}),
        templates=Jinja2Templates(directory=str(TEMPLATES)),
        send_command=send_command,
    )
    for router in (
        units.pages,
        units.api,
        alerts.pages,
        alerts.api,
        reports.pages,
        reports.csv,
        reports.api,
        ingest.router,
        lots.pages,
        lots.api,
        lots.exports,
    ):
        app.include_router(router)
    return app
