"""Who is asking, and may they: API tokens, single sign-on from the trusted proxy, session cookies,
role checks and CSRF tokens, as FastAPI dependencies.

Ways in, tried in this order:
- `Authorization: Bearer nalox_...`: an API token (scripts). No cookie is involved, so no CSRF check.
- the SSO user header, believed only when the TCP peer is one of `[auth.sso] trusted_proxies`; the
  role is the highest one its groups map to. The proxy adds the header to every request, forged
  cross-site ones too, so state-changing requests still need the CSRF token.
- the `nalox_session` cookie: an itsdangerous-signed random session id, HttpOnly, SameSite=Lax, Secure
  over TLS, ended after `session_idle_minutes` without use or at logout.
A page request without any goes to /login; an API or CSV request gets 401 JSON. A role too low gets
403 naming the role needed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated
from urllib.parse import parse_qs, quote

from fastapi import Depends, Request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from inventory.accounts import role_allows
from inventory.audit import Actor
from inventory.config import ROLES, SsoSettings
from inventory.errors import InventoryError
from inventory.web.deps import Ctx, WebContext

SESSION_COOKIE = "nalox_session"
LOGIN_COOKIE = "nalox_login"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class NotSignedIn(InventoryError):
    """No valid session, token or SSO header."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Forbidden(InventoryError):
    """Signed in, but the action needs a higher role, or the CSRF token is missing or wrong."""

    def __init__(self, message: str, needed_role: str | None = None, your_role: str | None = None) -> None:
        super().__init__(message)
        self.message, self.needed_role, self.your_role = message, needed_role, your_role


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    via: str  # password | sso | token
    source: str | None
    csrf: str | None  # the token this principal's forms must carry (None for API tokens)
    session_id: str | None = None

    @property
    def actor(self) -> Actor:
        return Actor(self.name, self.role, self.via, self.source)


class Signer:
    """Session cookie signing and CSRF tokens, from the one secret kept in the store."""

    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()
        self.cookies = URLSafeTimedSerializer(secret, salt="nalox-session")

    def cookie(self, session_id: str) -> str:
        return self.cookies.dumps(session_id)

    def session_id(self, cookie: str, max_age_s: float) -> str | None:
        try:
            value = self.cookies.loads(cookie, max_age=None if max_age_s <= 0 else int(max_age_s) + 60)
        except BadSignature:
            return None
        return value if isinstance(value, str) else None

    def csrf(self, purpose: str, subject: str) -> str:
        return hmac.new(self.secret, f"{purpose}:{subject}".encode(), hashlib.sha256).hexdigest()[:40]


class LoginThrottle:
    """Failed logins per client address in a sliding window (memory of this process)."""

    def __init__(self, limit: int, window_s: float = 600.0) -> None:
        self.limit, self.window = limit, window_s
        self._fails: dict[str, deque[float]] = {}

    def blocked(self, source: str, now: float) -> bool:
        q = self._fails.get(source)
        while q and now - q[0] > self.window:
            q.popleft()
        return q is not None and len(q) >= self.limit

    def failed(self, source: str, now: float) -> None:
        self._fails.setdefault(source, deque()).append(now)
        if len(self._fails) > 10_000:  # bounded: drop the oldest addresses
            for k in list(self._fails)[:1000]:
                del self._fails[k]


def _peer(request: Request) -> str | None:
    return request.client.host if request.client else None


def from_trusted_proxy(sso: SsoSettings | None, peer: str | None) -> bool:
    if sso is None or not peer:
        return False
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(ip in net for net in sso.trusted_proxies)


def client_address(ctx: WebContext, request: Request) -> str | None:
    """The address to record: the TCP peer, or behind a trusted proxy the address it forwarded."""
    peer = _peer(request)
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded and from_trusted_proxy(ctx.config.auth.sso, peer):
        return forwarded.split(",")[-1].strip()[:64] or peer
    return peer


def is_tls(ctx: WebContext, request: Request) -> bool:
    if request.url.scheme == "https":
        return True
    proto = request.headers.get("x-forwarded-proto")
    return proto == "https" and from_trusted_proxy(ctx.config.auth.sso, _peer(request))


def sso_role(sso: SsoSettings, groups_header: str | None) -> str | None:
    groups = [g.strip() for g in (groups_header or "").split(",") if g.strip()]
    roles = [sso.group_roles[g] for g in groups if g in sso.group_roles]
    return max(roles, key=ROLES.index) if roles else None


def identify(ctx: WebContext, request: Request) -> Principal | None:
    """The principal behind this request, or None. Raises NotSignedIn for a bad token (say why)."""
    source = client_address(ctx, request)
    now = ctx.clock.now()
    auth = request.headers.get("authorization", "")
    if auth:
        scheme, _, secret = auth.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise NotSignedIn("expected 'Authorization: Bearer <token>', got another scheme")
        token = ctx.accounts.token_for(secret.strip(), now)
        if token is None:
            raise NotSignedIn("the API token is unknown or revoked")
        return Principal(f"token:{token.name}", token.role, "token", source, None)
    sso = ctx.config.auth.sso
    if sso is not None and from_trusted_proxy(sso, _peer(request)):
        name = request.headers.get(sso.user_header)
        if name:
            name = name.strip()[:64]
            role = sso_role(sso, request.headers.get(sso.groups_header))
            if role is None:
                raise Forbidden(
                    f"signed in by single sign-on as {name}, but none of your groups maps to a role here; "
                    "ask an administrator to add your group to [auth.sso] group_roles",
                    needed_role="viewer",
                )
            return Principal(name, role, "sso", source, ctx.signer.csrf("sso", name))
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        idle = timedelta(minutes=ctx.config.auth.session_idle_minutes)
        sid = ctx.signer.session_id(cookie, 0)
        user = ctx.accounts.session_user(sid, now, idle) if sid else None
        if user is not None and sid is not None:
            return Principal(user.name, user.role, "password", source, ctx.signer.csrf("session", sid), sid)
    return None


async def _csrf_sent(request: Request) -> str | None:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        return form.get(CSRF_FIELD, [None])[0]
    return None


def require(role: str) -> Callable[[WebContext, Request], Awaitable[Principal]]:
    """A dependency: the principal, when signed in with at least `role` (and, for a state-changing
    request made with a cookie or SSO, carrying the right CSRF token)."""

    async def dependency(ctx: Ctx, request: Request) -> Principal:
        p = identify(ctx, request)
        if p is None:
            raise NotSignedIn("sign in first")
        if not role_allows(p.role, role):
            raise Forbidden(
                f"this needs the {role} role; you are signed in as {p.name} with the {p.role} role",
                needed_role=role,
                your_role=p.role,
            )
        if request.method not in SAFE_METHODS and p.csrf is not None:
            sent = await _csrf_sent(request)
            if sent is None:
                raise Forbidden("refused: the request carries no CSRF token (reload the page and try again)")
            if not hmac.compare_digest(sent, p.csrf):
                raise Forbidden("refused: the CSRF token is wrong or from another session (reload the page)")
        return p

    dependency.__name__ = f"require_{role}"
    return dependency


Viewer = Annotated[Principal, Depends(require("viewer"))]
InventoryStaff = Annotated[Principal, Depends(require("inventory"))]
Operations = Annotated[Principal, Depends(require("operations"))]
Admin = Annotated[Principal, Depends(require("admin"))]


def wants_json(request: Request) -> bool:
    path = request.url.path
    accept = request.headers.get("accept", "")
    return (
        path.startswith("/api/")
        or path.endswith(".csv")
        or path in ("/openapi.json",)
        or ("application/json" in accept and "text/html" not in accept)
    )


def login_redirect(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"/login?next={quote(target, safe='')}"
