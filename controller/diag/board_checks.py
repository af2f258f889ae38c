"""Technician diagnostics of the dispenser board: link (ping), sensors, motors, drop sensors. Each check
returns `Check` results saying what was expected, what was found and what to do (the computer side,
broker/ledger/video/disk, is controller.diag.host_checks).

The same functions run in `nalox diag` straight on the serial port and inside the unit daemon (asked
over its control socket, or by `cmd/diag` over MQTT), so all three give the same report.
"""

from __future__ import annotations

import queue
import random
import time
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

from controller.clock import Clock, RealClock
from controller.config import UnitConfig
from controller.diag.ping import percentile, round_trips
from controller.diag.result import Check, failed, passed, skipped, warned
from controller.ledger import Ledger
from controller.mqtt.commands import TestVendDone
from controller.serial.board_api import Board, BoardError, BoardEvent, BoardInfo, BoardStatus, ButtonPressed
from firmware_py.codec import DIAG_COMMAND_BASE
from schemas.models import RestockEvent, UnitState

PING_P99_LIMIT_MS = 100.0
# drop-test command ids straight on the port (daemon stopped): the top sixteenth of the id space, which
# the unit daemon should never allocate, so the board's journal never answers a daemon vend with ours
DIAG_COMMAND_IDS = DIAG_COMMAND_BASE
MOTOR_STATE = {0: "idle", 1: "running", 2: "fault"}
SENSOR_STATE = {0: "clear", 1: "blocked", 2: "fault"}


class UnitView(Protocol):
    """What diagnostics use of the running unit daemon (controller.daemon.UnitDaemon) when they run
    inside it (control socket, cmd/diag)."""

    @property
    def board(self) -> Board: ...
    @property
    def board_info(self) -> BoardInfo | None: ...
    @property
    def config(self) -> UnitConfig: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def ledger(self) -> Ledger: ...
    @property
    def mode(self) -> str: ...
    def snapshot_state(self) -> UnitState: ...
    def test_vend(self, column: int) -> TestVendDone: ...
    def restock(self, column: int, count: int, counted_before: int | None = None, lot: str | None = None,
                expiry: date | None = None, reason: str | None = None, source: str = "local"
                ) -> RestockEvent: ...


@dataclass
class DiagContext:
    """What the checks may look at. `board` is None when no board could be reached (see `link_error`);
    `info` is the board's HELLO answer when it was reached; `daemon` is set inside the daemon."""

    board: Board | None
    config: UnitConfig | None = None
    daemon: UnitView | None = None
    clock: Clock = field(default_factory=RealClock)
    info: BoardInfo | None = None
    events: queue.Queue[BoardEvent] = field(default_factory=queue.Queue)
    link_error: str | None = None

    def on_event(self, event: BoardEvent) -> None:
        self.events.put(event)


def link_unreachable(ctx: DiagContext) -> Check:
    port = ctx.config.serial.port if ctx.config is not None else "the port"
    return failed("link", "no dispenser board answers", expected=f"a board answering HELLO on {port}",
                  found=ctx.link_error or "no board", action="check the USB cable and the board's power; "
                  "`ls -l /dev/nalox-dispenser`; is another program using the port?")


# ---------------------------------------------------------------- link


def check_ping(ctx: DiagContext, count: int = 20, p99_limit_ms: float = PING_P99_LIMIT_MS) -> list[Check]:
    board = ctx.board
    if board is None:
        return [link_unreachable(ctx)]
    before = board.counters.as_dict()
    found = round_trips(board, count, timeout=1.0)
    rtts, lost = found.rtts_ms, found.lost
    after = board.counters.as_dict()
    delta = {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}
    return [_ping_result(rtts, lost, count, p99_limit_ms, after, delta)]


def _ping_result(rtts: list[float], lost: int, count: int, limit: float, counters: dict[str, int],
                 delta: dict[str, int]) -> Check:
    if not rtts:
        return failed("ping", f"0 of {count} pings answered", expected=f"{count} PONG replies",
                      found="no reply within 1 s each", action="check the cable and the board's power; "
                      "power-cycle the board", counters=counters)
    p50, p99 = percentile(rtts, 50), percentile(rtts, 99)
    data = {"count": count, "lost": lost, "p50_ms": round(p50, 2), "p99_ms": round(p99, 2),
            "max_ms": round(max(rtts), 2), "counters": counters, "errors_during_test": delta}
    summary = f"{len(rtts)}/{count} answered, p50 {p50:.1f} ms, p99 {p99:.1f} ms"
    if lost:
        return failed("ping", summary, expected="every ping answered", found=f"{lost} lost",
                      action="a flaky link: reseat the USB cable, keep it away from the motor wires", **data)
    if p50 > limit:
        return failed("ping", summary, expected=f"round trips under {limit:.0f} ms",
                      found=f"p50 {p50:.1f} ms",
                      action="the board answers slowly: power-cycle it; if it persists replace the cable",
                      **data)
    if p99 > limit:  # one slow answer: a busy computer more often than a bad link
        return warned("ping", summary, expected=f"p99 under {limit:.0f} ms", found=f"p99 {p99:.1f} ms",
                      action="repeat `nalox diag ping --count 200`; if slow answers persist, check the cable",
                      **data)
    bad = {k: v for k, v in delta.items() if k in ("crc_errors", "resyncs", "naks_sent", "retransmissions")}
    if bad:
        return warned("ping", summary, expected="no link errors during the test", found=str(bad),
                      action="noise on the line: reseat or replace the USB cable", **data)
    return passed("ping", summary, **data)


# ---------------------------------------------------------------- sensors


def read_status(ctx: DiagContext) -> tuple[BoardStatus | None, Check | None]:
    if ctx.board is None:
        return None, link_unreachable(ctx)
    try:
        return ctx.board.status(), None
    except BoardError as exc:
        return None, failed("link", "the board did not answer a status request", expected="a STATUS reply",
                            found=str(exc), action="power-cycle the board; then `nalox diag ping`")


def check_sensors(ctx: DiagContext, button_wait_s: float = 0.0) -> list[Check]:
    status, error = read_status(ctx)
    if status is None:
        return [error] if error else []
    checks = [check_door(status), check_temperature(ctx, status.temperature_c), check_faults(status)]
    pairs = zip(status.motors, status.sensors, strict=False)
    checks += [check_column(i + 1, motor, sensor) for i, (motor, sensor) in enumerate(pairs)]
    checks.append(check_button(ctx, button_wait_s))
    return checks


def check_door(status: BoardStatus) -> Check:
    if status.door_open:
        return failed("sensors.door", "door open: the unit is in service mode and does not vend",
                      expected="door closed", found="door open",
                      action="close and lock the door when done; the unit self-tests and resumes vending")
    return passed("sensors.door", "door closed", door_open=False)


# Without a unit config: warn outside the label's storage range, fail only where kits are damaged
# (naloxone nasal spray must not freeze; above 40 °C is beyond any labelled excursion).
LABEL_STORAGE_C = (15.0, 25.0)
DAMAGE_C = (0.0, 40.0)


def temperature_band(ctx: DiagContext) -> tuple[float, float, float, float]:
    if ctx.config is None:
        return LABEL_STORAGE_C + DAMAGE_C
    t = ctx.config.temperature
    return t.storage_min_c, t.storage_max_c, t.excursion_min_c, t.excursion_max_c


def check_temperature(ctx: DiagContext, celsius: float) -> Check:
    lo, hi, ex_lo, ex_hi = temperature_band(ctx)
    summary = f"cabinet {celsius:.1f} °C"
    if not ex_lo <= celsius <= ex_hi:
        return failed("sensors.temperature", summary + " (outside the permitted range)",
                      expected=f"{ex_lo:.0f}..{ex_hi:.0f} °C", found=f"{celsius:.1f} °C",
                      action="check the cabinet's ventilation/heating; kits stored out of range may need "
                      "replacing: ask the pharmacist (the temperature events name the lots)", celsius=celsius)
    if not lo <= celsius <= hi:
        return warned("sensors.temperature", summary + " (outside the storage range)",
                      expected=f"{lo:.0f}..{hi:.0f} °C", found=f"{celsius:.1f} °C",
                      action="check ventilation; short excursions are allowed", celsius=celsius)
    return passed("sensors.temperature", summary, celsius=celsius)


def check_faults(status: BoardStatus) -> Check:
    if status.faults:
        names = ", ".join(sorted(status.faults))
        return failed("sensors.faults", f"board reports faults: {names}", expected="no board faults",
                      found=names,
                      action="see the column lines below; clear jams, then `nalox diag motor-test COL`",
                      faults=sorted(status.faults))
    return passed("sensors.faults", "no board faults", faults=[])


def check_column(column: int, motor: int, sensor: int) -> Check:
    name = f"sensors.column{column}"
    found = f"motor {MOTOR_STATE.get(motor, motor)}, drop sensor {SENSOR_STATE.get(sensor, sensor)}"
    data = {"motor": MOTOR_STATE.get(motor, str(motor)), "drop_sensor": SENSOR_STATE.get(sensor, str(sensor))}
    if motor == 2:
        return failed(name, f"column {column}: motor fault (jam or dead motor)", expected="motor idle",
                      found=found, action=f"open the door, check column {column} for a jammed kit or a loose "
                      f"motor plug, then `nalox diag motor-test {column}`", **data)
    if sensor == 1:
        return failed(name, f"column {column}: drop sensor blocked (stuck sensor or a kit in the chute)",
                      expected="drop sensor clear", found=found,
                      action=f"open the door, clear the chute under column {column} and clean the sensor "
                      "window; replace the sensor if it stays blocked", **data)
    if sensor == 2 or motor not in (0, 1):
        return failed(name, f"column {column}: drop sensor fault", expected="drop sensor clear", found=found,
                      action=f"check the drop sensor cable of column {column}; replace the sensor", **data)
    return passed(name, f"column {column}: {found}", **data)


def check_button(ctx: DiagContext, wait_s: float) -> Check:
    if wait_s <= 0:
        return skipped("sensors.button", "no live button test (give --button SECONDS)")
    if ctx.daemon is not None:
        return skipped("sensors.button", "the daemon handles the buttons; stop it for a live button test")
    deadline = time.monotonic() + wait_s
    while (left := deadline - time.monotonic()) > 0:
        try:
            event = ctx.events.get(timeout=left)
        except queue.Empty:
            break
        if isinstance(event, ButtonPressed):
            lang = event.language
            return passed("sensors.button", f"button pressed: language {lang}", language=lang)
    return failed("sensors.button", f"no button press within {wait_s:g} s", expected="a BUTTON event",
                  found="none", action="press a language button during the test; if nothing registers, check "
                  "the button wiring to the board")


# ---------------------------------------------------------------- motors and drop sensors


def check_motor(ctx: DiagContext, column: int) -> list[Check]:
    if ctx.board is None:
        return [link_unreachable(ctx)]
    try:
        result = ctx.board.motor_test(column)
    except BoardError as exc:
        return [failed(f"motor.column{column}", "no motor-test result", expected="a MOTOR_TEST_RESULT",
                       found=str(exc), action="power-cycle the board; then `nalox diag ping`")]
    return [motor_result(column, result.outcome, result.current_ma)]


def motor_result(column: int, outcome: str, current_ma: int) -> Check:
    name = f"motor.column{column}"
    data = {"column": column, "outcome": outcome, "current_ma": current_ma}
    if outcome == "ok":
        return passed(name, f"column {column}: motor turns freely ({current_ma} mA)", **data)
    if outcome == "jammed":
        return failed(name, f"column {column}: jam: the coil stalled", expected="the coil turns freely",
                      found=f"motor stalled at {current_ma} mA (jammed)",
                      action=f"clear the jam in column {column} (a kit caught in the spiral), then run "
                      f"`nalox diag motor-test {column}` again", **data)
    if outcome == "motor_fault":
        return failed(name, f"column {column}: dead motor: no current", expected="motor current when driven",
                      found=f"{current_ma} mA (motor dead or unplugged)",
                      action=f"check the motor plug of column {column}; replace the motor", **data)
    if outcome == "door_open":
        return failed(name, "motor test refused: the door is closed", expected="door open (service mode)",
                      found="door closed", action="open the service door, then run the test again", **data)
    if outcome == "bad_column":
        return failed(name, f"no column {column} on this board", expected="a column the board has",
                      found=f"column {column}", action="give a column number printed on the spiral", **data)
    return failed(name, f"column {column}: unexpected outcome {outcome}", expected="ok", found=outcome,
                  action="power-cycle the board and repeat; report the outcome", **data)


def board_columns(ctx: DiagContext) -> list[int]:
    if ctx.config is not None:
        return [c.column for c in ctx.config.columns]
    if ctx.info is not None:
        return list(range(1, ctx.info.columns + 1))
    status, _ = read_status(ctx)
    return list(range(1, len(status.motors) + 1)) if status else []


def check_all_motors(ctx: DiagContext) -> list[Check]:
    """Motor tests of every column when the door is open (service mode); skipped otherwise."""
    status, error = read_status(ctx)
    if status is None:
        return [error] if error else []
    if not status.door_open:
        return [skipped("motor", "door closed: open the door (service mode) to test the motors")]
    return [c for col in board_columns(ctx) for c in check_motor(ctx, col)]


DROP_OUTCOMES = {
    "jammed": ("jam: the coil stalled before the kit dropped", "clear the jam in column {c}"),
    "no_drop_detected": ("the coil turned but the drop sensor saw no kit",
                         "check column {c} has kits and clean the drop sensor window; replace the sensor "
                         "if kits fall but are not seen"),
    "empty": ("the column is empty", "load column {c}, then record it with `nalox diag restock`"),
    "motor_fault": ("dead motor: no current", "check the motor plug of column {c}; replace the motor"),
}


def check_drop(ctx: DiagContext, columns: list[int] | None = None) -> list[Check]:
    """Vend one kit from each column and see it cross the drop sensor. The board never turns a coil
    for a vend with the door open (a hand may be inside), so this runs with the door closed; the kit
    falls into the tray."""
    status, error = read_status(ctx)
    if status is None:
        return [error] if error else []
    if status.door_open:
        return [failed("drop", "drop test refused: the door is open", expected="door closed",
                       found="door open", action="close the door (the board vends only with the door "
                       "closed), run the test, take the kits from the tray")]
    return [drop_one(ctx, col) for col in (columns or board_columns(ctx))]


def drop_one(ctx: DiagContext, column: int) -> Check:
    name = f"drop.column{column}"
    if ctx.daemon is not None:
        return _drop_via_daemon(ctx, column)
    assert ctx.board is not None
    command_id = DIAG_COMMAND_IDS | random.getrandbits(28)
    try:
        outcome = ctx.board.dispense(command_id, column).outcome
    except BoardError as exc:
        return failed(name, "no dispense result", expected="a DISPENSE_RESULT", found=str(exc),
                      action="power-cycle the board; then `nalox diag ping`")
    return drop_result(column, outcome, recorded=False)


def _drop_via_daemon(ctx: DiagContext, column: int) -> Check:
    try:
        assert ctx.daemon is not None
        result = ctx.daemon.test_vend(column)
    except Exception as exc:  # CommandRefused and friends: the daemon says why
        return failed(f"drop.column{column}", "the daemon refused the test vend", expected="a test vend",
                      found=str(exc), action="open the door (service mode) and retry")
    return drop_result(column, result.outcome, recorded=True)


def drop_result(column: int, outcome: str, recorded: bool) -> Check:
    name = f"drop.column{column}"
    if outcome == "dropped":
        where = "recorded in the ledger as a test vend" if recorded else "not in the ledger: put it back"
        return passed(name, f"column {column}: kit dropped and seen by the sensor ({where})", outcome=outcome)
    if outcome in DROP_OUTCOMES:
        what, todo = DROP_OUTCOMES[outcome]
        return failed(name, f"column {column}: {what}", expected="one kit dropped and seen",
                      found=outcome, action=todo.format(c=column), outcome=outcome)
    return failed(name, f"column {column}: unexpected outcome {outcome}", expected="dropped", found=outcome,
                  action="repeat with the door open; report the outcome", outcome=outcome)
