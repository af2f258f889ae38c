"""Signing in and out: the login page, the password check with rate limit and lock-out, logout."""

from __future__ import annotations

import secrets
from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from inventory.web.auth import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Viewer,
    client_address,
    identify,
    is_tls,
)
from inventory.web.deps import Ctx, form_of, render

router = APIRouter(include_in_schema=False)


def _safe_next(target: str | None) -> str:
    """Only a path on this site (never //host or a scheme): no open redirect after login."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target[:500]


def _login_page(
    ctx: Ctx, request: Request, next_: str, error: str | None = None, status: int = 200, name: str = ""
) -> HTMLResponse:
    nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(16)
    resp = render(
        ctx,
        request,
        "login.html",
        "login",
        None,
        refresh=False,
        status_code=status,
        next=next_,
        error=error,
        username=name,
        login_csrf=ctx.signer.csrf("login", nonce),
        sso=ctx.config.auth.sso is not None,
    )
    resp.set_cookie(
        LOGIN_COOKIE, nonce, max_age=3600, httponly=True, samesite="strict", secure=is_tls(ctx, request)
    )
    return resp


@router.get("/login", response_class=HTMLResponse)
def login_form(ctx: Ctx, request: Request, next: str | None = None) -> Response:  # noqa: A002
    try:
        who = identify(ctx, request)
    except Exception:
        who = None
    if who is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return _login_page(ctx, request, _safe_next(next))


@router.post("/login", response_class=HTMLResponse)
async def login(ctx: Ctx, request: Request) -> Response:
    form = await form_of(request)
    name, password = form.get("username", "").strip()[:64], form.get("password", "")[:1024]
    next_ = _safe_next(form.get("next"))
    source = client_address(ctx, request) or "?"
    now, mono = ctx.clock.now(), ctx.clock.monotonic()
    nonce = request.cookies.get(LOGIN_COOKIE)
    if not nonce or form.get(CSRF_FIELD) != ctx.signer.csrf("login", nonce):
        return _login_page(ctx, request, next_, "The form expired: please sign in again.", 403, name)
    if ctx.throttle.blocked(source, mono):
        ctx.audit.record(
            _anon(name, source), "login", now, target=name or None, outcome="refused", detail="rate limited"
        )
        return _login_page(
            ctx, request, next_, "Too many failed sign-ins from this address: wait 10 minutes.", 429, name
        )
    auth = ctx.config.auth
    user, why = ctx.accounts.verify_login(
        name, password, now, auth.max_failed_logins, timedelta(minutes=auth.lockout_minutes)
    )
    if why != "ok" or user is None:
        ctx.throttle.failed(source, mono)
        ctx.audit.record(
            _anon(name, source), "login", now, target=name or None, outcome="refused", detail=why
        )
        message = {
            "locked": f"This account is locked after repeated failed sign-ins; try again in "
            f"{auth.lockout_minutes:.0f} minutes or ask an administrator.",
            "locked_now": f"Wrong user name or password. The account is now locked for "
            f"{auth.lockout_minutes:.0f} minutes.",
            "disabled": "This account is disabled; ask an administrator.",
        }.get(why, "Wrong user name or password.")
        return _login_page(ctx, request, next_, message, 401, name)
    sid = ctx.accounts.open_session(user.name, now, source)
    ctx.audit.record(user_actor(user.name, user.role, source), "login", now, target=user.name)
    resp = RedirectResponse(next_, status_code=303)
    resp.set_cookie(
        SESSION_COOKIE,
        ctx.signer.cookie(sid),
        httponly=True,
        samesite="lax",
        secure=is_tls(ctx, request),
        path="/",
    )
    resp.delete_cookie(LOGIN_COOKIE)
    return resp


@router.post("/logout")
def logout(ctx: Ctx, who: Viewer) -> Response:
    if who.session_id:
        ctx.accounts.close_session(who.session_id)
    ctx.audit.record(who.actor, "logout", ctx.clock.now(), target=who.name)
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


def _anon(name: str, source: str):  # type: ignore[no-untyped-def]
    from inventory.audit import Actor

    return Actor(name or "(none)", None, "password", source)


def user_actor(name: str, role: str, source: str):  # type: ignore[no-untyped-def]
    from inventory.audit import Actor

    return Actor(name, role, "password", source)
