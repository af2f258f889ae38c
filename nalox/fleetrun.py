"""Simulated units in one process at a realistic rate, compressed in time: the real unit code (firmware on
a simulated board over the in-memory line, SerialBoard, UnitDaemon with its ledger and MQTT reporter)
pressed on a schedule, with what shows whether the process keeps up: press -> kit latency, presses that
found the unit still busy, outbox depth, and the process's CPU.

The one driver of the units-per-core bench (bench/fleet.py) and of each process of the fleet soak
(nalox/fleetsoak.py, which runs `python -m nalox.fleetrun` once per process).

What differs from a unit in the field, on purpose: the video player is nalox.simplayer.SimPlayer (a
timer, not an mpv process per unit), the technician's control socket is off, and the board's idle wait
is longer (its memory port wakes it on every press), and its non-volatile storage is in memory (the
units are never restarted here; a file per journal slot made a unit's start 65 ms longer). The daemon,
ledger, link, firmware and reporter are the production code with the production config, every period
divided by the compression.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import random
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog

from controller.errors import ControllerError
from controller.ledger import read_census
from controller.serial.board_api import Board, DispenseOutcome
from nalox.configs import UnitSpec
from nalox.simplayer import SimPlayer, Timeline
from nalox.simunit import SimUnit, start_unit

log = structlog.get_logger("nalox.fleetrun")
BOARD_IDLE_S = 2.0  # a fleet board's idle wait: presses wake it at once through its memory port
SWITCH_INTERVAL_S = 0.1  # a fleet process's GIL switch interval (Python's default: 0.005)
START_ATTEMPTS = 3  # a unit whose board HELLO timed out on a saturated machine is started again
BOARD_BUSY_S = 0.005  # and its step while a coil turns (a 1 ms step costs a fleet more than its units)


@dataclass(frozen=True)
class Profile:
    """One unit's busy hour in real life, and how much faster the simulation runs it.

    Real figures: a person every 5 minutes at a busy release hour, the 2-minute video, a 1.5 s coil
    turn, and the unit config's defaults (telemetry every 60 s, a board status poll every 30 s, acks
    re-asked after 300 s). With compression 30 a unit is pressed every 10 s and plays a 4 s video."""

    compression: float = 30.0
    press_every_s: float = 300.0
    video_s: float = 120.0
    spin_s: float = 1.5
    telemetry_s: float = 60.0
    status_poll_s: float = 30.0
    ack_resend_s: float = 300.0

    def scaled(self, real_s: float) -> float:
        return real_s / self.compression

    @property
    def press_interval_s(self) -> float:
        return self.scaled(self.press_every_s)

    @property
    def video_sim_s(self) -> float:
        return round(self.scaled(self.video_s), 3)

    def spec(self, unit_id: str, site: str, presses: int) -> UnitSpec:
        """The unit for this profile, stocked for `presses` kits with a column to spare."""
        columns = 6
        per_column = max(5, math.ceil(presses / (columns - 1)))
        return UnitSpec(
            unit_id,
            site=site,
            columns=columns,
            stock=per_column,
            spin_ms=max(5, round(self.scaled(self.spin_s) * 1000)),
            video_seconds=self.video_sim_s,
            telemetry_interval_s=round(self.scaled(self.telemetry_s), 3),
            status_poll_s=round(self.scaled(self.status_poll_s), 3),
            ack_resend_s=round(self.scaled(self.ack_resend_s), 3),
            control_socket=False,
            # production's MQTT keepalive and reconnect backoff (the demo's 10 s and 0.2-2 s turned one
            # 15 s stall of a loaded machine into 1,000 units reconnecting every 2 s: load average 955)
            keepalive_s=30,
            reconnect_s=(0.5, 60.0),
            # a tap is a tap: a board thread starved 1.5 s on a saturated machine read one as held,
            # and the unit gave an emergency kit without the video (112 in a 1,000-unit run)
            long_press_ms=60_000,
        )

    def presses_in(self, seconds: float) -> int:
        return math.ceil(seconds / self.press_interval_s) + 2


class PressClock:
    """A Board wrapper: when dispense() returns, the press it served is done (press -> kit latency)."""

    def __init__(self, board: Board, done: Callable[[DispenseOutcome], None]) -> None:
        self._board = board
        self._done = done

    def dispense(self, command_id: int, column: int) -> DispenseOutcome:
        outcome = self._board.dispense(command_id, column)
        self._done(outcome)
        return outcome

    def __getattr__(self, name: str) -> Any:
        return getattr(self._board, name)


@dataclass
class Tally:
    """What a window of the run saw, summed over the units of this process."""

    presses: int = 0
    kits: int = 0  # dispenses that dropped a kit
    not_dropped: dict[str, int] = field(default_factory=dict)  # dispense outcomes without a kit, by kind
    busy: int = 0  # a press came due while the unit still served the previous one (not pressed)
    unserved: int = 0  # a press with no dispense within the video + 30 s
    latencies: list[float] = field(default_factory=list)  # press -> dispense returned, seconds


class FleetUnit:
    """One simulated unit and the press in flight on it."""

    def __init__(self, unit: SimUnit | None = None) -> None:
        self.unit = unit
        self.pressed_at: float | None = None
        self.lock = threading.Lock()

    @property
    def sim(self) -> SimUnit:
        assert self.unit is not None
        return self.unit


class FleetRun:
    """`units` (id, site) started in this process against the broker at `mqtt_port`, pressed on the
    profile's schedule from `run()` until its duration is over."""

    def __init__(self, workdir: Path, mqtt_port: int, profile: Profile, seed: int = 0,
                 expected_s: float = 600.0) -> None:
        self.workdir = workdir
        self.mqtt_port = mqtt_port
        self.profile = profile
        self.seed = seed
        self.expected_s = expected_s  # how long the units will be pressed (their stock is sized for it)
        self.rng = random.Random(seed)
        self.timeline = Timeline().start()
        self.units: list[FleetUnit] = []
        self.tally = Tally()
        self._due: list[float] = []  # when each unit is pressed next
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ units

    def add(self, ids: list[tuple[str, str]]) -> float:
        """Start these units; seconds it took."""
        t0 = time.monotonic()
        presses = self.profile.presses_in(self.expected_s)
        for unit_id, site in ids:
            fu = FleetUnit()
            spec = self.profile.spec(unit_id, site, presses)
            player = SimPlayer(self.timeline, spec.video_seconds)
            for attempt in range(1, START_ATTEMPTS + 1):
                try:
                    fu.unit = start_unit(
                        spec, self.workdir / unit_id, self.mqtt_port, seed=self.seed + len(self.units) + 1,
                        wrap_board=lambda b, fu=fu: PressClock(b, lambda o, fu=fu: self._served(fu, o)),  # type: ignore[misc]
                        player=player, board_idle_s=BOARD_IDLE_S, board_busy_s=BOARD_BUSY_S, board_nvs=False,
                    )
                    break
                except ControllerError as e:  # a HELLO lost to a starved CPU: start again, as a restart would
                    if attempt == START_ATTEMPTS:
                        raise
                    log.warning("unit_start_retried", unit=unit_id, attempt=attempt, error=str(e)[:200])
            self.units.append(fu)
        return time.monotonic() - t0

    def _served(self, fu: FleetUnit, outcome: DispenseOutcome) -> None:
        now = time.monotonic()
        with fu.lock:
            pressed, fu.pressed_at = fu.pressed_at, None
        with self._lock:
            if outcome.dropped:
                self.tally.kits += 1
            else:
                self.tally.not_dropped[outcome.outcome] = self.tally.not_dropped.get(outcome.outcome, 0) + 1
            if pressed is not None:
                self.tally.latencies.append(now - pressed)

    def _press(self, fu: FleetUnit, lang: str) -> None:
        now = time.monotonic()
        with fu.lock:
            if fu.pressed_at is not None:
                if now - fu.pressed_at <= self.profile.video_sim_s + 30:
                    with self._lock:
                        self.tally.busy += 1
                    return
                with self._lock:
                    self.tally.unserved += 1
            fu.pressed_at = now
        fu.sim.press(lang)
        with self._lock:
            self.tally.presses += 1

    # ------------------------------------------------------------------ pressing

    def run(self, seconds: float, stop: threading.Event | None = None,
            every: Callable[[], None] | None = None, every_s: float = 10.0) -> None:
        """Press each unit about once per interval (uniform jitter of a quarter interval either side, so
        the next press never comes before the video has ended) for `seconds`; `every` runs every
        `every_s` seconds meanwhile (progress lines)."""
        stop = stop or threading.Event()
        interval = self.profile.press_interval_s
        start = time.monotonic()
        end = start + seconds
        self._due += [0.0] * (len(self.units) - len(self._due))
        # units added since, or left overdue between two runs: first press within an interval from now
        heap = [(due if due >= start else start + self.rng.uniform(0, interval), i)
                for i, due in enumerate(self._due)]
        heapq.heapify(heap)
        next_report = start + every_s if every is not None else math.inf
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now >= end:
                    return
                if now >= next_report:
                    next_report += every_s
                    if every is not None:
                        every()
                if heap and heap[0][0] <= now:
                    due, i = heapq.heappop(heap)
                    self._press(self.units[i], "es" if self.rng.random() < 0.3 else "en")
                    heapq.heappush(heap, (due + interval * self.rng.uniform(0.75, 1.25), i))
                    continue
                wake = min(end, next_report, heap[0][0] if heap else end)
                stop.wait(max(0.0, wake - now))
        finally:  # the schedule goes on where it stopped at the next run()
            for due, i in heap:
                self._due[i] = due

    def take(self) -> Tally:
        """The tally since the last take, and a fresh one."""
        with self._lock:
            out, self.tally = self.tally, Tally()
        return out

    def pending(self) -> int:
        return sum(1 for fu in self.units if fu.pressed_at is not None)

    def outbox(self) -> tuple[int, int]:
        """(total, deepest) outbox depth over the units: events central has not acked yet."""
        depths = [fu.sim.daemon.ledger.depth() for fu in self.units]
        return sum(depths), max(depths, default=0)

    def settle(self, timeout: float) -> bool:
        """Wait until no press is in flight and every outbox is empty (central acked everything)."""
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        while time.monotonic() < deadline:
            if self.pending() == 0 and self.outbox()[0] == 0:
                return True
            pause.wait(0.5)
        return False

    def accounts(self) -> list[dict[str, Any]]:
        """Each unit counted by its own ledger and by the board's physical truth."""
        out = []
        for fu in self.units:
            u = fu.sim
            stats = u.board.stats()
            census = read_census(u.daemon.ledger.path)
            out.append({
                "unit": u.unit_id,
                "ledger_dispensed": int(census.events.get("dispense", 0)),
                "ledger_stock": {str(c): n for c, n in census.stock.items()},
                "ledger_event_ids": census.event_ids,
                "outbox": census.outbox_depth,
                "sim_dropped": int(stats["dropped"]),
                "sim_stock": {str(c): int(n) for c, n in stats["stock"].items()},
                "double_drops": len(stats["double_drops"]),
                "presses": int(stats["presses"]),
            })
        return out

    def close(self) -> None:
        """Stop every unit, many at once (each waits for its offline status's PUBACK and its threads)."""
        def stop(fu: FleetUnit) -> None:
            if fu.unit is None:
                return
            try:
                fu.unit.stop()
            except Exception as e:  # one unit failing to stop must not leave the others running
                log.warning("unit stop failed", unit=fu.unit.unit_id, error=str(e))

        with ThreadPoolExecutor(32) as pool:
            list(pool.map(stop, self.units))
        self.timeline.close()


class CpuMeter:
    """This process's CPU time (user + system, every thread) over a wall-clock window."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.cpu0, self.wall0 = _cpu_s(), time.monotonic()

    def cores(self) -> float:
        """Cores used since reset(): CPU seconds per wall second."""
        wall = time.monotonic() - self.wall0
        return (_cpu_s() - self.cpu0) / wall if wall > 0 else 0.0


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def quantile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def window_figures(t: Tally, profile: Profile) -> dict[str, Any]:
    """A tally as figures: presses, kits, busy/unserved presses, press -> kit p50/p99 beyond the video."""
    over = [x - profile.video_sim_s for x in t.latencies]
    p50, p99 = quantile(over, 0.5), quantile(over, 0.99)
    return {
        "before_video": sum(1 for x in over if x < 0),  # a kit before the video's end: never, for a tap
        "presses": t.presses, "kits": t.kits, "not_dropped": sum(t.not_dropped.values()),
        "not_dropped_kinds": t.not_dropped, "busy": t.busy,
        "unserved": t.unserved,
        "overhead_p50_s": None if p50 is None else round(p50, 3),
        "overhead_p99_s": None if p99 is None else round(p99, 3),
    }


def raise_fd_limit() -> int:
    """The soft open-files limit raised to the hard one (every unit holds sockets and SQLite files)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def quiet_units(level: str = "warning", stream: Any = None) -> None:
    """JSON log lines at `level` and above (thousands of units logging every vend at info would be most of
    the process's work); this process's own progress lines go out at warning or through print."""
    from controller import log as unit_log

    unit_log.configure(level, stream)


# ---------------------------------------------------------------------- one soak process


def worker(argv: list[str] | None = None) -> int:
    """`python -m nalox.fleetrun`: one process of the fleet soak. Prints JSON lines on stdout: `ready`,
    `progress` every --every seconds, then `accounts` (one per unit) and `done`; stops on stdin EOF."""
    p = argparse.ArgumentParser(prog="python -m nalox.fleetrun")
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--mqtt-port", type=int, required=True)
    p.add_argument("--first", type=int, required=True, help="index of this process's first unit")
    p.add_argument("--units", type=int, required=True)
    p.add_argument("--sites", type=int, default=40)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--compression", type=float, default=Profile.compression)
    p.add_argument("--every", type=float, default=10.0)
    p.add_argument("--settle", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    out = sys.stdout
    quiet_units("warning", sys.stderr)
    # Hundreds of threads waiting for the interpreter lock each wake every switch interval (5 ms) to ask
    # for it: after any stall the process spent itself waking them (load average above 1,000 in a
    # 1,000-unit run). Waiting 20 times longer between asks, the one that gets it runs longer.
    sys.setswitchinterval(SWITCH_INTERVAL_S)

    def say(kind: str, **fields: Any) -> None:
        out.write(json.dumps({"kind": kind, "pid": os.getpid(), **fields}) + "\n")
        out.flush()

    raise_fd_limit()
    profile = Profile(compression=args.compression)
    fleet = FleetRun(args.workdir, args.mqtt_port, profile, seed=args.seed * 100_000 + args.first,
                     expected_s=args.duration)
    try:
        ids = [(soak_unit_id(i), f"Site {i % args.sites + 1:02d}")
               for i in range(args.first, args.first + args.units)]
        took = fleet.add(ids)
        say("ready", units=len(ids), start_s=round(took, 1))
        go = sys.stdin.readline()  # the coordinator says go once every process is ready
        if not go:
            return 1
        cpu = CpuMeter()

        def progress(phase: str = "run") -> None:
            total, deepest = fleet.outbox()
            say("progress", phase=phase, cores=round(cpu.cores(), 3), outbox=total, outbox_max=deepest,
                pending=fleet.pending(), late_s=round(fleet.timeline.late_s, 3),
                **window_figures(fleet.take(), profile))
            cpu.reset()
            fleet.timeline.late_s = 0.0

        fleet.run(args.duration, every=progress, every_s=args.every)
        progress("end")
        settled = fleet.settle(args.settle)
        total, deepest = fleet.outbox()
        say("settled", ok=settled, outbox=total, pending=fleet.pending(),
            **window_figures(fleet.take(), profile))
        for account in fleet.accounts():
            say("account", **account)
        say("done")
        sys.stdin.readline()  # keep the units up (online, answering) until the coordinator has counted
        return 0
    finally:
        fleet.close()


def soak_unit_id(i: int) -> str:
    return f"fleet-{i + 1:04d}"


def chunks(n: int, parts: int) -> Iterator[tuple[int, int]]:
    """(first, count) of `parts` nearly equal slices of range(n)."""
    base, extra = divmod(n, parts)
    first = 0
    for k in range(parts):
        count = base + (1 if k < extra else 0)
        if count:
            yield first, count
        first += count


def profile_dict(profile: Profile) -> dict[str, Any]:
    p = asdict(profile)
    p.update(press_interval_s=profile.press_interval_s, video_sim_s=profile.video_sim_s)
    return p


if __name__ == "__main__":
    sys.exit(worker())
