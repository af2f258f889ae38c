"""Administration (admin role): staff accounts (disable, enable, change role) and API tokens (create,
shown once; revoke). Accounts are created with `nalox inventory user add` on the server."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from inventory.accounts import AccountError, User
from inventory.config import ROLES
from inventory.web.auth import Admin
from inventory.web.deps import Ctx, form_of, refused_as, render

pages = APIRouter(include_in_schema=False)


def _page(
    ctx: Ctx, request: Request, who: Admin, new_token: str | None = None, status: int = 200
) -> HTMLResponse:
    return render(
        ctx,
        request,
        "admin.html",
        "admin",
        who,
        refresh=False,
        status_code=status,
        users=ctx.accounts.users(),
        tokens=ctx.accounts.tokens(),
        roles=ROLES,
        new_token=new_token,
    )


@pages.get("/admin", response_class=HTMLResponse)
def admin_page(ctx: Ctx, who: Admin, request: Request) -> HTMLResponse:
    return _page(ctx, request, who)


@pages.post("/admin/tokens", response_class=HTMLResponse)
async def create_token(ctx: Ctx, who: Admin, request: Request) -> HTMLResponse:
    form = await form_of(request)
    now = ctx.clock.now()
    with refused_as(422, AccountError):
        token, secret = ctx.accounts.create_token(form.get("name", ""), form.get("role", ""), who.name, now)
    ctx.audit.record(
        who.actor,
        "token_create",
        now,
        target=f"token:{token.id}",
        after={"name": token.name, "role": token.role},
    )
    return _page(ctx, request, who, new_token=secret, status=201)


@pages.post("/admin/tokens/{token_id}/revoke")
def revoke_token(ctx: Ctx, who: Admin, token_id: str) -> Response:
    now = ctx.clock.now()
    with refused_as(404, AccountError):
        t = ctx.accounts.revoke_token(token_id, now)
    ctx.audit.record(
        who.actor,
        "token_revoke",
        now,
        target=f"token:{t.id}",
        before={"revoked": False},
        after={"revoked": True, "name": t.name},
    )
    return RedirectResponse("/admin", status_code=303)


@pages.post("/admin/users/{name}")
async def change_user(ctx: Ctx, who: Admin, request: Request, name: str) -> Response:
    form = await form_of(request)
    now = ctx.clock.now()
    before = ctx.accounts.get_user(name)
    if before is None:
        raise HTTPException(404, f"expected an existing user, got {name!r}")
    with refused_as(422, AccountError):
        after = _changed_user(ctx, who, name, form)
    ctx.audit.record(
        who.actor,
        f"user_{form['action']}",
        now,
        target=f"user:{name}",
        before={"role": before.role, "disabled": before.disabled},
        after={"role": after.role, "disabled": after.disabled},
    )
    return RedirectResponse("/admin", status_code=303)


def _changed_user(ctx: Ctx, who: Admin, name: str, form: dict[str, str]) -> User:
    """Apply the form's action (disable, enable, role) to one staff account."""
    if form.get("action") == "disable":
        if name == who.name:
            raise AccountError("refused: you cannot disable your own account")
        return ctx.accounts.set_disabled(name, True)
    if form.get("action") == "enable":
        return ctx.accounts.set_disabled(name, False)
    if form.get("action") == "role":
        return ctx.accounts.set_role(name, form.get("role", ""))
    raise AccountError(f"expected action disable, enable or role, got {form.get('action')!r}")
