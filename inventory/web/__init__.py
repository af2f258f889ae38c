"""The dashboard and JSON API: FastAPI with server-rendered Jinja2 pages (no JavaScript build step),
self-refreshing, usable on a phone; OpenAPI docs at /docs and /openapi.json.

One router per area (units, alerts, reports, audit, admin, sign-in, ingest), each in its own module;
the store, settings, clock, accounts and page renderer reach them through the dependencies in `deps`.
Every route but /healthz, /login and the static files needs a session, an SSO header from the
trusted proxy, or an API token (see `auth`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException

from inventory.accounts import Accounts
from inventory.audit import AuditTrail
from inventory.clock import Clock
from inventory.config import CentralConfig
from inventory.store import Store
from inventory.web import admin, alerts, audit, ingest, lots, reports, session, units
from inventory.web.auth import (
    Forbidden,
    LoginThrottle,
    NotSignedIn,
    Signer,
    login_redirect,
    require,
    wants_json,
)
from inventory.web.deps import STATIC, TEMPLATES, WebContext, render

if False:  # typing only
    from inventory.commands import Commander
    from inventory.notify import EmailDigest


def create_app(
    store: Store,
    config: CentralConfig,
    clock: Clock,
    runtime: Callable[[], dict[str, Any]] | None = None,
    send_command: Callable[[str, str, bytes], None] | None = None,
    commander: Commander | None = None,
    email: EmailDigest | None = None,
) -> FastAPI:
    app = FastAPI(
        title="nalox central inventory",
        version="1",
        description="Fleet stock, events, alerts, reports and the staff audit trail for naloxone vending "
        "units. Every endpoint but /healthz needs `Authorization: Bearer <token>` "
        "(`nalox inventory token create`) or a signed-in session.",
        docs_url=None,
        openapi_url=None,
    )
    accounts = Accounts(store)
    ctx = WebContext(
        store=store,
        config=config,
        clock=clock,
        runtime=runtime or (lambda: {}),
        templates=Jinja2Templates(directory=str(TEMPLATES)),
        send_command=send_command,
        accounts=accounts,
        audit=AuditTrail(store),
        signer=Signer(accounts.secret_key()),
        throttle=LoginThrottle(config.auth.login_attempts_per_ip),
        commander=commander,
        email=email,
        tz=ZoneInfo(config.display_timezone),
    )
    app.state.web = ctx
    for router in (
        session.router,
        units.pages,
        units.api,
        alerts.pages,
        alerts.api,
        reports.pages,
        reports.csv,
        reports.api,
        audit.pages,
        audit.api,
        admin.pages,
        ingest.router,
        lots.pages,
        lots.api,
        lots.exports,
    ):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require("viewer"))])
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(require("viewer"))])
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="nalox inventory API")

    @app.exception_handler(NotSignedIn)
    def not_signed_in(request: Request, exc: NotSignedIn) -> Response:
        if wants_json(request) or request.headers.get("authorization"):
            return JSONResponse(
                {"detail": f"authentication required: {exc.reason}", "hint": "Authorization: Bearer <token>"},
                401,
                headers={"WWW-Authenticate": 'Bearer realm="nalox"'},
            )
        return RedirectResponse(login_redirect(request), status_code=303)

    @app.exception_handler(Forbidden)
    def forbidden(request: Request, exc: Forbidden) -> Response:
        ctx.audit.record(
            _actor_of(ctx, request),
            "refused",
            clock.now(),
            target=f"{request.method} {request.url.path}"[:200],
            outcome="refused",
            detail=exc.message,
        )
        if wants_json(request):
            body = {"detail": exc.message, "needed_role": exc.needed_role, "your_role": exc.your_role}
            return JSONResponse(body, 403)
        return render(
            ctx,
            request,
            "refused.html",
            "refused",
            None,
            refresh=False,
            status_code=403,
            message=exc.message,
            needed_role=exc.needed_role,
        )

    @app.exception_handler(HTTPException)
    def http_error(request: Request, exc: HTTPException) -> Response:
        if wants_json(request) or exc.status_code < 400:
            return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
        return render(
            ctx,
            request,
            "refused.html",
            "error",
            None,
            refresh=False,
            status_code=exc.status_code,
            message=str(exc.detail),
            needed_role=None,
        )

    return app


def _actor_of(ctx: WebContext, request: Request):  # type: ignore[no-untyped-def]
    from inventory.audit import Actor
    from inventory.web.auth import client_address, identify

    try:
        p = identify(ctx, request)
    except (Forbidden, NotSignedIn):
        p = None
    return p.actor if p else Actor("(unknown)", None, "web", client_address(ctx, request))
