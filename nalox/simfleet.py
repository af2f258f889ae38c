"""A fleet of K simulated units in one process (`nalox demo --units K`): each a real UnitDaemon on a
simulated board (nalox/simunit.py); the broker and the inventory service still run as their own
processes, those of a Stack whose own single unit is not started."""

from __future__ import annotations

import random
from pathlib import Path

import structlog

from nalox.configs import UnitSpec
from nalox.errors import NaloxError
from nalox.simunit import SimUnit, start_unit
from nalox.stack import Stack
from nalox.summary import Summary, UnitAccount, count_unit
from nalox.waiting import wait_until
from nalox.watcher import Watcher

log = structlog.get_logger("nalox.simfleet")


class Fleet:
    def __init__(self, stack: Stack, units: int, seed: int) -> None:
        self.stack = stack
        self.seed = seed
        self.units: list[SimUnit] = []
        self.specs = [
            UnitSpec(f"demo-unit-{i + 1}", headless=stack.spec.headless, site=f"Demo site {i % 3 + 1}")
            for i in range(units)
        ]

    @property
    def link(self) -> Path | None:
        return None  # no board to press by hand: the boards live inside this process

    @property
    def settle_timeout(self) -> float:
        return self.specs[0].video_seconds + 30

    def start(self) -> Fleet:
        self.stack.workdir.mkdir(parents=True, exist_ok=True)
        self.stack.start_broker()
        self.stack.watcher = Watcher(self.stack.mqtt_port).start()
        self.stack.start_inventory(self.specs)
        for i, spec in enumerate(self.specs):
            self.units.append(
                start_unit(spec, self.stack.workdir / spec.unit_id, self.stack.mqtt_port, self.seed + i)
            )
        return self

    def close(self) -> None:
        for unit in self.units:
            try:
                unit.stop()
            except Exception as e:  # one unit failing to stop must not leave the others running
                log.warning("unit stop failed", unit=unit.unit_id, error=str(e))
        self.stack.close()

    def check_alive(self) -> None:
        self.stack.check_alive()

    def press_round(self, rng: random.Random, budget: int) -> int:
        """Press each unit once (at most `budget` presses) and wait until each vend has ended."""
        chosen = self.units[:budget] if budget else self.units
        before = [u.terminal() for u in chosen]
        for unit in chosen:
            unit.press("es" if rng.random() < 0.3 else "en")
        try:
            wait_until(
                "every pressed unit to finish its vend",
                lambda: all(u.terminal() > b for u, b in zip(chosen, before, strict=True)),
                self.settle_timeout,
                alive=self.check_alive,
            )
        except NaloxError:
            self.check_alive()
            log.warning("some vends did not settle", timeout_s=self.settle_timeout)
        return len(chosen)

    def progress(self) -> str:
        ledger = sum(u.ledger_dispensed() for u in self.units)
        return f"ledger {ledger}"

    def account(self, unit: SimUnit) -> UnitAccount:
        assert self.stack.central is not None
        stats = unit.board.stats()
        return count_unit(
            unit.unit_id, unit.ledger_dispensed(), unit.ledger_stock(), stats, self.stack.central
        )

    def summary(self, presses: int) -> Summary:
        return Summary.of(presses, [self.account(u) for u in self.units])
