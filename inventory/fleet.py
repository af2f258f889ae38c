"""The fleet as staff see it: each unit's columns (stock against par, lot, expiry), online state,
temperature, alarms, outbox lag and days of stock left, computed from the store at a given time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from inventory.store import Store, UnitRow

RATE_DAYS = 7  # "recent rate" = dispenses over the last week


@dataclass(frozen=True)
class ColumnView:
    column: int
    product: str
    stock: int
    par: int
    capacity: int
    lot: str | None
    expiry: date | None
    fault: str | None

    @property
    def level(self) -> str:
        if self.stock == 0:
            return "out"
        return "low" if self.stock < self.par else "ok"

    def expires_in_days(self, today: date) -> int | None:
        return (self.expiry - today).days if self.expiry else None


@dataclass(frozen=True)
class UnitView:
    unit: str
    site: str
    name: str | None
    online: bool
    status: str  # online | offline | unknown
    since: datetime | None
    columns: list[ColumnView]
    temperature_c: float | None
    alarms: list[tuple[str, str, str]]  # (severity, code, message)
    outbox_depth: int | None
    outbox_oldest_age_s: float | None
    acked_seq: int
    last_seq: int
    dispenses_recent: int
    mode: str | None
    last_heard: datetime | None = None  # newest state or telemetry the unit sent
    seq_reset_at: datetime | None = None  # the unit's event numbering restarted: acks paused

    @property
    def total_stock(self) -> int:
        return sum(c.stock for c in self.columns)

    @property
    def days_left(self) -> float | None:
        rate = self.dispenses_recent / RATE_DAYS
        return self.total_stock / rate if rate > 0 else None


def columns_of(row: UnitRow) -> list[ColumnView]:
    """Par, capacity, lot and expiry from the unit's retained state; stock from the counted events
    (falling back to the state's figure for a column no event has touched yet)."""
    views = []
    state_cols = {c.column: c for c in row.state.columns} if row.state else {}
    for col in sorted(set(state_cols) | set(row.stock)):
        sc = state_cols.get(col)
        stock = row.stock.get(col, sc.stock if sc else 0)
        views.append(
            ColumnView(
                col,
                sc.product if sc else "?",
                stock,
                sc.par if sc else 0,
                sc.capacity if sc else 0,
                sc.lot if sc else None,
                sc.expiry if sc else None,
                sc.fault if sc else None,
            )
        )
    return views


def unit_view(row: UnitRow, recent: int) -> UnitView:
    temp = (
        row.telemetry.temperature_c
        if row.telemetry and row.telemetry.temperature_c is not None
        else (row.state.temperature_c if row.state else None)
    )
    depth = row.telemetry.outbox_depth if row.telemetry else (row.state.outbox_depth if row.state else None)
    age = (
        row.telemetry.outbox_oldest_age_s
        if row.telemetry
        else (row.state.outbox_oldest_age_s if row.state else None)
    )
    alarms = [(str(a.severity), a.code, a.message) for a in row.state.alarms] if row.state else []
    return UnitView(
        unit=row.unit,
        site=row.site,
        name=row.name,
        online=row.status == "online",
        status=row.status or "unknown",
        since=row.status_since,
        columns=columns_of(row),
        temperature_c=temp,
        alarms=alarms,
        outbox_depth=depth,
        outbox_oldest_age_s=age,
        acked_seq=row.acked_seq,
        last_seq=max(row.reported_last_seq, row.acked_seq),
        dispenses_recent=recent,
        mode=row.state.mode if row.state else None,
        last_heard=max((x.ts for x in (row.state, row.telemetry) if x is not None), default=None),
        seq_reset_at=row.seq_reset_at,
    )


def fleet(store: Store, now: datetime, only: list[str] | None = None) -> list[UnitView]:
    """Every unit, or those named in `only` (in that order: one page of the fleet, one unit)."""
    counts = store.counts_since(now - timedelta(days=RATE_DAYS), ("dispense",), only=only)
    return [unit_view(r, counts.get((r.unit, "dispense"), 0)) for r in store.units(only)]
