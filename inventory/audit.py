"""The append-only audit trail of staff actions: who, when, from where, what, before and after.

Only `record` writes (INSERT); nothing in the code updates or deletes a row. Logins, failed logins,
user and token changes, discrepancy resolutions, accepted gaps, alert follow-up, commands sent to
units and their answers all land here (DESIGN.md invariant 9). Staff are named; the people at the
machines never are.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from inventory.store import Store, iso, parse_iso

OUTCOMES = ("ok", "refused", "failed", "sent", "answered", "timeout")
FIELDS = ("at", "actor", "role", "via", "source", "action", "target", "outcome", "before", "after", "detail")


@dataclass(frozen=True)
class Actor:
    """Who did it: a staff member (password or SSO), a token, or the service itself."""

    name: str
    role: str | None
    via: str  # password | sso | token | cli | system
    source: str | None = None  # the client address (behind a trusted proxy: the forwarded one)


SYSTEM = Actor("nalox-inventory", None, "system")
_order = itertools.count()


@dataclass(frozen=True)
class Entry:
    id: str
    at: datetime
    actor: str
    role: str | None
    via: str
    source: str | None
    action: str
    target: str | None
    outcome: str
    before: Any
    after: Any
    detail: str | None

    def row(self) -> dict[str, Any]:
        return {
            "at": iso(self.at),
            "actor": self.actor,
            "role": self.role,
            "via": self.via,
            "source": self.source,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "before": json.dumps(self.before, sort_keys=True) if self.before is not None else "",
            "after": json.dumps(self.after, sort_keys=True) if self.after is not None else "",
            "detail": self.detail or "",
        }


class AuditTrail:
    def __init__(self, store: Store) -> None:
        self.store = store

    def record(
        self,
        actor: Actor,
        action: str,
        now: datetime,
        target: str | None = None,
        outcome: str = "ok",
        before: Any = None,
        after: Any = None,
        detail: str | None = None,
    ) -> str:
        # ids sort by time first, so "newest first" is one index order even within a microsecond
        entry_id = f"{now.strftime('%Y%m%d%H%M%S%f')}-{next(_order) % 10**9:09d}-{secrets.token_hex(3)}"
        with self.store.tx() as tx:
            tx.execute(
                "INSERT INTO audit_log (id, at, actor, role, via, source, action, target, outcome, "
                "before_json, after_json, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry_id,
                    iso(now),
                    actor.name[:100],
                    actor.role,
                    actor.via,
                    (actor.source or "")[:64] or None,
                    action[:64],
                    (target or "")[:200] or None,
                    outcome,
                    json.dumps(before, default=str) if before is not None else None,
                    json.dumps(after, default=str) if after is not None else None,
                    (detail or "")[:1000] or None,
                ),
            )
        return entry_id

    def entries(
        self,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 200,
    ) -> list[Entry]:
        """Newest first. `target` matches a prefix (a unit id finds every action on that unit)."""
        sql = (
            "SELECT id, at, actor, role, via, source, action, target, outcome, before_json, after_json, "
            "detail "
            "FROM audit_log WHERE 1 = 1"
        )
        params: list[Any] = []
        if actor:
            sql, params = sql + " AND actor = ?", [*params, actor]
        if action:
            sql, params = sql + " AND action = ?", [*params, action]
        if target:
            sql, params = sql + " AND (target = ? OR target LIKE ?)", [*params, target, target + "%"]
        if since:
            sql, params = sql + " AND at >= ?", [*params, iso(since)]
        if until:
            sql, params = sql + " AND at < ?", [*params, iso(until)]
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        with self.store.tx() as tx:
            rows = tx.rows(sql, params)
        return [
            Entry(
                r[0],
                parse_iso(r[1]) or datetime.min,
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                r[7],
                r[8],
                json.loads(r[9]) if r[9] else None,
                json.loads(r[10]) if r[10] else None,
                r[11],
            )
            for r in rows
        ]

    def actions(self) -> list[str]:
        with self.store.tx() as tx:
            return [str(r[0]) for r in tx.rows("SELECT DISTINCT action FROM audit_log ORDER BY action")]


def to_csv(entries: list[Entry]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    w.writeheader()
    for e in entries:
        w.writerow(e.row())
    return buf.getvalue()
