"""Hypothesis drives presses, video outcomes, jams, door, temperature, time and kills against the unit daemon,
and checks the invariants against the board's physical ground truth after every step.

Run against two boards by class attribute: the scripted FakeBoard, and the real firmware in
simulator.board.SimulatedBoard over simulator.memlink through controller.serial.board_link.SerialBoard.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Protocol

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from controller.clock import FakeClock
from controller.daemon import UnitDaemon
from controller.fakes import CrashingBoard, FakeBoard, FakePlayer, SimulatedCrash
from schemas.models import DispenseEvent, VideoEvent
from tests.controller.conftest import make_config

COLUMNS = 3
STOCK = 3
WINDOW_S = 60.0
CAP = 3


class Machine(Protocol):
    """What a backend's machine (FakeBoard or SimulatedBoard) does alike."""

    def press(self, lang: str) -> None: ...
    def set_door(self, open_: bool, /) -> None: ...
    def reboot(self) -> None: ...
    def stats(self) -> dict[str, Any]: ...


class Backend:
    """What the model does to the machine the same way on both backends."""

    machine: Machine

    def press(self, lang: str) -> None:
        self.machine.press(lang)

    def door(self, open_: bool) -> None:
        self.machine.set_door(open_)

    def reboot(self) -> None:
        self.machine.reboot()

    def stats(self) -> dict[str, Any]:
        return self.machine.stats()


class FakeBackend(Backend):
    """The scripted board: outcomes decided by the test."""

    def __init__(self) -> None:
        self.board = self.machine = FakeBoard(columns=COLUMNS, stock=STOCK)

    def daemon_board(self) -> Any:
        return self.board

    def jam_next(self, column: int) -> None:
        self.board.script.setdefault(column, deque()).append("jammed")

    def temperature(self, c: float) -> None:
        self.board.temperature_c = c

    def load(self, column: int, n: int) -> None:
        self.board.stock[column] = n

    def await_events(self, daemon: UnitDaemon, n: int) -> None:
        """FakeBoard delivers events synchronously."""

    def restart_link(self) -> Any:
        return self.board

    def close(self) -> None:
        pass


class SimBackend(Backend):
    """The real firmware on simulated hardware, over the in-memory serial line and the real link."""

    def __init__(self) -> None:
        from simulator.board import SimulatedBoard

        self.sim = self.machine = SimulatedBoard(columns=COLUMNS, stock=STOCK, spin_ms=5, seed=1)
        self.sim.set_temperature(22.0)
        self.link: Any = None
        self._connect()
        self.sim.start()

    def _connect(self) -> None:
        from controller.serial.board_link import SerialBoard
        from simulator.memlink import serial_pair

        controller_end, board_end = serial_pair()
        self.sim.attach(board_end)
        self.link = SerialBoard.from_port(controller_end, reply_timeout=5.0)

    def daemon_board(self) -> Any:
        return self.link

    def jam_next(self, column: int) -> None:
        self.sim.set_fault("jam", 1.0, column)
        self.jammed = column

    def temperature(self, c: float) -> None:
        self.sim.set_temperature(c)

    def load(self, column: int, n: int) -> None:
        self.sim.set_stock(column, n)

    def await_events(self, daemon: UnitDaemon, n: int) -> None:
        deadline = time.monotonic() + 5
        pause = threading.Event()
        while daemon._inbox.qsize() < n:
            assert time.monotonic() < deadline, "expected the board's event over the link within 5 s"
            pause.wait(0.002)

    def restart_link(self) -> Any:
        self.link.close()
        self._connect()
        return self.link

    def close(self) -> None:
        self.link.close()
        self.sim.stop()


class UnitMachine(RuleBasedStateMachine):
    backend_class: type = FakeBackend

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="nalox-sm-"))
        self.config = make_config(
            self.dir,
            columns=[
                {
                    "column": c,
                    "product": "nasal-4mg",
                    "capacity": 10,
                    "initial_stock": STOCK,
                    "lot": f"L{c}",
                    "expiry": f"2028-0{c}-01",
                }
                for c in range(1, COLUMNS + 1)
            ],
            policies={"another_kit_window_s": WINDOW_S, "kits_per_session": CAP, "status_poll_s": 30.0},
        )
        self.clock = FakeClock()
        self.backend = self.backend_class()
        self.presses = 0
        self.crashes = 0
        self.daemon: UnitDaemon
        self.board: CrashingBoard
        self._boot(self.backend.daemon_board())

    def _boot(self, inner: Any) -> None:
        self.board = CrashingBoard(inner)
        self.player = FakePlayer(self.clock, duration_s=3.0)
        self.daemon = UnitDaemon(self.config, self.board, self.player, self.clock)
        self.daemon.open()
        self._pump()

    def _pump(self) -> None:
        try:
            self.daemon.pump()
        except SimulatedCrash:
            self.crashes += 1
            self._restart()

    def _restart(self) -> None:
        """What kill -9 leaves: the ledger file and the board. Nothing else survives."""
        self.daemon.ledger.close()
        self._boot(self.backend.restart_link())

    # ------------------------------------------------------------ rules

    @rule(lang=st.sampled_from(["en", "es"]))
    def press(self, lang: str) -> None:
        self.presses += 1
        self.backend.press(lang)
        self.backend.await_events(self.daemon, 1)
        self._pump()

    @precondition(lambda self: self.player.token is not None)
    @rule()
    def video_completes(self) -> None:
        self.clock.advance(3.0)
        self.player.complete()
        self._pump()

    @precondition(lambda self: self.player.token is not None)
    @rule(reason=st.sampled_from(["crash", "hang", "missing_file"]))
    def video_fails(self, reason: str) -> None:
        self.player.fail(reason)
        self._pump()

    @rule(seconds=st.sampled_from([1.0, 20.0, 61.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self._pump()

    @rule(column=st.integers(1, COLUMNS))
    def jam(self, column: int) -> None:
        self.backend.jam_next(column)

    @rule(open_=st.booleans())
    def door(self, open_: bool) -> None:
        if self.backend.stats().get("door_open", self.daemon.flow.door_open) == open_:
            return
        if not open_ and hasattr(self.backend, "jammed"):
            self.backend.sim.set_fault("jam", 0.0)  # the technician cleared the jam
        self.backend.door(open_)
        self.backend.await_events(self.daemon, 1)
        self._pump()

    @rule(c=st.sampled_from([22.0, 30.0, 45.0, 0.0]))
    def temperature(self, c: float) -> None:
        self.backend.temperature(c)
        self.clock.advance(31)
        self._pump()

    @rule(before=st.booleans())
    def crash_during_next_dispense(self, before: bool) -> None:
        if before:
            self.board.crash_before = True
        else:
            self.board.crash_after = True

    @rule(column=st.integers(1, COLUMNS), n=st.integers(0, 10))
    def technician_restocks(self, column: int, n: int) -> None:
        """Blind count of what is physically there, then load to n; the ledger takes the count."""
        found = int(self.backend.stats()["stock"][str(column)])
        self.backend.load(column, n)
        expected = self.daemon.ledger.column(column).stock
        reason = None if found == expected else "recount"
        event = self.daemon.restock(column, n, counted_before=found, reason=reason)
        assert event.stock_after == n and event.discrepancy == found - expected

    @rule()
    def board_reboots(self) -> None:
        self.backend.reboot()
        if isinstance(self.backend, SimBackend):
            self.backend.await_events(self.daemon, 1)
        self._pump()

    @rule()
    def kill_and_restart(self) -> None:
        self.crashes += 1
        self._restart()

    # ------------------------------------------------------------ invariants

    @invariant()
    def ledger_equals_ground_truth(self) -> None:
        stats = self.backend.stats()
        dispenses = [e for e in self.daemon.ledger.events() if isinstance(e, DispenseEvent)]
        per_column = {str(c): sum(1 for e in dispenses if e.column == c) for c in range(1, COLUMNS + 1)}
        assert stats["dropped"] == len(dispenses), (stats, dispenses)
        assert stats["per_column"] == per_column
        ledger_stock = {str(r.column): r.stock for r in self.daemon.ledger.columns()}
        assert stats["stock"] == ledger_stock
        assert min(ledger_stock.values()) >= 0
        assert not stats.get("double_drops")
        assert len({e.command_id for e in dispenses}) == len(dispenses), "one kit per command id"

    @invariant()
    def no_kit_without_video_or_logged_fallback(self) -> None:
        last_video: VideoEvent | None = None
        last_kit: DispenseEvent | None = None  # the person's previous kit since their video
        kits = 0
        for e in self.daemon.ledger.events():
            if isinstance(e, VideoEvent):
                last_video = e
                if e.phase == "completed":
                    last_kit, kits = None, 0
            elif isinstance(e, DispenseEvent):
                if e.via == "video":
                    assert last_video is not None and last_video.phase == "completed"
                elif e.via == "fallback":
                    assert last_video is not None and last_video.phase == "failed"
                elif e.via == "extra":  # "another kit": same person, inside the window, under the cap
                    assert last_kit is not None and (e.ts - last_kit.ts).total_seconds() <= WINDOW_S
                    assert kits < CAP
                else:
                    raise AssertionError(f"unexpected via {e.via}")
                last_kit, kits = e, kits + 1

    @invariant()
    def at_most_one_kit_per_press(self) -> None:
        assert self.backend.stats()["dropped"] <= self.presses

    @invariant()
    def nothing_left_pending_while_idle(self) -> None:
        assert not self.daemon.ledger.pending_commands()

    def teardown(self) -> None:
        try:
            self.daemon.stop()
        finally:
            self.backend.close()
            shutil.rmtree(self.dir, ignore_errors=True)


UnitMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestUnitOnFakeBoard = UnitMachine.TestCase


class SimUnitMachine(UnitMachine):
    backend_class = SimBackend


SimUnitMachine.TestCase.settings = settings(
    max_examples=25, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestUnitOnSimulatedBoard = SimUnitMachine.TestCase
