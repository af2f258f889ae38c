"""A fleet of K simulated units in one process, for `nalox demo --units K` and fleet-scale tests:
each unit is a real UnitDaemon (real ledger, real mpv, real MQTT reporter) on a real SerialBoard
link whose far end is a SimulatedBoard over the simulator's in-memory serial line.

The broker and the inventory service still run as their own processes (see nalox/demo.py).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from nalox.demo import (
    ROOM_TEMPERATURE_C,
    TERMINAL_EVENTS,
    DemoError,
    Stack,
    UnitSpec,
    _report,
    agrees,
    choose_ports,
    display_available,
    make_clip,
    unit_toml,
    wait_until,
)

log = structlog.get_logger("nalox.fleet")


@dataclass
class SimUnit:
    """One simulated unit: board, link, player and daemon, all in this process."""

    spec: UnitSpec
    board: Any  # simulator.board.SimulatedBoard
    daemon: Any  # controller.daemon.UnitDaemon

    def terminal(self) -> int:
        return sum(self.daemon.ledger.count(t) for t in TERMINAL_EVENTS)

    def press(self, lang: str) -> None:
        self.board.press(lang)

    def ledger_dispensed(self) -> int:
        return int(self.daemon.ledger.count("dispense"))

    def ledger_stock(self) -> dict[str, int]:
        return {str(c.column): int(c.stock) for c in self.daemon.ledger.columns()}

    def stop(self) -> None:
        try:
            self.daemon.stop()
        finally:
            self.board.stop()


def start_unit(
    spec: UnitSpec, workdir: Path, mqtt_port: int, seed: int, wrap_board: Callable[[Any], Any] | None = None
) -> SimUnit:
    """Build one unit from a generated unit.toml, exactly as `nalox unit run` would load it."""
    from controller.clock import RealClock
    from controller.config import load_config
    from controller.daemon import UnitDaemon
    from controller.link import SerialBoard
    from controller.video import MpvPlayer
    from simulator.board import SimulatedBoard
    from simulator.memlink import serial_pair

    workdir.mkdir(parents=True, exist_ok=True)
    videos = {lang: make_clip(lang, spec.video_seconds) for lang in ("en", "es")}
    conf_path = workdir / "unit.toml"
    conf_path.write_text(unit_toml(spec, workdir, f"mem:{spec.unit_id}", mqtt_port, videos))
    config = load_config(conf_path)
    controller_end, board_end = serial_pair(seed=seed)
    board = SimulatedBoard(
        columns=spec.columns,
        stock=spec.stock,
        seed=seed,
        spin_ms=spec.spin_ms,
        nvs_path=str(workdir / "board-nvs"),
        board_id=f"sim-{spec.unit_id}",
    )
    board.attach(board_end)
    board.set_temperature(ROOM_TEMPERATURE_C)
    board.start()
    try:
        link: Any = SerialBoard.from_port(controller_end)
        if wrap_board is not None:
            link = wrap_board(link)
        daemon = UnitDaemon(config, link, MpvPlayer(config.videos), RealClock())
        daemon.start()
    except Exception:
        board.stop()
        raise
    return SimUnit(spec, board, daemon)


class Fleet:
    """K units plus the broker and inventory service of a Stack (whose own single unit is not used)."""

    def __init__(self, stack: Stack, units: int, seed: int) -> None:
        self.stack = stack
        self.count = units
        self.seed = seed
        self.units: list[SimUnit] = []
        self.specs = [
            UnitSpec(f"demo-unit-{i + 1}", headless=stack.spec.headless, site=f"Demo site {i % 3 + 1}")
            for i in range(units)
        ]

    def start(self) -> Fleet:
        from nalox.demo import Central, Watcher

        self.stack.workdir.mkdir(parents=True, exist_ok=True)
        self.stack.start_broker()
        self.stack.watcher = Watcher(self.stack.mqtt_port).start()
        self.stack.start_inventory_for(self.specs)
        for i, spec in enumerate(self.specs):
            self.units.append(
                start_unit(spec, self.stack.workdir / spec.unit_id, self.stack.mqtt_port, self.seed + i)
            )
        assert isinstance(self.stack.central, Central)
        return self

    def close(self) -> None:
        for unit in self.units:
            try:
                unit.stop()
            except Exception as e:  # one unit failing to stop must not leave the others running
                log.warning("unit stop failed", unit=unit.spec.unit_id, error=str(e))
        self.stack.close()

    def press_round(self, rng: random.Random, budget: int, timeout: float) -> int:
        """Press each unit once (at most `budget` presses) and wait until each vend has ended."""
        chosen = self.units[:budget]
        before = [u.terminal() for u in chosen]
        for unit in chosen:
            unit.press("es" if rng.random() < 0.3 else "en")
        try:
            wait_until(
                "every pressed unit to finish its vend",
                lambda: all(u.terminal() > b for u, b in zip(chosen, before, strict=True)),
                timeout,
            )
        except DemoError:
            log.warning("some vends did not settle", timeout_s=timeout)
        return len(chosen)

    def summary(self, presses: int) -> dict[str, Any]:
        assert self.stack.central is not None
        stock: dict[str, dict[str, Any]] = {"ledger": {}, "sim": {}, "central": {}}
        totals = {"ledger": 0, "sim": 0, "central": 0}
        for unit in self.units:
            uid = unit.spec.unit_id
            sim = unit.board.stats()
            stock["ledger"][uid] = unit.ledger_stock()
            stock["sim"][uid] = {str(k): int(v) for k, v in sim["stock"].items()}
            stock["central"][uid] = self.stack.central.stock(uid)
            totals["ledger"] += unit.ledger_dispensed()
            totals["sim"] += int(sim["dropped"])
            totals["central"] += self.stack.central.dispense_count(uid)
        return {
            "presses": presses,
            "ledger_dispensed": totals["ledger"],
            "sim_dropped": totals["sim"],
            "central_dispensed": totals["central"],
            "stock": stock,
            "units": [u.spec.unit_id for u in self.units],
        }


def run_demo(args: argparse.Namespace) -> int:
    """`nalox demo --units K`: the same demo with K units in this process."""
    mqtt_port, http_port = choose_ports(args)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nalox-fleet-"))
    headless = args.headless or not display_available()
    stack = Stack(workdir, UnitSpec("unused", headless=headless), mqtt_port, http_port, seed=args.seed)
    fleet = Fleet(stack, args.units, args.seed)
    print(f"nalox demo: {args.units} units in this process; files and logs in {workdir}", flush=True)
    try:
        fleet.start()
        print(
            f"dashboard: http://127.0.0.1:{http_port}/   broker: mqtt://127.0.0.1:{mqtt_port}\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        presses = _press_loop(fleet, args)
        _wait_caught_up(fleet, presses, timeout=120 if args.vends else 30)
        result = fleet.summary(presses)
        _report(result, args.summary)
        return 0 if agrees(result) else 3
    finally:
        fleet.close()


def _press_loop(fleet: Fleet, args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    end = time.monotonic() + args.duration if args.duration else float("inf")
    presses = 0
    timeout = fleet.specs[0].video_seconds + 30
    while time.monotonic() < end and (not args.vends or presses < args.vends):
        budget = args.vends - presses if args.vends else len(fleet.units)
        presses += fleet.press_round(rng, budget, timeout)
        s = f"presses {presses} | ledger {sum(u.ledger_dispensed() for u in fleet.units)}"
        print(s, flush=True)
        if not args.vends:
            time.sleep(min(rng.expovariate(1 / args.interval), max(0.0, end - time.monotonic())))
    return presses


def _wait_caught_up(fleet: Fleet, presses: int, timeout: float) -> None:
    try:
        wait_until(
            "the central store to catch up with every unit",
            lambda: agrees(fleet.summary(presses)),
            timeout,
            interval=1.0,
        )
    except DemoError:
        log.warning("central store did not catch up", timeout_s=timeout)
