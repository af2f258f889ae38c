"""The unit daemon: wires board, player, ledger, vend flow, temperature, reporter and control socket,
and runs them on one loop thread fed by a queue (board and player callbacks only enqueue)."""

from __future__ import annotations

import queue
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from controller import log
from controller.clock import Clock
from controller.config import UnitConfig
from controller.control_socket import ControlServer, serve
from controller.kiosk import buttons
from controller.kiosk.display import Kiosk
from controller.ledger import ColumnChange, Ledger, LedgerUnavailable
from controller.mqtt.commands import (
    CommandRefused,  # the one refusal type, re-exported
    CommandRegistry,
    CommandResult,
    DiagReport,
    LotHoldDone,
    LotSet,
    ModeNow,
    RestockDone,
    TestVendDone,
    command_name,
)
from controller.mqtt.reporter import Reporter
from controller.sdnotify import Notifier
from controller.serial.board_api import (
    Board,
    BoardError,
    BoardEvent,
    BoardFault,
    BoardInfo,
    BoardRebooted,
    ButtonPressed,
    DoorChanged,
)
from controller.vend import stock
from controller.vend.alarms import Alarms
from controller.vend.flow import Mode, VendFlow
from controller.vend.temperature import BandChange, TemperatureMonitor
from controller.vend.video import PlayerEvent, VideoPlayer
from schemas.models import (
    AlarmState,
    ColumnState,
    CommandBase,
    DiagCommand,
    DispenseEvent,
    LockCommand,
    LotExposure,
    LotHold,
    LotHoldCommand,
    LotSegment,
    RestockCommand,
    RestockEvent,
    SetLotCommand,
    Telemetry,
    TemperatureEvent,
    TemperatureSample,
    TestVendCommand,
    UnitState,
    UnlockCommand,
    VendAttempt,
    VendFailedEvent,
)

LOG = log.get("daemon")
MAX_IDLE_S = 5.0  # the loop sleeps until an item comes or a deadline is due, never longer than this
LEDGER_PROBE_S = 2.0  # how often a ledger that cannot write is tried again
# A start that finds the ledger unwritable feeds the watchdog this long before letting systemd restart the
# daemon, twice as long with each such start in a row (counted in the runtime folder), up to the maximum:
# a disk that stays full costs a restart every half hour, not a crash loop.
LEDGER_HOLD_S = 60.0
LEDGER_HOLD_MAX_S = 1800.0
DOWN_STARTS = "ledger-down-starts"
T = TypeVar("T")


@dataclass(frozen=True)
class BoardInput:
    event: BoardEvent
    received: float  # monotonic, on arrival
    queued: bool  # came while the daemon was still starting: the board held it while the daemon was down


@dataclass(frozen=True)
class PlayerInput:
    event: PlayerEvent


@dataclass(frozen=True)
class CallInput:
    fn: Callable[[], object]
    future: Future[object]


@dataclass(frozen=True)
class Wake:
    """Nothing to handle: the loop wakes to look at its stop flag and deadlines."""


Input = BoardInput | PlayerInput | CallInput | Wake


class UnitDaemon:
    def __init__(self, config: UnitConfig, board: Board, player: VideoPlayer, clock: Clock,
                 notifier: Notifier | None = None, kiosk: Kiosk | None = None,
                 runtime_dir: Path | None = None) -> None:
        self.config = config
        self.board = board
        self.player = player
        self.clock = clock
        self.unit_id = config.unit.id
        self.notifier = notifier or Notifier()
        self.ledger = Ledger(
            config.paths.ledger_path(), clock, unit_id=config.unit.id, read_if_unwritable=True
        )
        self._runtime = runtime_dir if runtime_dir is not None else config.paths.runtime_path()
        self.alarms = Alarms(self.ledger, self._changed)
        self.kiosk = kiosk or Kiosk(config, player, clock, runtime_dir=runtime_dir)
        self.flow = VendFlow(
            config, self.ledger, board, player, clock, self.alarms, self._changed, self.kiosk
        )
        self.temperature = TemperatureMonitor(config.temperature)
        self._last_reading: float | None = None
        self._last_purge: float | None = None
        self._sample_cursor = 0
        self.cert_not_after = _certificate_expiry(config)  # reported in state: central warns before it
        self.board_info: BoardInfo | None = None
        self.reporter: Reporter | None = None
        self.control: ControlServer[UnitDaemon] | None = None
        self.commands = self._command_registry()
        self._inbox: queue.Queue[Input] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at = clock.monotonic()
        self._next_poll = 0.0
        self._next_watchdog = 0.0
        self._opened = False
        self._light: str | None = None  # the status light pattern last set
        self.ledger_down: str | None = None  # why the ledger cannot write (None: it can)
        self._ledger_down_since: datetime | None = None
        self._next_probe = 0.0
        self._watchdog_hold_until: float | None = None  # ledger down at start: fed until then (clock time)
        self._last_state: UnitState | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def mode(self) -> Mode:
        return self.flow.mode

    def open(self) -> None:
        """Everything before the loop: board HELLO, ledger columns and initial stock, reconcile, reporter.
        A ledger that cannot write at start (a full or read-only disk) does not stop the unit: it comes up
        out of service and says so (screen, log, state over MQTT), and does the ledger's part of this
        by itself once the ledger writes again."""
        self.board_info = self.board.start(self._on_board_event)
        LOG.info(
            "board_started",
            firmware=self.board_info.firmware,
            board=self.board_info.board_id,
            boots=self.board_info.boot_count,
        )
        self.player.start(self._on_player_event)
        self.kiosk.start()
        try:
            self._start_ledger_work()
        except LedgerUnavailable as exc:
            self._ledger_failed(exc, at_start=True)
        self.flow.ready = True
        self._opened = True
        self._start_reporter()
        self._start_control()
        LOG.info("unit_ready", unit=self.unit_id, mode=self.mode, last_seq=self.ledger.last_seq())
        self._changed()

    def _start_ledger_work(self) -> None:
        if self.ledger.read_only is not None:
            raise LedgerUnavailable(self.ledger.read_only)
        self._init_columns()
        self.reconcile()
        self.flow.check_expiry()
        self._poll_status()
        self._forget_down_starts()

    def start(self) -> None:
        """open() and run the loop on a thread."""
        self.open()
        self._thread = threading.Thread(target=self._loop, name=f"unit-{self.unit_id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._inbox.put(Wake())  # the loop may be asleep until its next deadline
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        closers: list[tuple[str, Callable[[], None]]] = []
        if self.reporter is not None:
            closers.append(("reporter", self.reporter.stop))
        if self.control is not None:
            closers.append(("control", self.control.close))
        for name, closer in (
            *closers,
            ("kiosk", self.kiosk.close),
            ("player", self.player.close),
            ("board", self.board.close),
            ("ledger", self.ledger.close),
        ):
            try:
                closer()
            except Exception as exc:  # one part failing to stop must not keep the rest running
                LOG.warning("stop_failed", part=name, error=str(exc))
        LOG.info("unit_stopped", unit=self.unit_id)

    def run_forever(self) -> None:
        """Run until SIGTERM or SIGINT; tells systemd READY=1 once serving."""
        stop = threading.Event()
        previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            self.notifier.ready(f"vending as {self.unit_id}")
            while not stop.wait(1.0):
                if self._thread is not None and not self._thread.is_alive():
                    raise RuntimeError("expected the unit loop to run, found it stopped")
            self.notifier.stopping()
        finally:
            self.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)

    # ------------------------------------------------------------ the loop

    def _loop(self) -> None:
        """Event-driven: wakes for a queued item (board event, player event, call, stop) or for the next
        deadline (video timeout, status poll, systemd watchdog), not on a fixed poll."""
        while not self._stop.is_set():
            try:
                item = self._inbox.get(timeout=self._idle_s())
            except queue.Empty:
                item = None
            if item is not None:
                self._handle(item)
            self._tick()

    def _idle_s(self) -> float:
        """Seconds until the next deadline of the loop (0 when one is due)."""
        now = self.clock.monotonic()
        due = [self._next_poll - now]
        video = self.flow.next_deadline()
        if video is not None:
            due.append(video - now + 0.001)
        if self.notifier.watchdog_interval_s is not None and (self.ledger_down is None or self._holding()):
            due.append(self._next_watchdog - time.monotonic())
        if self.ledger_down is not None:
            due.append(self._next_probe - now)
        return max(0.0, min(MAX_IDLE_S, *due))

    def pump(self) -> int:
        """Handle everything queued, then one tick (tests drive the daemon this way with a FakeClock)."""
        handled = 0
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            self._handle(item)
            handled += 1
        self._tick()
        return handled

    def _handle(self, item: Input) -> None:
        try:
            if isinstance(item, BoardInput):
                self._board_event(item.event, item.received, item.queued)
            elif isinstance(item, PlayerInput):
                self.flow.on_player(item.event)
            elif isinstance(item, CallInput):
                self._run_call(item.fn, item.future)
                if isinstance(item.future.exception(), LedgerUnavailable):  # a command hit it first
                    self._ledger_failed(item.future.exception())  # type: ignore[arg-type]
        except LedgerUnavailable as exc:
            self._ledger_failed(exc)
        except Exception:
            LOG.exception("handle_failed", kind=type(item).__name__)

    @staticmethod
    def _run_call(fn: Callable[[], object], future: Future[object]) -> None:
        try:
            future.set_result(fn())
        except Exception as exc:
            future.set_exception(exc)

    def _tick(self) -> None:
        try:
            self.flow.tick()
            now = self.clock.monotonic()
            if self.ledger_down is not None:
                if now >= self._next_probe:
                    self._next_probe = now + LEDGER_PROBE_S
                    self._probe_ledger()
            elif now >= self._next_poll:
                self._next_poll = now + self.config.policies.status_poll_s
                self._poll_status()
                self.flow.check_expiry()
            self._drive_light()
        except LedgerUnavailable as exc:
            self._ledger_failed(exc)
        except Exception:
            LOG.exception("tick_failed")
        self._watchdog()

    def _drive_light(self) -> None:
        """The board's status light follows the unit: lit = ready, blinking = busy (a person's video or
        kit), off = cannot vend. Boards without a light (protocol 1) are left alone after one try."""
        light = getattr(self.board, "light", None)
        if light is None or self._light == "unsupported":
            return
        ready = "lit" if self.mode == "vending" else "off"
        want = "blinking" if self.flow.phase.value != "idle" else ready
        if want == self._light:
            return
        try:
            light(want)
        except BoardError as exc:
            if type(exc).__name__ == "ProtocolMismatch":
                self._light = "unsupported"
                LOG.info("status_light_unsupported", detail=str(exc))
            else:
                LOG.warning("status_light_failed", error=str(exc))
            return
        self._light = want
    # ------------------------------------------------------------ a ledger that cannot write

    def _ledger_failed(self, exc: LedgerUnavailable, at_start: bool = False) -> None:
        """Stop vending (a kit that cannot be recorded is never released: its command id could not be
        journaled first), say so on the screen, raise the alarm where it can still go (the log, the
        retained state over MQTT: not the ledger), and stop feeding the watchdog so systemd restarts
        the daemon; at start, only after a hold that doubles with each such start in a row (a restart
        would find the same disk). Probing goes on: vending resumes by itself when the ledger writes."""
        first = self.ledger_down is None
        self.ledger_down = str(exc)[:300]
        if first:
            self._ledger_down_since = self.clock.now()
            self._next_probe = self.clock.monotonic() + LEDGER_PROBE_S
            action = "out of service, watchdog stopped, probing every 2 s"
            if at_start:
                starts = self._count_down_start()
                hold = min(LEDGER_HOLD_S * 2 ** min(starts - 1, 16), LEDGER_HOLD_MAX_S)
                self._watchdog_hold_until = self.clock.monotonic() + hold
                action = (f"out of service from the start ({starts} start(s) in a row), watchdog fed "
                          f"{hold:.0f} s more then stopped, probing every 2 s")
            LOG.critical("ledger_unavailable", error=self.ledger_down, action=action)
            self.flow.stop_vending("ledger_unavailable")
            self.notifier.status("out of service: the ledger cannot write")
        self._changed()

    def _probe_ledger(self) -> None:
        try:
            self.ledger.probe()
        except LedgerUnavailable as exc:
            LOG.warning("ledger_still_unavailable", error=str(exc)[:300])
            return
        since = self._ledger_down_since
        self.ledger_down = None
        self._ledger_down_since = None
        self._watchdog_hold_until = None
        self._forget_down_starts()
        LOG.warning("ledger_recovered", down_since=since.isoformat() if since else None)
        self.alarms.raise_("ledger_unavailable", f"the ledger could not write from {since}", "critical")
        self.alarms.clear("ledger_unavailable", "the ledger writes again")
        self._init_columns()  # a unit that started with the ledger down (no-op when it was done)
        self.reconcile()  # a kit that dropped while its record failed is journaled: settled now
        self.flow.check_expiry()
        self.flow.resume_vending()
        self.notifier.status(f"vending as {self.unit_id}")

    def _holding(self) -> bool:
        """The ledger was down at start and the watchdog is still fed (see LEDGER_HOLD_S)."""
        return self._watchdog_hold_until is not None and self.clock.monotonic() < self._watchdog_hold_until

    def _count_down_start(self) -> int:
        """Starts in a row that found the ledger unwritable, this one included: kept in the runtime folder
        (tmpfs: kept across restarts, not reboots; RuntimeDirectoryPreserve=restart), else 1."""
        path = self._runtime / DOWN_STARTS
        try:
            starts = int(path.read_text()) + 1
        except (OSError, ValueError):
            starts = 1
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{starts}\n")
        except OSError as exc:
            LOG.warning("down_starts_not_kept", path=str(path), error=str(exc))
        return starts

    def _forget_down_starts(self) -> None:
        try:
            (self._runtime / DOWN_STARTS).unlink(missing_ok=True)
        except OSError as exc:
            LOG.warning("down_starts_not_cleared", error=str(exc))

    def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval_s
        if interval is None or (self.ledger_down is not None and not self._holding()):
            return
        now = time.monotonic()  # systemd's watchdog runs on real time, whatever clock the unit uses
        if now >= self._next_watchdog:
            self._next_watchdog = now + interval
            self.notifier.watchdog()

    def _call(self, fn: Callable[[], T], timeout: float = 60.0) -> T:
        """Run fn on the loop thread (commands come from the reporter's and control socket's threads)."""
        loop = self._thread
        if loop is None or not loop.is_alive() or loop is threading.current_thread():
            return fn()
        future: Future[object] = Future()
        self._inbox.put(CallInput(fn, future))
        return future.result(timeout=timeout)  # type: ignore[return-value]  # fn's own result

    # ------------------------------------------------------------ inputs from other threads

    def _on_board_event(self, event: BoardEvent) -> None:
        # stamped on arrival; `queued`: it came while the daemon was still starting, i.e. the board held
        # it while the daemon was down (the board resends its queued events as soon as HELLO arrives)
        self._inbox.put(BoardInput(event, self.clock.monotonic(), not self._opened))

    def _on_player_event(self, event: PlayerEvent) -> None:
        self._inbox.put(PlayerInput(event))

    def _board_event(self, event: BoardEvent, received: float | None = None, queued: bool = False) -> None:
        if isinstance(event, ButtonPressed):
            why = self._stale(event, received, queued)
            kiosk = self.config.kiosk
            long_action = kiosk.long_press if self.config.policies.emergency else "repeat"
            action = buttons.resolve(
                event, kiosk.buttons, self.config.videos.default_language, kiosk.long_press_ms, long_action
            )
            if why is not None:
                self.flow.on_void_press(action.lang or self.config.videos.default_language, why)
            elif action.kind == "repeat" or (
                action.kind == "emergency" and action.long and self.kiosk.screen not in ("idle", "video")
            ):
                self.kiosk.repeat()  # a long press on a screen with words says them again
            elif action.kind == "emergency":
                self.flow.on_emergency(action.lang)
            else:
                self.flow.on_press(action.lang or self.config.videos.default_language)
        elif isinstance(event, DoorChanged):
            self.flow.on_door(event.open)
        elif isinstance(event, BoardRebooted):
            LOG.warning("board_rebooted", boots=event.boot_count, reason=event.reason)
            self.reconcile()
            self._poll_status()
        elif isinstance(event, BoardFault):
            code = f"board_fault_{event.code}" + (f"_{event.column}" if event.column else "")
            self.alarms.raise_(
                code, f"board fault {event.code}: {event.detail}", "warning", event.column or None
            )

    def _stale(self, event: ButtonPressed, received: float | None, queued: bool) -> str | None:
        """Why a press no longer belongs to a person at the machine (None: it does). A press the board
        queued while the daemon was down arrives as soon as the link comes up, possibly hours later;
        one that waited in our queue while the loop was busy (a dispense) is just as stale."""
        if queued:
            return "queued_before_link"
        if received is None:
            return None
        age = self.clock.monotonic() - received + (event.age_s or 0.0)
        if age > self.config.policies.press_max_age_s:
            return f"too_old ({age:.1f}s)"
        return None

    def _changed(self) -> None:
        if self.reporter is None:
            return
        try:
            self.reporter.wake()
            self.reporter.state_changed()
        except Exception as exc:
            LOG.warning("reporter_notify_failed", error=str(exc))

    # ------------------------------------------------------------ start-up work

    def _init_columns(self) -> None:
        fresh = self.ledger.last_seq() == 0
        for col in self.config.columns:
            self.ledger.ensure_column(col.column, col.product)
        if not fresh:
            return
        for col in self.config.columns:
            change = ColumnChange(
                col.column, stock=col.initial_stock, lot=col.lot, expiry=col.expiry, set_lot=True
            )
            self.ledger.record(
                RestockEvent,
                changes=(change,),
                column=col.column,
                added=col.initial_stock,
                lot=col.lot,
                expiry=col.expiry,
                expected_before=0,
                source="initial",
            )
        LOG.info("initial_stock_recorded", columns=len(self.config.columns))

    def reconcile(self) -> int:
        """Settle every command journaled as pending (the daemon died or the link failed mid-dispense)
        with the board's own journal: dropped -> the dispense is recorded once; else -> vend_failed."""
        settled = 0
        for cmd in self.ledger.pending_commands():
            try:
                outcome = self.board.query_result(cmd.command_id).outcome
            except BoardError as exc:
                LOG.error("reconcile_unreachable", command_id=cmd.command_id, error=str(exc))
                self.alarms.raise_("board_unreachable", "cannot settle a pending dispense yet", "critical")
                continue
            if outcome == "dropped":
                self.flow.record_drop(cmd.command_id, cmd.column, cmd.language, cmd.via)
            else:
                attempt = VendAttempt(column=cmd.column, command_id=cmd.command_id, outcome=outcome)
                self.ledger.record(
                    VendFailedEvent,
                    settle=(cmd.command_id, outcome),
                    reason="interrupted",
                    attempts=[attempt],
                )
            LOG.warning("reconciled", command_id=cmd.command_id, outcome=outcome, via=cmd.via)
            settled += 1
        if settled or not self.ledger.pending_commands():
            self.alarms.clear("board_unreachable", "pending dispenses settled")
        return settled

    def _start_reporter(self) -> None:
        if self.config.mqtt is None:
            return
        self.reporter = Reporter(self.config.mqtt, self, self.ledger, self.clock)
        self.reporter.start()

    def _start_control(self) -> None:
        path = self.config.paths.control_socket
        if path is None:
            return
        self.control = serve(self, path, _control_request)

    # ------------------------------------------------------------ status and temperature

    def _poll_status(self) -> None:
        try:
            status = self.board.status()
        except BoardError as exc:
            LOG.warning("status_failed", error=str(exc))
            self.kiosk.set_out_of_service("board", "board_down")  # told, not a silent refusal
            return
        self.kiosk.set_out_of_service("board", None)
        if status.door_open != self.flow.door_open:
            self.flow.on_door(status.door_open)
        for change in self.temperature.update(status.temperature_c, self.clock.monotonic()):
            self._temperature_change(change)
        self.record_temperature(status.temperature_c)
        self.reconcile_if_pending()
        self._purge_if_due()

    def record_temperature(self, celsius: float) -> None:
        """Keep the reading, add the time since the last one to every loaded lot's exposure (judged
        by the products' label range), and hold any lot past the heat policy."""
        now = self.clock.monotonic()
        seconds = 0.0 if self._last_reading is None else min(max(now - self._last_reading, 0.0), 3600.0)
        self._last_reading = now
        label = self.config.label()
        band = label.band(celsius)
        policy = self.config.heat_policy
        self.ledger.record_temperature(
            celsius, seconds, band != "normal", band == "excursion", policy.sample_keep
        )
        self._apply_heat_policy()

    def _apply_heat_policy(self) -> None:
        policy, label = self.config.heat_policy, self.config.label()
        held = {h.lot for h in self.ledger.holds()}
        changed = False
        for seg in self.ledger.segments():
            if not seg.lot or seg.lot in held or self.ledger.get_meta(f"heat_released:{seg.lot}"):
                continue
            why = None
            if seg.seconds_in_excursion > policy.max_minutes_beyond_excursion * 60:
                why = (
                    f"{seg.seconds_in_excursion / 60:.0f} min beyond {label.excursion_min_c:g}-"
                    f"{label.excursion_max_c:g} °C (limit {policy.max_minutes_beyond_excursion:g} min)"
                )
            elif seg.seconds_outside_label > policy.max_hours_outside_label * 3600:
                why = (
                    f"{seg.seconds_outside_label / 3600:.1f} h outside the label range "
                    f"{label.storage_min_c:g}-{label.storage_max_c:g} °C "
                    f"(limit {policy.max_hours_outside_label:g} h)"
                )
            elif (
                policy.max_mkt_c is not None
                and seg.mkt_c is not None
                and (self.clock.now() - seg.loaded_at).total_seconds() >= policy.mkt_min_hours * 3600
                and seg.mkt_c > policy.max_mkt_c
            ):
                why = f"mean kinetic temperature {seg.mkt_c:.1f} °C above {policy.max_mkt_c:g} °C"
            if why is None:
                continue
            reason = f"heat in column {seg.column}: {why}"
            if self.ledger.hold_lot(seg.lot, "heat", reason, "unit"):
                held.add(seg.lot)
                changed = True
                self.alarms.raise_(
                    f"lot_heat_{seg.lot}", f"lot {seg.lot} held: {reason}", "critical", seg.column
                )
                LOG.warning("lot_heat_hold", lot=seg.lot, column=seg.column, reason=reason)
        if changed:
            self.flow.check_expiry()
            self._changed()

    def _purge_if_due(self) -> None:
        """Acknowledged events older than privacy.keep_acked_events_days leave the ledger (hourly)."""
        now = self.clock.monotonic()
        if self._last_purge is not None and now - self._last_purge < 3600:
            return
        self._last_purge = now
        days = self.config.privacy.keep_acked_events_days
        n = self.ledger.purge(self.clock.now() - timedelta(days=days))
        if n:
            LOG.info("events_purged", events=n, older_than_days=days)

    def reconcile_if_pending(self) -> None:
        if self.ledger.pending_commands() and self.flow.phase.value == "idle":
            self.reconcile()

    def _temperature_change(self, change: BandChange) -> None:
        lots = sorted({r.lot for r in self.ledger.columns() if r.lot and r.stock > 0})
        self.ledger.record(
            TemperatureEvent,
            celsius=change.celsius,
            band=change.band,
            state=change.state,
            lots=lots,
            seconds_out_of_range=round(change.seconds_out_of_range, 1),
        )
        LOG.warning("temperature", band=change.band, state=change.state, celsius=change.celsius)
        if change.band != "excursion":
            return
        if change.state == "entered":
            lim = self.config.temperature
            self.alarms.raise_(
                "temperature_excursion",
                f"{change.celsius:.1f} C outside {lim.excursion_min_c}-{lim.excursion_max_c} C",
                "critical",
            )
        else:
            self.ledger.add_excursion(lots, change.seconds_out_of_range)
            self.alarms.clear("temperature_excursion", f"back to {change.celsius:.1f} C")

    # ------------------------------------------------------------ API for reporter, control socket, diag

    def raise_alarm(
        self, code: str, message: str, severity: str = "warning", column: int | None = None
    ) -> bool:
        return self.alarms.raise_(code, message, severity, column)

    def clear_alarm(self, code: str) -> bool:
        return self.alarms.clear(code)

    def restock(
        self,
        column: int,
        count: int,
        counted_before: int | None = None,
        lot: str | None = None,
        expiry: date | None = None,
        reason: str | None = None,
        source: str = "local",
    ) -> RestockEvent:
        return self._call(lambda: self._restock(column, count, counted_before, lot, expiry, reason, source))

    def _restock(
        self,
        column: int,
        count: int,
        counted_before: int | None,
        lot: str | None,
        expiry: date | None,
        reason: str | None,
        source: str,
    ) -> RestockEvent:
        try:
            cfg = self.config.column(column)
        except KeyError:
            raise CommandRefused(f"expected a configured column, found column {column}") from None
        if not 0 <= count <= cfg.capacity:
            raise CommandRefused(f"column {column}: expected a count 0..{cfg.capacity}, found {count}")
        row = self.ledger.column(column)
        discrepancy = 0 if counted_before is None else counted_before - row.stock
        if discrepancy and not (reason or "").strip():
            raise CommandRefused(
                f"column {column}: blind count {counted_before} differs from the ledger's "
                f"{row.stock}; expected a reason"
            )
        before = row.stock if counted_before is None else counted_before
        back = self.ledger.segments(column)[-1:] or None
        new_lot = lot if lot is not None else (back[0].lot if back else row.lot)
        new_expiry = expiry if expiry is not None else (back[0].expiry if back else row.expiry)
        fault = None if row.fault == "empty" else row.fault
        change = ColumnChange(
            column, stock=count, lot=new_lot, expiry=new_expiry, found=before, fault=fault, set_fault=True
        )
        event = self.ledger.record(
            RestockEvent,
            changes=(change,),
            column=column,
            added=count - before,
            lot=new_lot,
            expiry=new_expiry,
            expected_before=row.stock,
            counted_before=counted_before,
            discrepancy=discrepancy,
            reason=reason,
            source=source,
        )
        LOG.info("restocked", column=column, stock_after=count, discrepancy=discrepancy, source=source)
        if count > 0:
            self.alarms.clear("out_of_stock", f"column {column} restocked")
            if fault is None:
                self.alarms.clear(f"column_fault_{column}", "restocked")
        self.flow.check_expiry()
        self._changed()
        return event

    # ------------------------------------------------------------ remote commands (the reporter's Unit)

    def _command_registry(self) -> CommandRegistry:
        """Each command the daemon carries out, with its handler (rebirth and replay are the reporter's)."""
        reg = CommandRegistry("the unit daemon")
        reg.register(RestockCommand, self._cmd_restock)
        reg.register(SetLotCommand, self._cmd_set_lot)
        reg.register(LockCommand, self._cmd_lock)
        reg.register(UnlockCommand, self._cmd_unlock)
        reg.register(LotHoldCommand, self._cmd_lot_hold)
        reg.register(DiagCommand, self._cmd_diag)
        reg.register(TestVendCommand, self._cmd_test_vend)
        return reg

    def run_command(self, cmd: CommandBase) -> CommandResult:
        """Carry out one remote command on the loop thread; CommandRefused says why not."""
        LOG.info("command", name=command_name(cmd), command_id=cmd.command_id)
        return self._call(lambda: self.commands.run(cmd))

    def _cmd_restock(self, cmd: RestockCommand) -> RestockDone:
        ev = self._restock(
            cmd.column, cmd.count, cmd.counted_before, cmd.lot, cmd.expiry, cmd.reason, "remote"
        )
        return RestockDone(seq=ev.seq, stock_after=ev.stock_after, discrepancy=ev.discrepancy)

    def _cmd_set_lot(self, cmd: SetLotCommand) -> LotSet:
        """Every kit in the column is of this lot (a correction: the whole queue takes it)."""
        row = self.ledger.column(cmd.column) if self._known(cmd.column) else None
        if row is None:
            raise CommandRefused(f"expected a configured column, found column {cmd.column}")
        change = ColumnChange(cmd.column, stock=row.stock, lot=cmd.lot, expiry=cmd.expiry, set_lot=True)
        ev = self.ledger.record(
            RestockEvent,
            changes=(change,),
            column=cmd.column,
            added=0,
            lot=cmd.lot,
            expiry=cmd.expiry,
            expected_before=row.stock,
            reason="lot set",
            source="remote",
        )
        self.flow.check_expiry()
        self._changed()
        return LotSet(seq=ev.seq, lot=ev.lot, expiry=str(ev.expiry))

    def _cmd_lot_hold(self, cmd: LotHoldCommand) -> LotHoldDone:
        """A recall from central (hold) or its release: kept in the ledger (survives restarts); every
        column whose front kit is of the lot stops vending at once."""
        if cmd.hold:
            changed = self.ledger.hold_lot(cmd.lot, "recall", cmd.reason, cmd.by)
        else:
            released = self.ledger.release_lot(cmd.lot)
            changed = released is not None
            if released is not None and released.kind == "heat":
                # staff judged this lot's exposure: the policy does not hold it again for it
                self.ledger.set_meta(f"heat_released:{cmd.lot}", f"{cmd.by}: {cmd.reason}"[:300])
                self.alarms.clear(f"lot_heat_{cmd.lot}", f"released by {cmd.by}: {cmd.reason}")
        LOG.warning("lot_hold", lot=cmd.lot, hold=cmd.hold, by=cmd.by, reason=cmd.reason, changed=changed)
        self.flow.check_expiry()
        self._changed()
        kits = sum(s.count for s in self.ledger.segments() if s.lot == cmd.lot)
        return LotHoldDone(lot=cmd.lot, held=cmd.hold, changed=changed, kits_here=kits)

    def _cmd_lock(self, cmd: LockCommand) -> ModeNow:
        self.flow.set_locked(True)
        return ModeNow(mode=self.mode)

    def _cmd_unlock(self, cmd: UnlockCommand) -> ModeNow:
        self.flow.set_locked(False)
        return ModeNow(mode=self.mode)

    def _cmd_diag(self, cmd: DiagCommand) -> DiagReport:
        from controller.diag.run import build_report  # diagnostics load when a technician asks

        return DiagReport.model_validate(build_report(self))

    def _cmd_test_vend(self, cmd: TestVendCommand) -> TestVendDone:
        # Remote test vends only while the public cannot vend: a kit must not drop unasked into the
        # tray of a unit in service. The board refuses to turn a coil with the door open, so "service"
        # here means locked by operations (cmd/lock) or held in service by a failed self-test.
        if self.mode == "vending":
            raise CommandRefused(
                "test_vend needs service mode: expected the unit locked (cmd/lock) or in service, "
                "found vending"
            )
        return self._checked_test_vend(cmd.column)

    def test_vend(self, column: int) -> TestVendDone:
        """A technician's drop test at the unit (diag drop-test): recorded as a dispense via "test"."""
        return self._call(lambda: self._checked_test_vend(column))

    def _checked_test_vend(self, column: int) -> TestVendDone:
        if not self._known(column):
            raise CommandRefused(f"expected a configured column, found column {column}")
        if self.flow.phase.value != "idle":
            raise CommandRefused(f"expected the unit idle, found it in {self.flow.phase.value}")
        if self.ledger.column(column).stock == 0:
            raise CommandRefused(f"column {column}: expected stock for a test vend, found 0")
        return self._test_vend(column)

    def _test_vend(self, column: int) -> TestVendDone:
        cid = self.ledger.allocate_command(column, None, "test")
        try:
            outcome = self.board.dispense(cid, column).outcome
        except BoardError as exc:
            self.alarms.raise_("board_unreachable", f"test vend {cid}: {exc}", "critical")
            return TestVendDone(command_id=cid, outcome="unknown")
        if outcome == "dropped":
            ev: DispenseEvent = self.flow.record_drop(cid, column, None, "test")
            return TestVendDone(command_id=cid, outcome=outcome, seq=ev.seq, stock_after=ev.stock_after)
        self.ledger.record(
            VendFailedEvent,
            settle=(cid, outcome),
            reason="test_vend_failed",
            attempts=[VendAttempt(column=column, command_id=cid, outcome=outcome)],
        )
        return TestVendDone(command_id=cid, outcome=outcome)

    def _known(self, column: int) -> bool:
        return any(c.column == column for c in self.config.columns)

    # ------------------------------------------------------------ views

    def snapshot_state(self) -> UnitState:
        """The unit's state. While the ledger cannot write, its alarm is added here (it cannot be
        recorded), and if the ledger cannot even be read the last good state is sent with it."""
        try:
            state = self._read_state()
            self._last_state = state
        except sqlite3.Error:
            if self._last_state is None:
                raise
            state = self._last_state.model_copy(update={"ts": self.clock.now()})
        if self.ledger_down is None:
            return state
        since = self._ledger_down_since or self.clock.now()
        alarm = AlarmState(code="ledger_unavailable", severity="critical", since=since,
                           message=f"out of service: the ledger cannot write ({self.ledger_down})"[:500])
        others = [a for a in state.alarms if a.code != alarm.code]
        return state.model_copy(update={"mode": "service", "alarms": [*others, alarm]})

    def _read_state(self) -> UnitState:
        oldest = self.ledger.oldest_pending_at()
        return UnitState(
            unit=self.unit_id,
            site=self.config.unit.site,
            ts=self.clock.now(),
            mode=self.mode,
            firmware_version=self.board_info.firmware if self.board_info else None,
            config_version=self.config.config_version,
            columns=self._column_states(),
            alarms=self.ledger.active_alarms(),
            outbox_depth=self.ledger.depth(),
            outbox_oldest_age_s=self._age(oldest),
            last_seq=self.ledger.last_seq(),
            temperature_c=self.temperature.last_c,
            labels={name: p.label for name, p in self.config.products.items()},
            holds=[
                LotHold(lot=h.lot, kind=h.kind, reason=h.reason[:300], by=h.by[:64], since=h.since)  # type: ignore[arg-type]
                for h in self.ledger.holds()
            ],
            cert_not_after=self.cert_not_after,
        )

    def _column_states(self) -> list[ColumnState]:
        rows = {r.column: r for r in self.ledger.columns()}
        segs: dict[int, list[LotSegment]] = {}
        for s in self.ledger.segments():
            segs.setdefault(s.column, []).append(
                LotSegment(
                    lot=s.lot,
                    expiry=s.expiry,
                    count=s.count,
                    loaded_at=s.loaded_at,
                    exposure=LotExposure(
                        seconds_outside_label=round(s.seconds_outside_label, 1),
                        seconds_in_excursion=round(s.seconds_in_excursion, 1),
                        mkt_c=round(s.mkt_c, 2) if s.mkt_c is not None else None,
                    ),
                )
            )
        today = self.clock.now().date()
        out = []
        for cfg in self.config.columns:
            r = rows.get(cfg.column)
            out.append(
                ColumnState(
                    column=cfg.column,
                    product=cfg.product,
                    capacity=cfg.capacity,
                    par=cfg.par,
                    stock=r.stock if r else 0,
                    lot=r.lot if r else None,
                    expiry=r.expiry if r else None,
                    fault=r.fault if r else None,
                    lots=segs.get(cfg.column, [])[:50],
                    held=stock.blocked(r, today) if r else None,
                )
            )
        return out

    def telemetry(self) -> Telemetry:
        """The periodic telemetry, with the temperature readings since the last one (at most 720)."""
        samples = self.ledger.temperature_samples(self._sample_cursor)
        if samples:
            self._sample_cursor = samples[-1][0]
        return Telemetry(
            unit=self.unit_id,
            ts=self.clock.now(),
            samples=[TemperatureSample(ts=ts, celsius=max(-60.0, min(100.0, c))) for _, ts, c in samples],
            temperature_c=self.temperature.last_c,
            uptime_s=max(0.0, self.clock.monotonic() - self._started_at),
            link=self.board.counters.as_dict(),
            outbox_depth=self.ledger.depth(),
            outbox_oldest_age_s=self._age(self.ledger.oldest_pending_at()),
        )

    def _age(self, when: datetime | None) -> float | None:
        return None if when is None else max(0.0, (self.clock.now() - when).total_seconds())


def _certificate_expiry(config: UnitConfig) -> datetime | None:
    """When the unit's MQTT client certificate expires, or None (no TLS, unreadable: logged)."""
    tls = config.mqtt.tls if config.mqtt is not None else None
    if tls is None:
        return None
    from controller.diag.host_checks import certificate_not_after

    try:
        return certificate_not_after(tls.cert_file)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        LOG.warning("certificate_unreadable", file=str(tls.cert_file), error=str(exc)[:200])
        return None


def _control_request(daemon: UnitDaemon, req: dict[str, Any]) -> dict[str, object]:
    """One control-socket request; the diagnostics behind it load at the first one, not at start."""
    from controller.diag.run import handle_request

    return handle_request(daemon, req)
