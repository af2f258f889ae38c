"""In-process nalox measurements: the vend path from drop detection to PUBACK (a real UnitDaemon on a
SimulatedBoard over the in-memory line) and the outbox drain of a large backlog through the real
Reporter. Timestamps are taken by wrapping, never by changing, the code under measurement."""

from __future__ import annotations

import json
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import baselines
from bench.rooms import bench_dispense
from controller.clock import RealClock
from controller.ledger import Ledger
from controller.mqtt.commands import CommandRefused, CommandResult, command_name
from nalox.configs import UnitSpec
from nalox.simunit import start_unit
from nalox.waiting import wait_until
from schemas.models import CommandBase, DispenseEvent, Telemetry, UnitState


class PubackClock:
    """Wraps controller.mqtt.client.MqttClient.publish for this process: when a dispense event's PUBACK
    arrives, records perf_counter() under the event's command_id."""

    def __init__(self) -> None:
        from controller.mqtt import client as unit_mqtt

        self.module = unit_mqtt
        self.original = unit_mqtt.MqttClient.publish
        self.acked: dict[int, float] = {}
        self.sent: dict[int, float] = {}  # when the reporter handed the event to the client
        self.lock = threading.Lock()

    def __enter__(self) -> PubackClock:
        original, acked, sent, lock = self.original, self.acked, self.sent, self.lock

        def publish(client: Any, topic: str, payload: Any, *args: Any, **kwargs: Any) -> Any:
            at = time.perf_counter()
            handle = original(client, topic, payload, *args, **kwargs)
            if topic.endswith("/event/dispense"):
                cid = int(json.loads(payload)["command_id"])
                with lock:
                    sent.setdefault(cid, at)

                def done(h: Any) -> None:
                    if h.result is not None and h.result.delivered:
                        with lock:
                            acked.setdefault(cid, time.perf_counter())

                handle.add_done_callback(done)
            return handle

        self.module.MqttClient.publish = publish  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        self.module.MqttClient.publish = self.original  # type: ignore[method-assign,assignment]


class DropClock:
    """A Board wrapper: records perf_counter() when dispense() returns a drop, by command_id."""

    def __init__(self, board: Any) -> None:
        self._board = board
        self.dropped: dict[int, float] = {}

    def dispense(self, command_id: int, column: int) -> Any:
        outcome = self._board.dispense(command_id, column)
        if outcome.dropped:
            self.dropped[command_id] = time.perf_counter()
        return outcome

    def __getattr__(self, name: str) -> Any:
        return getattr(self._board, name)


def vend_overhead(port: int, count: int) -> dict[str, Any]:
    """Drop detected at the controller -> dispense event PUBACKed by the broker, per vend."""
    work = Path(tempfile.mkdtemp(prefix="nalox-bench-vend-"))
    per_column = count // 6 + 5
    spec = UnitSpec(
        "bench-vend-1", stock=min(per_column, 1000), spin_ms=10, video_seconds=1.0, multi_kit_window_s=600,
        kits_per_session=100_000
    )
    clocks: list[DropClock] = []
    with PubackClock() as pubacks:
        unit = start_unit(spec, work, port, seed=1, wrap_board=lambda b: _keep(clocks, DropClock(b)))
        try:
            for _ in range(count + 1):  # the first press plays the video; the window covers the rest
                _press_and_wait(unit)
            wait_until("every dispense PUBACKed", lambda: len(pubacks.acked) >= len(clocks[0].dropped), 30)
        finally:
            unit.stop()
    drops = clocks[0].dropped
    done = [c for c in drops if c in pubacks.acked and c in pubacks.sent][1:]
    return {
        **baselines.summary_ms([pubacks.acked[c] - drops[c] for c in done]),
        "drop_to_publish": baselines.summary_ms([pubacks.sent[c] - drops[c] for c in done]),
        "publish_to_puback": baselines.summary_ms([pubacks.acked[c] - pubacks.sent[c] for c in done]),
    }


def _press_and_wait(unit: Any) -> None:
    before = unit.terminal()
    unit.press("en")
    wait_until("the vend to end", lambda: unit.terminal() > before, 30, interval=0.005)


def _keep(bucket: list[DropClock], clock: DropClock) -> DropClock:
    bucket.append(clock)
    return clock


class BenchUnit:
    """The little the Reporter asks of a unit, for draining a backlog without a board."""

    def __init__(self, unit_id: str) -> None:
        self.unit_id = unit_id

    def snapshot_state(self) -> UnitState:
        return UnitState(
            unit=self.unit_id,
            site="bench",
            ts=datetime.now(UTC),
            mode="vending",
            config_version="bench",
            columns=[],
            outbox_depth=0,
            last_seq=0,
        )

    def telemetry(self) -> Telemetry:
        return Telemetry(unit=self.unit_id, ts=datetime.now(UTC), uptime_s=0, outbox_depth=0)

    def run_command(self, cmd: CommandBase) -> CommandResult:
        raise CommandRefused(f"expected no commands on a bench unit, got {command_name(cmd)!r}")

    def raise_alarm(
        self, code: str, message: str, severity: str = "warning", column: int | None = None
    ) -> bool:
        return False

    def clear_alarm(self, code: str) -> bool:
        return False


def fill_ledger(path: Path, unit_id: str, count: int) -> Ledger:
    """A real Ledger holding `count` dispense events, all still in the outbox (one bulk transaction)."""
    ledger = Ledger(path, RealClock(), unit_id=unit_id)
    now = datetime.now(UTC)
    identity = {"event_id", "seq", "ts", "unit"}  # the ledger gives each event its own
    events = (bench_dispense(unit_id, seq, now, "nasal-4mg") for seq in range(1, count + 1))
    ledger.record_many(DispenseEvent, (e.model_dump(exclude=identity) for e in events))
    return ledger


def outbox_drain(port: int, count: int) -> dict[str, Any]:
    """Events/s the real Reporter moves from a `count`-row outbox to the broker (PUBACKed)."""
    from controller.mqtt.client import MqttSettings
    from controller.mqtt.reporter import Reporter

    work = Path(tempfile.mkdtemp(prefix="nalox-bench-drain-"))
    unit_id = f"bench-drain-{uuid.uuid4().hex[:6]}"
    ledger = fill_ledger(work / "ledger.sqlite3", unit_id, count)
    settings = MqttSettings(port=port, client_id=unit_id)
    reporter = Reporter(settings, BenchUnit(unit_id), ledger, RealClock(), unit_id=unit_id)
    start = time.perf_counter()
    reporter.start()
    try:
        _wait(lambda: reporter.delivered >= count, 600, lambda: f"{reporter.delivered} delivered")
        took = time.perf_counter() - start
    finally:
        reporter.stop()
        ledger.close()
    return {
        "events_per_s": count / took,
        "seconds": round(took, 2),
        "inflight_window": settings.inflight_window,
    }


def _wait(check: Callable[[], bool], timeout: float, status: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise baselines.BenchError(f"expected the outbox drained within {timeout:g} s, got {status()}")
        time.sleep(0.01)


class VideoToWire:
    """Wraps, in this process, the daemon's player callback and the serial link's writes: when the
    player reports a completed video, and when the DISPENSE frame that follows is written to the line."""

    def __init__(self) -> None:
        from controller import daemon
        from controller.serial import board_link

        self.daemon, self.link = daemon, board_link
        self.completed: list[float] = []
        self.on_wire: list[float] = []
        self._armed = threading.local()

    def __enter__(self) -> VideoToWire:
        from controller.vend.video import VideoCompleted
        from firmware_py import codec

        completed, on_wire, armed = self.completed, self.on_wire, self._armed
        self.on_player = self.daemon.UnitDaemon._on_player_event
        self.send = self.link.SerialBoard._send_reliable
        self.write = self.link.SerialBoard._write
        on_player, send, write = self.on_player, self.send, self.write

        def player_event(daemon: Any, event: Any) -> None:
            if isinstance(event, VideoCompleted):
                completed.append(time.perf_counter())
            on_player(daemon, event)

        def send_reliable(board: Any, msg: Any, *args: Any, **kwargs: Any) -> Any:
            armed.on = isinstance(msg, codec.Dispense)
            return send(board, msg, *args, **kwargs)

        def write_wire(board: Any, wire: bytes) -> bool:
            ok = write(board, wire)
            if getattr(armed, "on", False):
                armed.on = False
                on_wire.append(time.perf_counter())
            return bool(ok)

        self.daemon.UnitDaemon._on_player_event = player_event  # type: ignore[method-assign,assignment]
        self.link.SerialBoard._send_reliable = send_reliable  # type: ignore[method-assign,assignment]
        self.link.SerialBoard._write = write_wire  # type: ignore[method-assign,assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        self.daemon.UnitDaemon._on_player_event = self.on_player  # type: ignore[method-assign,assignment]
        self.link.SerialBoard._send_reliable = self.send  # type: ignore[method-assign,assignment]
        self.link.SerialBoard._write = self.write  # type: ignore[method-assign,assignment]


def completion_pairs(completed: list[float], on_wire: list[float]) -> list[tuple[float, float]]:
    """Each DISPENSE frame with the video completion just before it; a frame with no completion since
    the previous frame (a vend without a finished clip: the player's fallback on a starved machine)
    and a completion without a frame (a vend that never came) pair with nothing."""
    pairs: list[tuple[float, float]] = []
    events = sorted([(t, "completed") for t in completed] + [(t, "wire") for t in on_wire])
    last: float | None = None
    for t, kind in events:
        if kind == "completed":
            last = t
        elif last is not None:
            pairs.append((last, t))
            last = None
    return pairs


def video_to_dispense(port: int, count: int) -> dict[str, Any]:
    """Video completed (mpv's end-file reaches the daemon) -> the DISPENSE frame written to the line,
    per press, with the real player (mpv, no window) and a 0.5 s clip."""
    work = Path(tempfile.mkdtemp(prefix="nalox-bench-video-"))
    spec = UnitSpec("bench-video-1", stock=count + 5, spin_ms=10, video_seconds=0.5, multi_kit_window_s=0)
    with VideoToWire() as clock:
        unit = start_unit(spec, work, port, seed=2)
        try:
            for _ in range(count):
                _press_and_wait(unit)
        finally:
            unit.stop()
    pairs = completion_pairs(clock.completed, clock.on_wire)
    if not pairs:
        raise baselines.BenchError(
            f"expected completed videos and DISPENSE frames, got {len(clock.completed)} "
            f"completions and {len(clock.on_wire)} frames"
        )
    return {**baselines.summary_ms([w - c for c, w in pairs]), "target_p99_ms": 20.0}
