"""Hypothesis state machine: the real firmware on simulated physics, with reboots, door, faults and
restocks at any moment. Every result the board reports agrees with the physical truth, and no
command id ever drops two kits."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from firmware_py import codec
from firmware_py.board import Board
from firmware_py.nvs import MemoryStore
from simulator.hal import SimHal, World
from tests.firmware.harness import FakeUart

SPIN_MS = 50
OPTIONS = {"spin_timeout_ms": 2 * SPIN_MS + 100, "settle_ms": 5, "test_ms": 10,
           "button_debounce_ms": 0, "door_debounce_ms": 0}


class FirmwareOnSimulatedPhysics(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.t = 10_000.0
        self.world = World(columns=3, stock=2, spin_ms=SPIN_MS, seed=5, clock=lambda: self.t)
        self.world.on_drop = self._attribute
        self.nvs = MemoryStore()
        self.uart = FakeUart()
        self.deframer = codec.Deframer()
        self.seq = 0
        self.outcomes: dict[int, list[int]] = {}
        self.board = self._boot("power_on")

    def _boot(self, reason: str) -> Board:
        self.world.reset_outputs()
        self.uart.rx.clear()  # the UART FIFO does not survive a reset
        board = Board(SimHal(self.world, self.uart, self.nvs, "sm-1", reason), **OPTIONS)
        queue_message = board.link.send

        def checked_send(message: codec.Message, persistent: bool = False) -> bool:
            """Check each result at the moment the board decides it (replies may arrive late)."""
            if isinstance(message, codec.DispenseResult):
                self._check_result(message)
            return queue_message(message, persistent)

        board.link.send = checked_send  # type: ignore[method-assign]
        return board

    def _attribute(self, column: int) -> int | None:
        job = self.board.job
        return job.command_id if job is not None and job.kind == "dispense" else None

    def _send(self, message: codec.Message) -> None:
        self.seq = self.seq % 255 + 1
        self.uart.rx.extend(codec.encode_frame(codec.message_frame(self.seq, message)))

    @rule(cid=st.integers(1, 6), column=st.integers(1, 4))
    def dispense(self, cid: int, column: int) -> None:
        self._send(codec.Dispense(cid, column))

    @rule(cid=st.integers(1, 6))
    def query(self, cid: int) -> None:
        self._send(codec.QueryResult(cid))

    @rule(ms=st.integers(1, 120), steps=st.integers(1, 12))
    def run(self, ms: int, steps: int) -> None:
        for _ in range(steps):
            if self.world.reboot_due():
                self.board = self._boot("watchdog")
            self.t += ms / steps
            self.board.step()
            self._drain()

    @rule()
    def reboot(self) -> None:
        self.board = self._boot("sim_reboot")

    @rule(is_open=st.booleans())
    def door(self, is_open: bool) -> None:
        self.world.set_door(is_open)

    @rule(name=st.sampled_from(["jam", "dead_motor", "stuck_sensor", "reboot_during_dispense"]),
          p=st.sampled_from([0.0, 0.5, 1.0]))
    def fault(self, name: str, p: float) -> None:
        self.world.set_fault(name, p)

    @rule(column=st.integers(1, 3), n=st.integers(0, 3))
    def restock(self, column: int, n: int) -> None:
        self.world.set_stock(column, n)

    def _drain(self) -> None:
        data = bytes(self.uart.tx)
        self.uart.tx.clear()
        for frame in self.deframer.feed(data):
            if frame.type in (codec.ACK, codec.NAK):
                continue
            self.uart.rx.extend(codec.encode_frame(codec.Frame(frame.seq, codec.ACK)))
            message = codec.decode_message(frame)
            if isinstance(message, codec.DispenseResult) and message.outcome == codec.DROPPED:
                assert self.world.truth.per_command.get(message.command_id) == 1

    def _check_result(self, result: codec.DispenseResult) -> None:
        cid, outcome = result.command_id, result.outcome
        fell = self.world.truth.per_command.get(cid, 0)
        history = self.outcomes.setdefault(cid, [])
        if outcome == codec.DROPPED:
            assert fell == 1, f"command {cid} reported dropped, {fell} kits fell"
        else:
            assert fell == 0, f"command {cid} reported {codec.OUTCOME_NAMES[outcome]}, {fell} kits fell"
        if codec.DROPPED in history:
            assert outcome == codec.DROPPED, f"command {cid} changed from dropped to {outcome}"
        history.append(outcome)

    @invariant()
    def no_command_drops_twice(self) -> None:
        doubles = {cid: n for cid, n in self.world.truth.per_command.items() if n > 1}
        assert not doubles, f"double drops: {doubles}"

    @invariant()
    def no_unattributed_drops(self) -> None:
        assert self.world.truth.unattributed == 0


FirmwareOnSimulatedPhysics.TestCase.settings = settings(max_examples=150, stateful_step_count=40,
                                                        deadline=None)
TestFirmwareOnSimulatedPhysics = FirmwareOnSimulatedPhysics.TestCase
