"""The fleet as staff see it: each unit's columns (stock against par, lot queue, expiry, holds),
online state, temperature against its products' label range, alarms, outbox lag and days of stock
left (inventory.planning's one definition), computed from the store at a given time."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from inventory.planning import days_of_stock, local_days, weekday_rates
from inventory.store import Store, UnitRow
from schemas.models import LabelRange, LotHold, LotSegment

RECENT_DAYS = 7  # "kits this week" on the fleet page


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
    lots: tuple[LotSegment, ...] = ()  # front (next to drop) first
    held: str | None = None  # why the unit will not vend this column's front kit

    @property
    def segments(self) -> tuple[LotSegment, ...]:
        """The lot queue; a unit that reports none has one segment: the column's lot and stock."""
        if self.lots:
            return self.lots
        return (LotSegment(lot=self.lot, expiry=self.expiry, count=self.stock),) if self.stock else ()

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
    days_left: float | None = None  # inventory.planning.days_of_stock
    label: LabelRange = field(default_factory=LabelRange)  # the strictest of its products' ranges
    program: str = "Jail vending"
    holds: tuple[LotHold, ...] = ()
    firmware_version: str | None = None  # the dispenser board's, from the unit's state
    cert_not_after: datetime | None = None  # the unit's MQTT certificate, as its state reports

    @property
    def total_stock(self) -> int:
        return sum(c.stock for c in self.columns)


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
                tuple(sc.lots) if sc else (),
                sc.held if sc else None,
            )
        )
    return views


def label_of(row: UnitRow, products: Mapping[str, Any] | None) -> LabelRange:
    """The unit's own report of its products' label ranges wins; then central's product config; the
    strictest range over the products in its columns."""
    names = {c.product for c in row.state.columns} if row.state else set()
    ranges = []
    for name in sorted(names) or [""]:
        if row.state and name in row.state.labels:
            ranges.append(row.state.labels[name])
        elif products and name in products:
            ranges.append(products[name].label)
    if not ranges:
        return next(iter(products.values())).label if products else LabelRange()
    return LabelRange(
        storage_min_c=max(r.storage_min_c for r in ranges),
        storage_max_c=min(r.storage_max_c for r in ranges),
        excursion_min_c=max(r.excursion_min_c for r in ranges),
        excursion_max_c=min(r.excursion_max_c for r in ranges),
    )


def unit_view(
    row: UnitRow,
    recent: int,
    days_left: float | None = None,
    products: Mapping[str, Any] | None = None,
) -> UnitView:
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
        cert_not_after=row.state.cert_not_after if row.state else None,
        days_left=days_left,
        label=label_of(row, products),
        program=row.program,
        holds=tuple(row.state.holds) if row.state else (),
        firmware_version=row.state.firmware_version if row.state else None,
    )


def fleet(
    store: Store,
    now: datetime,
    only: list[str] | None = None,
    products: Mapping[str, Any] | None = None,
    tz: tzinfo = UTC,
    rates: bool = True,
) -> list[UnitView]:
    """Every unit, or those named in `only` (in that order: one page of the fleet, one unit). Without
    `rates`, no kits this week and no days of stock left (the alerts use neither; at state scale
    they were a month of every unit's hourly kits, each pass)."""
    today = now.astimezone(tz).date()
    hours = store.hourly_dispenses(now - timedelta(days=RATE_DAYS_BACK), only) if rates else []
    per_unit: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
    for unit, _product, at, n in hours:
        per_unit[unit].append((at, n))
    week_ago = now - timedelta(days=RECENT_DAYS)
    out = []
    for r in store.units(only):
        if not rates:
            out.append(unit_view(r, 0, None, products))
            continue
        days = local_days(per_unit.get(r.unit, []), tz)
        recent = sum(n for at, n in per_unit.get(r.unit, []) if at >= week_ago)
        stock = sum(c.stock for c in columns_of(r))
        left = days_of_stock(stock, weekday_rates(days, today), today)
        out.append(unit_view(r, recent, left, products))
    return out


RATE_DAYS_BACK = 30  # hours fetched for the rates: the 28 days before today, in any zone
