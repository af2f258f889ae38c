"""What a unit's own ledger file says, read from outside the daemon (read-only, while it writes):
kits dispensed, stock per column, outbox depth, every event id, a dispense in flight. A thin view of
the controller's census API (controller.ledger.read_census); nalox/ never reads the ledger's tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from controller.ledger import read_census

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
    def failed(self) -> int:
        """Presses that ended without a kit: a failed vend or nothing to vend."""
        return self.types.get("vend_failed", 0) + self.types.get("out_of_stock", 0)

    @property
    def terminal(self) -> int:
        """Presses that have ended, one way or another."""
        return sum(self.types.get(t, 0) for t in TERMINAL_EVENTS)


def ledger_census(path: Path, counts_only: bool = False) -> LedgerCensus:
    """The ledger at `path`; empty before it exists. `counts_only`: events per type and the outbox depth
    only (no stock, no event ids), cheap enough to poll while a long soak's ledger grows."""
    c = read_census(path, counts_only)
    return LedgerCensus(dict(c.events), {str(col): n for col, n in c.stock.items()}, list(c.event_ids),
                        c.outbox_depth)


def dispense_in_flight(path: Path) -> bool:
    """True while the unit has a DISPENSE journaled but not settled (it is dispensing right now)."""
    return bool(read_census(path, counts_only=True).pending_commands)
