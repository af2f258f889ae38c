"""Event generators for the inventory tests: a unit's event stream with its own ground truth."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.models import (
    ColumnState,
    DispenseEvent,
    EventBase,
    RestockEvent,
    Status,
    UnitState,
    VendFailedEvent,
    VideoEvent,
    topic,
)


def vending_state(unit: str, site: str, ts: datetime, columns: list[ColumnState], **fields: Any) -> UnitState:
    """A vending unit's retained state (config version 1, empty outbox, last_seq 0 unless given)."""
    return UnitState(
        **{
            "unit": unit,
            "site": site,
            "ts": ts,
            "mode": "vending",
            "config_version": "1",
            "columns": columns,
            "outbox_depth": 0,
            "last_seq": 0,
            **fields,
        }
    )


@dataclass
class UnitStream:
    """Makes a plausible event sequence for one unit and counts, independently of the store,
    what the reports must say."""

    unit: str
    site: str
    columns: int = 2
    start: datetime = datetime(2026, 9, 20, 8, 0, tzinfo=UTC)
    seq: int = 0
    stock: dict[int, int] = field(default_factory=dict)
    events: list[EventBase] = field(default_factory=list)
    kits: Counter[str] = field(default_factory=Counter)  # month -> kits
    doses: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    tests: Counter[str] = field(default_factory=Counter)
    started: Counter[str] = field(default_factory=Counter)
    completed: Counter[str] = field(default_factory=Counter)

    def _base(self, minutes: float) -> dict[str, Any]:
        self.seq += 1
        return {
            "event_id": f"{self.unit}-{self.seq:08d}",
            "seq": self.seq,
            "unit": self.unit,
            "ts": self.start + timedelta(minutes=minutes),
        }

    def restock(self, minutes: float, column: int, count: int, counted_before: int | None = None) -> None:
        before = self.stock.get(column, 0)
        disc = (counted_before - before) if counted_before is not None else 0
        self.stock[column] = count
        self.events.append(
            RestockEvent(
                **self._base(minutes),
                column=column,
                added=count - before,
                stock_after=count,
                expected_before=before,
                counted_before=counted_before,
                discrepancy=disc,
                reason="miscount" if disc else None,
                lot="LOT-A1",
                source="local",
            )
        )

    def vend(self, minutes: float, column: int, doses: int = 2, ok: bool = True) -> None:
        month = (self.start + timedelta(minutes=minutes)).strftime("%Y-%m")
        self.events.append(VideoEvent(**self._base(minutes), phase="started", language="en"))
        self.started[month] += 1
        self.events.append(VideoEvent(**self._base(minutes + 1), phase="completed", language="en"))
        self.completed[month] += 1
        if not ok:
            self.events.append(VendFailedEvent(**self._base(minutes + 2), reason="jammed"))
            self.failures[month] += 1
            return
        self.stock[column] -= 1
        self.events.append(
            DispenseEvent(
                **self._base(minutes + 2),
                column=column,
                product="naloxone-4mg",
                doses=doses,
                lot="LOT-A1",
                command_id=self.seq,
                language="en",
                via="video",
                stock_after=self.stock[column],
            )
        )
        self.kits[month] += 1
        self.doses[month] += doses

    def test_vend(self, minutes: float, column: int) -> None:
        """A technician's test vend: a kit drops but nobody was given it."""
        self.stock[column] -= 1
        self.events.append(
            DispenseEvent(
                **self._base(minutes),
                column=column,
                product="naloxone-4mg",
                doses=2,
                command_id=self.seq,
                via="test",
                stock_after=self.stock[column],
            )
        )
        self.tests[(self.start + timedelta(minutes=minutes)).strftime("%Y-%m")] += 1

    def random_day(self, rng: random.Random, days: int = 60, vends: int = 40) -> None:
        for c in range(1, self.columns + 1):
            self.restock(0, c, 30)
        for i in range(vends):
            col = rng.randint(1, self.columns)
            minutes = (i + 1) * days * 24 * 60 / (vends + 1)
            if self.stock[col] == 0:
                self.restock(minutes - 5, col, 30)
            if rng.random() < 0.05:
                self.test_vend(minutes, col)
            else:
                self.vend(minutes, col, doses=rng.choice([1, 2]), ok=rng.random() > 0.15)

    def messages(self) -> list[tuple[str, bytes]]:
        return [
            (topic(self.unit, "event", e.type), e.model_dump_json().encode())  # type: ignore[attr-defined]
            for e in self.events
        ]

    def state(self, ts: datetime, par: int = 5, last_seq: int | None = None) -> UnitState:
        cols = [
            ColumnState(column=c, product="naloxone-4mg", capacity=30, par=par, stock=n, lot="LOT-A1")
            for c, n in sorted(self.stock.items())
        ]
        seq = self.seq if last_seq is None else last_seq
        return vending_state(self.unit, self.site, ts, cols, last_seq=seq, temperature_c=21.0)

    def status(self, ts: datetime, state: str = "online", session: int = 1) -> Status:
        return Status(state=state, session=session, ts=ts)  # type: ignore[arg-type]
