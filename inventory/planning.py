"""Restock planning: days of stock (the one definition), the fleet's lots and per-site pick lists.

Days of stock, everywhere it is shown (fleet page, unit page, pick list, API):
  rate(weekday) = kits given to people on that weekday (county time) over the 28 days before today,
                  divided by 4;
  days of stock = starting with today, each day takes its weekday's rate from the stock; the day the
                  stock runs out counts by the fraction used. None when the 28 days saw no kit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inventory.fleet import UnitView
    from inventory.store import Store

RATE_WEEKS = 4
RATE_DAYS = 7 * RATE_WEEKS
MAX_DAYS = 3650.0


def weekday_rates(kits_per_day: dict[date, int], today: date) -> list[float]:
    """Mean kits per weekday (Monday = 0) over the RATE_DAYS days before `today`."""
    totals = [0.0] * 7
    for i in range(1, RATE_DAYS + 1):
        d = today - timedelta(days=i)
        totals[d.weekday()] += kits_per_day.get(d, 0)
    return [t / RATE_WEEKS for t in totals]


def days_of_stock(stock: int, rates: Sequence[float], today: date) -> float | None:
    if sum(rates) <= 0:
        return None
    left, days = float(stock), 0.0
    wd = today.weekday()
    while days < MAX_DAYS:
        r = rates[wd]
        if r >= left and r > 0:
            return days + left / r
        left -= r
        days += 1
        wd = (wd + 1) % 7
    return MAX_DAYS


def local_days(hours: Iterable[tuple[datetime, int]], tz: tzinfo) -> dict[date, int]:
    out: dict[date, int] = defaultdict(int)
    for at, n in hours:
        out[at.astimezone(tz).date()] += n
    return dict(out)


@dataclass(frozen=True)
class Place:
    site: str
    unit: str
    column: int
    count: int
    front: bool  # the next kit this column drops is of this lot


@dataclass
class LotView:
    lot: str
    product: str
    expiry: date | None
    places: list[Place] = field(default_factory=list)
    hold: dict[str, str] | None = None  # central's fleet-wide hold (recall)
    unit_holds: list[tuple[str, str, str]] = field(default_factory=list)  # (unit, kind, reason)
    worst_outside_label_s: float = 0.0
    worst_excursion_s: float = 0.0
    worst_mkt_c: float | None = None
    dispensed: int = 0

    @property
    def kits(self) -> int:
        return sum(p.count for p in self.places)

    @property
    def sites(self) -> list[str]:
        return sorted({p.site for p in self.places})

    def expires_in_days(self, today: date) -> int | None:
        return (self.expiry - today).days if self.expiry else None


@dataclass(frozen=True)
class PickLine:
    product: str
    kits_to_bring: int  # to fill every column of that product to capacity
    columns: list[tuple[str, int, int, int]]  # (unit, column, stock, capacity)


@dataclass(frozen=True)
class PullLine:
    unit: str
    column: int
    lot: str
    expiry: date | None
    count: int
    why: str


@dataclass(frozen=True)
class PickList:
    site: str
    today: date
    pull_before: date
    bring: list[PickLine]
    pull: list[PullLine]
    days_of_stock: dict[str, float | None]  # unit -> days


@dataclass(frozen=True)
class SegmentRow:
    """One lot segment lying in a column (front first), where it is and the heat it saw."""

    site: str
    unit: str
    column: int
    product: str
    lot: str | None
    expiry: date | None
    count: int
    front: bool
    outside_label_s: float | None = None  # None: the unit reported no exposure for it
    excursion_s: float | None = None
    mkt_c: float | None = None


def lots_from_segments(
    segments: Iterable[SegmentRow],
    unit_holds: Iterable[tuple[str, str, str, str]],
    holds: dict[str, dict[str, str]],
    dispensed: dict[str, int],
) -> list[LotView]:
    """The lots these segments (in fleet order: site, unit, column, front first) make up, with the
    units' own holds (unit, lot, kind, reason) on them, central's holds (a held lot in no column is
    listed too) and kits dispensed; soonest expiry first. The one definition, fed either from the
    units' states (fleet_lots) or from the tables kept at ingest (Store.lot_page)."""
    lots: dict[str, LotView] = {}
    for seg in segments:
        if not seg.count:
            continue
        name = seg.lot or "(no lot)"
        v = lots.setdefault(name, LotView(name, seg.product, seg.expiry))
        if seg.expiry and (v.expiry is None or seg.expiry < v.expiry):
            v.expiry = seg.expiry
        v.places.append(Place(seg.site, seg.unit, seg.column, seg.count, seg.front))
        if seg.outside_label_s is not None:
            v.worst_outside_label_s = max(v.worst_outside_label_s, seg.outside_label_s)
            v.worst_excursion_s = max(v.worst_excursion_s, seg.excursion_s or 0.0)
            if seg.mkt_c is not None:
                v.worst_mkt_c = max(v.worst_mkt_c or -273.0, seg.mkt_c)
    for unit, lot, kind, reason in unit_holds:
        held = lots.get(lot)
        if held is not None:
            held.unit_holds.append((unit, kind, reason))
    for name, hold in holds.items():
        lots.setdefault(name, LotView(name, "?", None)).hold = hold
    for v in lots.values():
        v.dispensed = dispensed.get(v.lot, 0)
    return sorted(lots.values(), key=lambda v: (v.expiry is None, v.expiry or date.max, v.lot))


def fleet_lots(
    units: Sequence[UnitView], holds: dict[str, dict[str, str]], dispensed: dict[str, int]
) -> list[LotView]:
    """Every lot in any column of the fleet (from the units' reported lot queues), soonest expiry
    first, with where it is, how many kits, its holds and the worst heat exposure reported for it.
    Computed afresh from every unit's state: the reference the lots page's SQL is tested against."""
    segments = [
        SegmentRow(
            u.site,
            u.unit,
            c.column,
            c.product,
            seg.lot,
            seg.expiry,
            seg.count,
            i == 0,
            seg.exposure.seconds_outside_label if seg.exposure else None,
            seg.exposure.seconds_in_excursion if seg.exposure else None,
            seg.exposure.mkt_c if seg.exposure else None,
        )
        for u in units
        for c in u.columns
        for i, seg in enumerate(c.segments)
    ]
    unit_holds = [(u.unit, h.lot, h.kind, h.reason) for u in units for h in u.holds]
    return lots_from_segments(segments, unit_holds, holds, dispensed)


LOTS_PER_PAGE = 100


@dataclass(frozen=True)
class LotsPage:
    lots: list[LotView]  # this page's lots, soonest expiry first
    total: int  # lots matching the filters
    products: list[str]  # every lot's product (the filter's choices)
    sites: list[str]  # every site with a kit in a column


def lot_matches(name: str, product: str, lot_product: str, text: str, at_site: set[str] | None) -> bool:
    return (
        (not product or lot_product == product)
        and (at_site is None or name in at_site)
        and (not text or text.lower() in name.lower())
    )


def lots_page(
    store: Store,
    product: str = "",
    site: str = "",
    lot: str = "",
    offset: int = 0,
    limit: int | None = LOTS_PER_PAGE,
) -> LotsPage:
    """One page of fleet_lots() filtered by product, site and a lot number's part, read from the
    tables kept from the units' states (never a cache: each call reads them afresh). SQL gives each
    lot's product and soonest expiry (a few rows per unit); only the page's lots are read in full."""
    holds = store.lot_holds()
    every = store.lot_list()
    placed = {r[0] for r in every}
    every += [(name, "?", None) for name in holds if name not in placed]  # held, in no column
    at_site = set(store.lot_sites(site)) if site else None
    shown = sorted(
        (r for r in every if lot_matches(r[0], product, r[1], lot, at_site)),
        key=lambda r: (r[2] is None, r[2] or date.max, r[0]),
    )
    names = [r[0] for r in shown[offset : None if limit is None else offset + limit]]
    everything = not product and not site and not lot and offset == 0 and limit is None
    segments, unit_holds, dispensed = store.lot_segments(None if everything else names)
    wanted = set(names)
    page = lots_from_segments(
        segments, unit_holds, {k: v for k, v in holds.items() if k in wanted}, dispensed
    )
    return LotsPage(page, len(shown), sorted({r[1] for r in every}), store.lot_sites())


def pick_list(
    site: str,
    units: Sequence[UnitView],
    today: date,
    pull_days: int,
    holds: dict[str, dict[str, str]],
) -> PickList:
    """What a technician takes to one site: kits per product to fill every column to capacity, and the
    kits to take out (lots expiring within `pull_days`, expired, or on hold) so they are not vended."""
    here = [u for u in units if u.site == site]
    pull_before = today + timedelta(days=pull_days)
    need: dict[str, list[tuple[str, int, int, int]]] = defaultdict(list)
    pull: list[PullLine] = []
    for u in here:
        unit_held = {h.lot: h for h in u.holds}
        for c in u.columns:
            removed = 0
            for seg in c.segments:
                why = None
                if seg.lot in holds:
                    why = f"on hold: {holds[seg.lot]['reason']}"
                elif seg.lot in unit_held:
                    why = f"held by the unit ({unit_held[seg.lot].kind}): {unit_held[seg.lot].reason}"
                elif seg.expiry is not None and seg.expiry < today:
                    why = f"expired on {seg.expiry}"
                elif seg.expiry is not None and seg.expiry <= pull_before:
                    why = f"expires on {seg.expiry}, within {pull_days} days"
                if why and seg.count:
                    pull.append(PullLine(u.unit, c.column, seg.lot or "(no lot)", seg.expiry, seg.count, why))
                    removed += seg.count
            need[c.product].append((u.unit, c.column, c.stock - removed, c.capacity))
    bring = [
        PickLine(product, sum(cap - max(stock, 0) for _, _, stock, cap in cols), cols)
        for product, cols in sorted(need.items())
    ]
    return PickList(site, today, pull_before, bring, pull, {u.unit: u.days_left for u in here})
