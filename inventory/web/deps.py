"""What every router depends on: the store, the settings, the clock, the service's runtime facts and
the page renderer, taken from app.state by FastAPI's Depends() (tests can override any of them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from inventory.accounts import Accounts, role_allows
from inventory.alert_actions import follow_ups
from inventory.audit import AuditTrail
from inventory.clock import Clock
from inventory.config import CentralConfig
from inventory.fleet import UnitView, fleet
from inventory.store import Store
from inventory.views import ago, describe

if TYPE_CHECKING:
    from inventory.commands import Commander
    from inventory.notify import EmailDigest
    from inventory.web.auth import LoginThrottle, Principal, Signer

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
STATIC = Path(__file__).resolve().parent.parent / "static"


@dataclass
class WebContext:
    """Everything the routers share, set once by create_app() on app.state.web."""

    store: Store
    config: CentralConfig
    clock: Clock
    runtime: Callable[[], dict[str, Any]]
    templates: Jinja2Templates
    accounts: Accounts
    audit: AuditTrail
    signer: Signer
    throttle: LoginThrottle
    commander: Commander | None = None
    email: EmailDigest | None = None
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    # publish one command to a unit: (unit, command name, payload); None when no broker is attached
    send_command: Callable[[str, str, bytes], None] | None = None

    def local(self, t: datetime | str | None, seconds: bool = False) -> str:
        """A time as the county reads it: in the configured zone, with the zone's abbreviation."""
        if t is None or t == "":
            return "–"
        if isinstance(t, str):
            try:
                t = datetime.fromisoformat(t.replace("Z", "+00:00"))
            except ValueError:
                return str(t)
        fmt = "%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z"
        return t.astimezone(self.tz).strftime(fmt)

    def product(self, code: str | None) -> str:
        p = self.config.products.get(code or "")
        return (p.name if p is not None and p.name else None) or code or "–"


async def form_of(request: Request) -> dict[str, str]:
    """A plain HTML form post (python-multipart is not a dependency): the first value of each field."""
    return {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}


@contextmanager
def refused_as(status: int, *errors: type[Exception]) -> Iterator[None]:
    """Answers any of `errors` raised inside with HTTP `status` and the error's own text."""
    try:
        yield
    except errors as e:
        raise HTTPException(status, str(e)) from e


def web(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.web
    return ctx


def get_store(ctx: Annotated[WebContext, Depends(web)]) -> Store:
    return ctx.store


def get_config(ctx: Annotated[WebContext, Depends(web)]) -> CentralConfig:
    return ctx.config


def get_clock(ctx: Annotated[WebContext, Depends(web)]) -> Clock:
    return ctx.clock


Ctx = Annotated[WebContext, Depends(web)]
StoreDep = Annotated[Store, Depends(get_store)]
ConfigDep = Annotated[CentralConfig, Depends(get_config)]
ClockDep = Annotated[Clock, Depends(get_clock)]


def ingest_summary(store: Store) -> dict[str, Any]:
    c, rejects = store.counters(), store.rejects()
    return {
        "messages": c.get("messages", 0),
        "events": c.get("events_inserted", 0),
        "duplicates": c.get("events_duplicate", 0),
        "rejected": sum(r["count"] for r in rejects.values()),
        "by_reason": sorted((reason, r["count"]) for reason, r in rejects.items()),
        "quarantined": sum(store.quarantine_summary().values()),
    }


def render(
    ctx: WebContext,
    request: Request,
    name: str,
    page_name: str,
    who: Principal | None,
    refresh: bool = True,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    """A server-rendered page with the header, footer and self-refresh every page shares."""
    now = ctx.clock.now()
    base = {
        "now": now,
        "page": page_name,
        "who": who,
        "can": (lambda role: who is not None and role_allows(who.role, role)),
        "local": ctx.local,
        "product": ctx.product,
        "zone": ctx.config.display_timezone,
        "refresh": ctx.config.server.refresh_s if refresh else None,
        "alert_count": ctx.store.count_active_alerts() - snoozed_count(ctx, now),
        "ingest": ingest_summary(ctx.store),
        "broker_connected": ctx.runtime().get("mqtt_connected", True),
        "ago": lambda t: ago(t, now),
        "describe": lambda e: describe(e, ctx.product),
    }
    return ctx.templates.TemplateResponse(request, name, base | extra, status_code=status_code)


def _tz(ctx: WebContext) -> ZoneInfo:
    return ZoneInfo(ctx.config.reports.timezone)


def fleet_now(ctx: WebContext, only: list[str] | None = None) -> list[UnitView]:
    """The fleet now (or the units in `only`), judged by the products' label ranges, days counted in
    the county's zone."""
    return fleet(ctx.store, ctx.clock.now(), only, ctx.config.products, _tz(ctx))


def snoozed_count(ctx: WebContext, now: datetime) -> int:
    """Active alerts someone snoozed until later: the header's badge leaves them out."""
    return sum(f.snoozed(now) for f in follow_ups(ctx.store).values())


def find_unit(ctx: WebContext, unit: str) -> UnitView:
    u = next(iter(fleet(ctx.store, ctx.clock.now(), [unit], ctx.config.products, _tz(ctx))), None)
    if u is None:
        raise HTTPException(404, f"expected a known unit id, got {unit!r}")
    return u
