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
