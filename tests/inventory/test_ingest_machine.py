"""Hypothesis state machine: any interleaving of deliveries, duplicates and clock ticks keeps the store
equal to a plain model (events counted once, stock from the newest event per column, ack = the
gap-free prefix, replays asked exactly from the first missing seq)."""

from __future__ import annotations

import random

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from inventory.clock import FakeClock
from inventory.ingest import Incoming
from inventory.store import SqliteStore
from schemas.models import DispenseEvent, RestockEvent
from tests.inventory.conftest import make_config
from tests.inventory.gen import UnitStream
from tests.inventory.test_ingest import ingestor


class IngestMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = SqliteStore(":memory:")
        self.store.migrate()
        self.clock = FakeClock()
        self.ing, self.rec = ingestor(self.store, make_config(1), self.clock)
        self.stream = UnitStream("unit-001", "Site B")
        self.stream.random_day(random.Random(1), days=5, vends=12)
        self.msgs = self.stream.messages()
        self.delivered: set[int] = set()  # seqs

    def teardown(self) -> None:
        self.store.close()

    @rule(data=st.data(), size=st.integers(1, 6))
    def deliver(self, data: st.DataObject, size: int) -> None:
        idx = data.draw(st.lists(st.integers(0, len(self.msgs) - 1), min_size=1, max_size=size))
        self.ing.process([Incoming(*self.msgs[i]) for i in idx])
        self.delivered |= {i + 1 for i in idx}

    @rule(seconds=st.sampled_from([1, 10, 31, 100]))
    def tick(self, seconds: int) -> None:
        self.clock.advance(seconds)
        for cmd in self.ing.tick():
            assert cmd.from_seq == self.prefix() + 1, "a replay starts at the first missing seq"

    def prefix(self) -> int:
        n = 0
        while n + 1 in self.delivered:
            n += 1
        return n

    @invariant()
    def store_matches_the_model(self) -> None:
        assert self.store.count_events() == len(self.delivered)
        row = self.store.unit("unit-001")
        assert row is not None and row.acked_seq == self.prefix()
        expected: dict[int, tuple[int, int]] = {}
        for seq in self.delivered:
            e = self.stream.events[seq - 1]
            if isinstance(e, DispenseEvent | RestockEvent) and seq > expected.get(e.column, (0, 0))[0]:
                expected[e.column] = (seq, e.stock_after)
        assert row.stock == {c: n for c, (_, n) in expected.items()}


TestIngestMachine = IngestMachine.TestCase
TestIngestMachine.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
