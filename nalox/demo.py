"""`nalox demo`: broker + simulated board + unit daemon + inventory service on this machine, with
presses now and then, a live progress line, and a summary that checks the three counts agree.

Composition only: every room runs as it would in production (nalox/stack.py); with `--units K` the
units run in this process instead (nalox/simfleet.py). The demo presses the simulated button and reads
each room's own account of what happened (nalox/summary.py)."""

from __future__ import annotations

import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Protocol

import structlog

from nalox.configs import UnitSpec
from nalox.demo_args import DemoArgs, parse_args
from nalox.errors import NaloxError
from nalox.ports import free_port, port_free
from nalox.simfleet import Fleet
from nalox.stack import Stack
from nalox.summary import Summary, greeting
from nalox.supervision import run_supervised
from nalox.tools import display_available
from nalox.waiting import wait_until

log = structlog.get_logger("nalox.demo")


class System(Protocol):
    """What the demo drives: one unit as processes (OneUnit) or K units in this process (Fleet)."""

    stack: Stack  # the broker and the inventory service (and, for one unit, its board and daemon)

    @property
    def link(self) -> Path | None: ...
    def start(self) -> object: ...
    def close(self) -> None: ...
    def check_alive(self) -> None: ...
    def press_round(self, rng: random.Random, budget: int) -> int: ...
    def progress(self) -> str: ...
    def summary(self, presses: int) -> Summary: ...


class OneUnit:
    """The single-unit demo: a Stack, pressed through `nalox sim ctl`, followed on MQTT."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    @property
    def link(self) -> Path | None:
        return self.stack.link

    def start(self) -> OneUnit:
        self.stack.start()
        return self

    def close(self) -> None:
        self.stack.close()

    def check_alive(self) -> None:
        self.stack.check_alive()

    def press_round(self, rng: random.Random, budget: int) -> int:
        """Press once, then wait until the unit reports how the vend ended (dispensed, failed, empty)."""
        watcher = self.stack.watcher
        assert watcher is not None
        uid = self.stack.spec.unit_id
        timeout = self.stack.spec.video_seconds + 30
        before = watcher.terminal_count(uid)
        self.stack.ctl("press", "--lang", "es" if rng.random() < 0.3 else "en")
        if not watcher.wait_for(lambda: watcher.terminal_count(uid) > before, timeout):
            self.check_alive()
            log.warning("vend did not settle in time", unit=uid, timeout_s=timeout)
        return 1

    def progress(self) -> str:
        central = self.stack.central
        try:
            census = self.stack.ledger()
            ledger, outbox = str(census.dispensed), str(census.outbox)
        except Exception:  # the progress line never stops the demo (a locked or half-made ledger)
            ledger = outbox = "?"
        try:
            count = str(central.dispense_count(self.stack.spec.unit_id)) if central else "?"
        except (OSError, KeyError, ValueError):
            count = "?"
        return f"ledger {ledger} | central {count} | outbox {outbox}"

    def summary(self, presses: int) -> Summary:
        return Summary.of(presses, [self.stack.account()])


class Progress:
    """One live line: presses and the system's counts. Rewritten in place on a terminal, else every 5 s."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.tty = sys.stdout.isatty()
        self.last = 0.0

    def show(self, presses: int) -> None:
        now = time.monotonic()
        if not self.tty and now - self.last < 5:
            return
        self.last = now
        line = f"presses {presses} | {self.system.progress()}"
        print(("\r" + line + "   ") if self.tty else line, end="" if self.tty else "\n", flush=True)

    def done(self) -> None:
        if self.tty:
            print(flush=True)


def press_loop(system: System, args: DemoArgs) -> int:
    """Press now and then until --vends presses are done, --duration is over, or Ctrl-C."""
    rng = random.Random(args.seed)
    end = time.monotonic() + args.duration if args.duration else float("inf")
    presses = 0
    progress = Progress(system)
    while time.monotonic() < end and (not args.vends or presses < args.vends):
        presses += system.press_round(rng, args.vends - presses if args.vends else 0)
        progress.show(presses)
        if not args.vends:
            _pause_watching(
                system, progress, presses, min(time.monotonic() + rng.expovariate(1 / args.interval), end)
            )
    progress.done()
    return presses


def _pause_watching(system: System, progress: Progress, presses: int, until: float) -> None:
    """Between presses: every second, make sure every room still runs and refresh the line."""
    pause = threading.Event()
    while time.monotonic() < until:
        pause.wait(min(1.0, max(0.0, until - time.monotonic())))
        system.check_alive()
        progress.show(presses)


def wait_caught_up(system: System, timeout: float) -> None:
    """Until ledger == simulator == central (counts and stock) on two polls in a row."""
    agreed = [0]

    def check() -> bool:
        agreed[0] = agreed[0] + 1 if system.summary(0).agrees() else 0
        return agreed[0] >= 2

    try:
        wait_until("the central store to catch up with the ledger and the simulator", check, timeout, 0.5)
    except NaloxError:
        log.warning("central store did not catch up", timeout_s=timeout)


def choose_ports(args: DemoArgs) -> tuple[int, int]:
    """The ports asked for, which must be free; else free ones (8080 for the dashboard when it is)."""
    for option, port in (("--mqtt-port", args.mqtt_port), ("--http-port", args.http_port)):
        if port and not port_free(port):
            raise NaloxError(f"{option} {port}: expected a free port, something already listens there")
    mqtt_port = args.mqtt_port or free_port()
    http_port = args.http_port or (8080 if port_free(8080) else free_port())
    return mqtt_port, http_port


def build(args: DemoArgs) -> System:
    mqtt_port, http_port = choose_ports(args)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nalox-demo-"))
    headless = args.headless or not display_available()
    if args.units > 1:
        stack = Stack(workdir, UnitSpec("unused", headless=headless), mqtt_port, http_port, seed=args.seed)
        print(f"nalox demo: {args.units} units in this process; files and logs in {workdir}", flush=True)
        return Fleet(stack, args.units, args.seed)
    stack = Stack(workdir, UnitSpec("demo-unit-1", headless=headless), mqtt_port, http_port, seed=args.seed)
    print(f"nalox demo: files and logs in {workdir}", flush=True)
    return OneUnit(stack)


def run(args: DemoArgs) -> int:
    system = build(args)
    try:
        system.start()
        stack = system.stack
        print(greeting(stack.http_port, stack.mqtt_port, system.link, stack.access), flush=True)
        presses = press_loop(system, args)
        wait_caught_up(system, timeout=(90 if args.units == 1 else 120) if args.vends else 30)
        result = system.summary(presses)
        result.api_token = system.stack.access.api_token if system.stack.access else None
        result.report(args.summary)
        return 0 if result.agrees() else 3
    finally:
        system.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run_supervised("nalox demo", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
