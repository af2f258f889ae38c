"""Hypothesis stateful test: the controller link and the real firmware over a noisy in-memory line.

Whatever the sequence of dispenses, repeats, queries, reboots, faults, door moves and restocks:
every DISPENSE command_id causes at most one physical drop, and the outcome the controller learned
for it is the truth (`dropped` exactly when its kit fell). Faults that make the board itself blind
(miss_drop, stuck_sensor) are left out: there the board cannot know the truth either.
"""

from __future__ import annotations

import queue
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from controller.serial.board_api import BoardEvent
from controller.serial.board_link import SerialBoard
from simulator.board import SimulatedBoard
from simulator.memlink import serial_pair

COLUMNS = 3
TRUTHFUL_FAULTS = ("jam", "dead_motor", "reboot_during_dispense")
# answered without journaling (the coil never turned): a repeat may run the command after all
NOT_JOURNALED = {"door_open", "bad_column"}


class LinkAndFirmware(RuleBasedStateMachine):
    cids = Bundle("cids")

    def __init__(self) -> None:
        super().__init__()
        self.sim: SimulatedBoard | None = None
        self.link: SerialBoard | None = None
        self.events: queue.Queue[BoardEvent] = queue.Queue()
        self.learned: dict[int, str] = {}
        self.column_of: dict[int, int] = {}
        self.next_cid = 1
        self.next_unknown = 10**6

    @initialize(
        noise=st.sampled_from([0.0, 0.005, 0.02]), seed=st.integers(0, 2**16), stock=st.integers(0, 4)
    )
    def power_on(self, noise: float, seed: int, stock: int) -> None:
        controller_end, board_end = serial_pair(noise=noise or None, seed=seed)
        self.sim = SimulatedBoard(columns=COLUMNS, stock=stock, spin_ms=5, seed=seed)
        self.sim.attach(board_end)
        self.sim.start()
        self.link = SerialBoard.from_port(controller_end, reply_timeout=2.0, request_timeout=60.0)
        self.link.start(self.events.put, timeout=30.0)

    @property
    def board(self) -> SerialBoard:
        assert self.link is not None
        return self.link

    @property
    def world(self) -> SimulatedBoard:
        assert self.sim is not None
        return self.sim

    def learn(self, cid: int, outcome: str) -> None:
        known = self.learned.get(cid)
        if known is not None and known not in NOT_JOURNALED:
            assert outcome == known, f"command {cid}: journaled {known}, now told {outcome}"
        self.learned[cid] = outcome

    @rule(target=cids, column=st.integers(0, COLUMNS + 1))
    def dispense_new(self, column: int) -> int:
        cid, self.next_cid = self.next_cid, self.next_cid + 1
        self.column_of[cid] = column
        result = self.board.dispense(cid, column)
        assert result.command_id == cid
        if not 1 <= column <= COLUMNS:
            assert result.outcome == "bad_column"
        self.learn(cid, result.outcome)
        return cid

    @rule(cid=cids)
    def dispense_again(self, cid: int) -> None:
        """A retry after a lost answer. A refused command is finished for the controller: the unit
        retries with a new command_id (a refusal is not journaled, so a late copy of it could
        otherwise answer the retry)."""
        if self.learned[cid] in NOT_JOURNALED:
            self.query(cid)
            return
        self.learn(cid, self.board.dispense(cid, self.column_of[cid]).outcome)

    @rule(cid=cids)
    def query(self, cid: int) -> None:
        outcome = self.board.query_result(cid).outcome
        known = self.learned[cid]
        if known in NOT_JOURNALED:
            assert outcome in ("unknown_command", known), f"command {cid}: refused {known}, query: {outcome}"
        else:
            assert outcome == known, f"command {cid}: journaled {known}, query says {outcome}"

    @rule()
    def query_never_sent(self) -> None:
        self.next_unknown += 1
        assert self.board.query_result(self.next_unknown).outcome == "unknown_command"

    @rule(name=st.sampled_from(TRUTHFUL_FAULTS), p=st.sampled_from([0.0, 0.5, 1.0]))
    def fault(self, name: str, p: float) -> None:
        self.world.set_fault(name, p)

    @rule()
    def reboot(self) -> None:
        self.world.reboot()

    @rule(is_open=st.booleans())
    def door(self, is_open: bool) -> None:
        self.world.set_door(is_open)

    @rule(column=st.integers(1, COLUMNS), n=st.integers(0, 3))
    def restock(self, column: int, n: int) -> None:
        self.world.set_stock(column, n)

    @rule()
    def ping(self) -> None:
        assert self.board.ping(timeout=30.0) > 0

    @invariant()
    def learned_outcomes_are_the_physical_truth(self) -> None:
        if self.sim is None:
            return
        stats: dict[str, Any] = self.sim.stats()
        assert stats["double_drops"] == []
        assert stats["unattributed"] == 0
        for cid, outcome in self.learned.items():
            fell = stats["per_command"].get(str(cid), 0)
            assert fell == (1 if outcome == "dropped" else 0), f"command {cid}: told {outcome}, {fell} fell"
        assert stats["dropped"] == sum(o == "dropped" for o in self.learned.values())

    def teardown(self) -> None:
        if self.link is not None:
            self.link.close()
        if self.sim is not None:
            self.sim.stop()


LinkAndFirmware.TestCase.settings = settings(
    max_examples=15,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_link_and_firmware = LinkAndFirmware.TestCase
