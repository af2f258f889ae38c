"""Staff follow-up on an alert: acknowledge with a note, assign to a person, snooze for a time.

Kept per raising (alert key + raised_at), so an alert that clears and comes back is new work."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from inventory.store import Store, StoreError, iso, parse_iso


@dataclass(frozen=True)
class FollowUp:
    acked_by: str | None = None
    acked_at: datetime | None = None
    note: str | None = None
    assignee: str | None = None
    snoozed_until: datetime | None = None

    def snoozed(self, now: datetime) -> bool:
        return self.snoozed_until is not None and self.snoozed_until > now

    def as_dict(self) -> dict[str, Any]:
        return {
            "acked_by": self.acked_by,
            "acked_at": iso(self.acked_at) if self.acked_at else None,
            "note": self.note,
            "assignee": self.assignee,
            "snoozed_until": iso(self.snoozed_until) if self.snoozed_until else None,
        }


def follow_ups(store: Store) -> dict[tuple[str, str], FollowUp]:
    with store.tx() as tx:
        rows = tx.rows(
            "SELECT f.alert_key, f.raised_at, f.acked_by, f.acked_at, f.note, f.assignee, f.snoozed_until "
            "FROM alert_actions f JOIN active_alerts a "
            "ON a.alert_key = f.alert_key AND a.raised_at = f.raised_at"
        )
    return {(r[0], r[1]): FollowUp(r[2], parse_iso(r[3]), r[4], r[5], parse_iso(r[6])) for r in rows}


def update(
    store: Store, alert_key: str, changes: dict[str, Any]
) -> tuple[dict[str, Any], FollowUp, dict[str, Any]]:
    """Apply `changes` (acked_by/acked_at/note, assignee, snoozed_until) to the active alert's follow-up.
    Returns (the alert, the follow-up before, the follow-up after as a dict); StoreError if not active."""
    allowed = {"acked_by", "acked_at", "note", "assignee", "snoozed_until"}
    assert set(changes) <= allowed, changes
    with store.tx() as tx:
        a = tx.one(
            "SELECT alert_key, unit, site, kind, severity, message, raised_at FROM active_alerts "
            "WHERE alert_key = ?",
            (alert_key,),
        )
        if a is None:
            raise StoreError(f"expected an active alert, got {alert_key[:100]!r} (cleared meanwhile?)")
        raised = a[6]
        r = tx.one(
            "SELECT acked_by, acked_at, note, assignee, snoozed_until FROM alert_actions "
            "WHERE alert_key = ? AND raised_at = ?",
            (alert_key, raised),
        )
        before = FollowUp(r[0], parse_iso(r[1]), r[2], r[3], parse_iso(r[4])) if r else FollowUp()
        values = before.as_dict() | {
            k: (iso(v) if isinstance(v, datetime) else v) for k, v in changes.items()
        }
        tx.execute(
            "INSERT INTO alert_actions "
            "(alert_key, raised_at, acked_by, acked_at, note, assignee, snoozed_until) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (alert_key, raised_at) DO UPDATE SET "
            "acked_by = excluded.acked_by, acked_at = excluded.acked_at, note = excluded.note, "
            "assignee = excluded.assignee, snoozed_until = excluded.snoozed_until",
            (
                alert_key,
                raised,
                values["acked_by"],
                values["acked_at"],
                values["note"],
                values["assignee"],
                values["snoozed_until"],
            ),
        )
    keys = ("alert_key", "unit", "site", "kind", "severity", "message", "raised_at")
    return dict(zip(keys, a, strict=True)), before, values
