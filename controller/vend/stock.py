"""Column choice for a vend: first-expiry-first-out over each column's front kit (the next to drop);
a column whose front kit is expired or of a held lot never vends (it waits for a technician)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from controller.ledger import ColumnRow


def is_expired(row: ColumnRow, today: date) -> bool:
    return row.expiry is not None and row.expiry < today


def blocked(row: ColumnRow, today: date) -> str | None:
    """Why the column's front kit may not vend: expired, or its lot on hold; None when it may."""
    if row.stock > 0 and is_expired(row, today):
        return f"front kit of lot {row.lot} expired {row.expiry}"
    return row.held if row.stock > 0 else None


def vendable(
    rows: Iterable[ColumnRow], product: str, today: date, exclude: set[int] | None = None
) -> list[ColumnRow]:
    """Columns that may vend now, in FEFO order: earliest expiry first, unknown expiry last, then column."""
    skip = exclude or set()
    ok = [
        r
        for r in rows
        if r.product == product
        and r.stock > 0
        and r.fault is None
        and blocked(r, today) is None
        and r.column not in skip
    ]
    return sorted(ok, key=lambda r: (r.expiry is None, r.expiry or date.max, r.column))


def choose_column(
    rows: Iterable[ColumnRow], product: str, today: date, exclude: set[int] | None = None
) -> ColumnRow | None:
    candidates = vendable(rows, product, today, exclude)
    return candidates[0] if candidates else None


def expired_with_stock(rows: Iterable[ColumnRow], today: date) -> list[ColumnRow]:
    return [r for r in rows if r.stock > 0 and is_expired(r, today)]


def total_stock(rows: Iterable[ColumnRow], product: str) -> int:
    return sum(r.stock for r in rows if r.product == product)
