"""What a unit's own ledger file says, read from outside the daemon (read-only, while it writes):
kits dispensed, stock per column, outbox depth, every event id, a dispense in flight.

The one place in nalox/ that reads the ledger's tables; when the controller offers a read-only
census API, this module is what changes."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# the events that end a vend, one per press
TERMINAL_EVENTS = frozenset({"dispense", "vend_failed", "out_of_stock"})


@dataclass
class LedgerCensus:
    types: dict[str, int] = field(default_factory=dict)  # event type -> how many
    stock: dict[str, int] = field(default_factory=dict)  # column (as text) -> kits
    event_ids: list[str] = field(default_factory=list)  # in seq order
    outbox: int = 0  # events not yet acked by central

    @property
    def dispensed(self) -> int:
        return self.types.get("dispense", 0)

    @property
    def terminal(self) -> int:
        """Presses that have ended, one way or another."""
        return sum(self.types.get(t, 0) for t in TERMINAL_EVENTS)


@contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        yield con
    finally:
        con.close()


def ledger_census(path: Path) -> LedgerCensus:
    """The ledger at `path` (SQLite WAL lets us read while the daemon writes); empty before it exists."""
    if not path.exists():
        return LedgerCensus()
    with _read_only(path) as con:
        types = {str(t): int(n) for t, n in con.execute("SELECT event_type, COUNT(*) FROM events GROUP BY 1")}
        stock = {str(c): int(n) for c, n in con.execute("SELECT col, stock FROM columns ORDER BY col")}
        ids = [str(r[0]) for r in con.execute("SELECT event_id FROM events ORDER BY seq")]
        outbox = int(con.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    return LedgerCensus(types, stock, ids, outbox)


def dispense_in_flight(path: Path) -> bool:
    """True while the unit has a DISPENSE journaled but not settled (it is dispensing right now)."""
    if not path.exists():
        return False
    with _read_only(path) as con:
        row = con.execute("SELECT COUNT(*) FROM commands WHERE state='pending'").fetchone()
    return bool(row and row[0])
