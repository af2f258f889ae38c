"""The vend flow: press -> video -> dispense, with the video gate, FEFO, column retry and the ledger.

States: idle -> (button) video -> (video completed) dispensing -> dispensed | failed -> idle.
The door puts the unit in service mode (no vending) until it is closed and a self-test passes.
Runs on the daemon's one loop thread only; board and player callbacks reach it through the daemon's queue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

from controller import log
from controller.clock import Clock
from controller.config import UnitConfig
from controller.kiosk.display import Kiosk
from controller.ledger import ColumnChange, Ledger
from controller.serial.board_api import Board, BoardError
from controller.vend import stock
from controller.vend.alarms import Alarms
from controller.vend.video import (
    PlayerEvent,
    VideoCompleted,
    VideoFailed,
    VideoPlayer,
    VideoProgress,
    VideoStarted,
)
from schemas.models import (
    DispenseEvent,
    DoorEvent,
    LotExposure,
    OutOfStockEvent,
    VendAttempt,
    VendFailedEvent,
    VideoEvent,
)

LOG = log.get("vend")
Mode = Literal["vending", "service", "locked", "starting"]
COLUMN_FAULTS = {"jammed", "no_drop_detected", "motor_fault", "empty", "bad_column"}


class Phase(StrEnum):
    IDLE = "idle"
    VIDEO = "video"
    DISPENSING = "dispensing"


@dataclass
class VideoSession:
    token: int
    language: str
    started: float  # monotonic
    length_s: float
    kit: bool = True  # False: out of stock, the person chose to watch anyway


@dataclass
class KitSession:
    """One person's kits after one completed video: more within the window, up to the cap."""

    language: str
    kits: int
    until: float  # monotonic: "another kit" presses count until then


class VendFlow:
    def __init__(
        self,
        config: UnitConfig,
        ledger: Ledger,
        board: Board,
        player: VideoPlayer,
        clock: Clock,
        alarms: Alarms,
        changed: Callable[[], None],
        kiosk: Kiosk | None = None,
    ) -> None:
        self.config, self.ledger, self.board, self.player, self.clock = config, ledger, board, player, clock
        self.kiosk = kiosk or Kiosk(config, player, clock)
        self.alarms = alarms
        self.changed = changed  # the unit's state changed: report it
        self.phase = Phase.IDLE
        self.session: VideoSession | None = None
        self.kits: KitSession | None = None
        self.offer_until: float | None = None  # out of stock: a press before this plays the video anyway
        self.door_open = False
        self.self_test_ok = True
        self.locked = ledger.get_meta("locked") == "1"
        self.ready = False
        self.out_of_service: str | None = None  # why nothing may be vended (the ledger cannot write)
        self._tokens = 0

    # ------------------------------------------------------------ mode

    @property
    def mode(self) -> Mode:
        if not self.ready:
            return "starting"
        if self.out_of_service is not None:
            return "service"
        if self.locked:
            return "locked"
        if self.door_open or not self.self_test_ok:
            return "service"
        return "vending"

    def set_locked(self, locked: bool) -> None:
        self.locked = locked
        self.ledger.set_meta("locked", "1" if locked else "0")
        if locked:
            self.alarms.raise_("locked", "unit locked by a remote command", "info")
            self._abandon("locked")
        else:
            self.alarms.clear("locked", "unit unlocked")
        self.changed()

    # ------------------------------------------------------------ inputs

    def _lang(self, language: str | None) -> str:
        langs = self.config.kiosk.languages
        return language if language in langs else self.config.videos.default_language

    def on_press(self, language: str) -> None:
        lang = self._lang(language)
        if self.mode != "vending" or self.kiosk.out_of_service:
            LOG.info("press_ignored", language=lang, mode=self.mode, held=sorted(self.kiosk.out_of_service))
            self.kiosk.show("out_of_service", lang, reason=self._service_reason())
            return
        if self.phase != Phase.IDLE:
            LOG.info("press_ignored", language=lang, phase=str(self.phase))
            return
        now = self.clock.monotonic()
        kits = self.kits
        if kits is not None and now <= kits.until and kits.kits < self.config.policies.kits_per_session:
            LOG.info("press_another_kit", language=kits.language, kits=kits.kits)
            self._person_vend(kits.language, "extra")
            return
        self.kits = None
        if self.offer_until is not None and now <= self.offer_until:
            self.offer_until = None
            self._start_video(lang, kit=False)
            return
        self.offer_until = None
        if self._vendable() is None:
            self._no_kit_before_video(lang)
            return
        self._start_video(lang)

    def on_emergency(self, language: str | None) -> None:
        """A kit at once, no video (the configured exception to the video gate), with a how-to loop."""
        lang = self._lang(language)
        if not self.config.policies.emergency:
            self.on_press(lang)
            return
        if self.mode != "vending" or self.kiosk.out_of_service:
            self.kiosk.show("out_of_service", lang, reason=self._service_reason())
            return
        if self.phase == Phase.DISPENSING:
            return
        if self.phase == Phase.VIDEO:
            self._abandon("emergency")
        self.kits = None
        LOG.warning("emergency_press", language=lang)
        self.kiosk.show("emergency", lang)
        self.vend(lang, "emergency")

    def _service_reason(self) -> str:
        if self.out_of_service is not None:
            return "ledger_down"
        held = list(self.kiosk.out_of_service.values())
        if held and self.mode == "vending":
            return held[0]  # e.g. the board does not answer, the ledger is down
        if self.locked:
            return "locked"
        if self.door_open:
            return "door_open"
        if not self.ready:
            return "board_down"
        return "service" if not self.self_test_ok else "service"

    def _vendable(self) -> object | None:
        return stock.choose_column(self.ledger.columns(), self.config.vend_product, self.clock.now().date())

    def stop_vending(self, why: str) -> None:
        """The ledger cannot write: drop whatever press is under way (its video stops; no kit can be
        given that cannot be recorded), show out of service, refuse presses until resume_vending()."""
        self.out_of_service = why
        if self.session is not None:
            self.session = None
            self.player.stop_playback()
        self.phase = Phase.IDLE
        self.kits = None
        self.kiosk.set_out_of_service("ledger", "ledger_down")
        self.changed()

    def resume_vending(self) -> None:
        self.out_of_service = None
        self.kiosk.set_out_of_service("ledger", None)
        self.changed()

    def on_void_press(self, language: str, why: str) -> None:
        """A press too old to belong to anyone here: no video, no kit; the screen says so."""
        lang = self._lang(language)
        LOG.warning("press_void", language=lang, why=why)
        if self.phase == Phase.IDLE:
            self.kiosk.show("press_void", lang)

    def on_player(self, event: PlayerEvent) -> None:
        s = self.session
        if s is None or event.token != s.token:
            LOG.debug("player_event_stale", token=event.token)
            return
        if isinstance(event, VideoStarted):
            self.kiosk.hide()
        elif isinstance(event, VideoProgress):
            if event.duration_s:
                s.length_s = event.duration_s
        elif isinstance(event, VideoCompleted):
            self._completed(s, event)
        elif isinstance(event, VideoFailed):
            self._failed(s, event)

    def on_door(self, open_: bool) -> None:
        if open_ == self.door_open:
            return
        self.door_open = open_
        self.ledger.record(DoorEvent, open=open_)
        LOG.info("door", open=open_)
        if open_:
            self._abandon("door_open")
        elif self.config.policies.self_test_on_close:
            self.self_test()
        else:
            self.self_test_ok = True
        self.changed()

    def next_deadline(self) -> float | None:
        """clock.monotonic() at which tick() has something to do (a video that must have ended), or None."""
        s = self.session
        if s is None or self.phase != Phase.VIDEO:
            return None
        return s.started + s.length_s + self.config.videos.grace_s

    def tick(self) -> None:
        now = self.clock.monotonic()
        if self.kits is not None and now > self.kits.until:
            LOG.info("kit_session_closed", kits=self.kits.kits)
            self.kits = None
        self._sync_screen()
        self.kiosk.tick()
        s = self.session
        deadline = None if s is None else s.started + s.length_s + self.config.videos.grace_s
        if deadline is not None and self.phase == Phase.VIDEO and self.clock.monotonic() > deadline:
            self._abandon("timeout")

    def _sync_screen(self) -> None:
        """The screen follows the unit's mode: out of service while it cannot vend, idle when it can."""
        if self.mode != "vending":
            reason = self._service_reason()
            if self.kiosk.screen != "out_of_service" or self.kiosk.current.params.get("reason") != reason:
                self.kiosk.show("out_of_service", None, reason=reason)
        elif self.kiosk.screen == "out_of_service" and not self.kiosk.out_of_service:
            self.kiosk.show("idle")

    # ------------------------------------------------------------ video

    def _start_video(self, lang: str, kit: bool = True) -> None:
        self._tokens += 1
        self.session = VideoSession(
            self._tokens, lang, self.clock.monotonic(), self.config.videos.expected_length_s, kit
        )
        self.phase = Phase.VIDEO
        self.kiosk.show("video", lang)  # the press's feedback at once; hidden at the clip's first frame
        self.ledger.record(VideoEvent, phase="started", language=lang)
        self.changed()
        self.player.play(self.config.videos.files[lang], self._tokens, self._captions(lang))

    def _captions(self, lang: str) -> Path | None:
        if not self.config.kiosk.captions:
            return None
        path = self.config.videos.captions.get(lang) or self.config.videos.files[lang].with_suffix(".srt")
        return path if path.is_file() else None

    def _completed(self, s: VideoSession, event: VideoCompleted) -> None:
        self.session = None
        self.ledger.record(VideoEvent, phase="completed", language=s.language, position_s=event.position_s)
        self.alarms.clear("video_player", "the player completed a clip")
        if not s.kit:  # watched while out of stock: thank them, say where to go
            self.phase = Phase.IDLE
            self.kiosk.show("out_of_stock", s.language, hold_s=30.0)
            self.changed()
            return
        self.kits = KitSession(s.language, 0, self.clock.monotonic())
        self._person_vend(s.language, "video")

    def _failed(self, s: VideoSession, event: VideoFailed) -> None:
        self.session = None
        detail = f"{event.reason}: {event.detail}" if event.detail else event.reason
        self.ledger.record(
            VideoEvent, phase="failed", language=s.language, position_s=event.position_s, detail=detail[:500]
        )
        fallback = self.config.videos.fallback
        self.alarms.raise_(
            "video_player", f"video player failed ({event.reason}); fallback {fallback}", "critical"
        )
        LOG.error("video_failed", reason=event.reason, fallback=fallback)
        if fallback == "dispense" and s.kit:
            self.kiosk.show("dispensing", s.language)
            if self.vend(s.language, "fallback") is not None:
                until = self.clock.monotonic() + 15.0
                self.kiosk.show("take_kit", s.language, number=1, until=until, another=False)
        else:
            self.phase = Phase.IDLE
            override = self.config.policies.text("video_broken", s.language)
            self.kiosk.show("video_broken", s.language, override=override)
            self.changed()

    def _abandon(self, why: str) -> None:
        s = self.session
        if s is None:
            return
        self.session = None
        self.phase = Phase.IDLE
        self.player.stop_playback()
        position = self.clock.monotonic() - s.started
        self.ledger.record(
            VideoEvent, phase="abandoned", language=s.language, position_s=round(position, 1), detail=why
        )
        LOG.info("video_abandoned", language=s.language, why=why)
        if why != "emergency":
            self.kiosk.show("idle")
        self.changed()

    # ------------------------------------------------------------ dispensing

    def _person_vend(self, lang: str, via: str) -> None:
        """A kit for the person at the machine (after the video, or another one in their window)."""
        self.kiosk.show("dispensing", lang)
        event = self.vend(lang, via)
        kits = self.kits
        if event is None or kits is None:
            self.kits = None if event is None else kits
            return
        kits.kits += 1
        window = self.config.policies.another_kit_window_s
        more = window > 0 and kits.kits < self.config.policies.kits_per_session
        kits.until = self.clock.monotonic() + (window if more else 0.0)
        until = kits.until if more else self.clock.monotonic() + 15.0
        override = self.config.policies.text("thank_you", lang)
        self.kiosk.show("take_kit", lang, number=kits.kits, until=until, override=override)
        if not more:
            self.kits = None

    def vend(self, lang: str | None, via: str) -> DispenseEvent | None:
        """Try up to max_attempts columns, each with a new command id; record exactly what happened."""
        self.phase = Phase.DISPENSING
        self.changed()
        try:
            return self._vend(lang, via)
        finally:
            self.phase = Phase.IDLE
            self.changed()

    def _vend(self, lang: str | None, via: str) -> DispenseEvent | None:
        product = self.config.vend_product
        self.check_expiry()
        attempts: list[VendAttempt] = []
        tried: set[int] = set()
        for _ in range(self.config.policies.max_attempts):
            row = stock.choose_column(self.ledger.columns(), product, self.clock.now().date(), tried)
            if row is None:
                break
            tried.add(row.column)
            cid = self.ledger.allocate_command(row.column, lang, via)
            outcome = self._dispense(cid, row.column)
            attempts.append(VendAttempt(column=row.column, command_id=cid, outcome=outcome or "unknown"))
            if outcome == "dropped":
                return self.record_drop(cid, row.column, lang, via)
            if outcome is None:
                self.alarms.raise_(
                    "board_unreachable", f"dispense {cid} outcome unknown; will reconcile", "critical"
                )
                break  # never try another column while a kit may have dropped
            self._attempt_failed(cid, row.column, outcome)
            if outcome == "door_open":
                break
        if not attempts:
            self._out_of_stock(product, lang)
        else:
            self._vend_failed(attempts, lang)
        return None

    def _dispense(self, cid: int, column: int) -> str | None:
        try:
            return self.board.dispense(cid, column).outcome
        except BoardError as exc:
            LOG.error("dispense_error", command_id=cid, column=column, error=str(exc))
        for _ in range(3):
            try:
                outcome = self.board.query_result(cid).outcome
            except BoardError:
                continue
            return None if outcome == "unknown_command" else outcome
        return None

    def record_drop(self, cid: int, column: int, lang: str | None, via: str) -> DispenseEvent:
        row = self.ledger.column(column)
        product = self.config.products[row.product]
        if row.stock == 0:
            self.alarms.raise_(
                f"stock_discrepancy_{column}", f"column {column} dropped a kit the ledger did not count"
            )
        change = ColumnChange(column, stock_delta=-1 if row.stock > 0 else 0)
        front = self.ledger.segments(column)[:1]
        exposure = (
            LotExposure(
                seconds_outside_label=round(front[0].seconds_outside_label, 1),
                seconds_in_excursion=round(front[0].seconds_in_excursion, 1),
                mkt_c=round(front[0].mkt_c, 2) if front[0].mkt_c is not None else None,
            )
            if front
            else None
        )
        event = self.ledger.record(
            DispenseEvent,
            changes=(change,),
            settle=(cid, "dropped"),
            column=column,
            product=row.product,
            doses=product.doses,
            lot=row.lot,
            expiry=row.expiry,
            command_id=cid,
            language=lang,
            via=via,
            exposure=exposure,
        )
        LOG.info(
            "dispensed", command_id=cid, column=column, via=via, stock_after=event.stock_after, seq=event.seq
        )
        return event

    def _attempt_failed(self, cid: int, column: int, outcome: str) -> None:
        self.ledger.settle(cid, outcome)
        LOG.warning("dispense_failed", command_id=cid, column=column, outcome=outcome)
        if outcome in COLUMN_FAULTS or outcome.startswith("unknown"):
            self.ledger.set_fault(column, outcome)
            self.alarms.raise_(f"column_fault_{column}", f"column {column}: {outcome}", "warning", column)

    def _vend_failed(self, attempts: list[VendAttempt], lang: str | None) -> None:
        reason = (
            "door_open"
            if attempts[-1].outcome == "door_open"
            else ("board_unreachable" if attempts[-1].outcome == "unknown" else "all_columns_failed")
        )
        self.ledger.record(VendFailedEvent, reason=reason, attempts=attempts)
        self.alarms.raise_("vend_failed", f"a vend failed: {reason}", "critical")
        self.kits = None
        self.kiosk.show("vend_failed", lang, override=self.config.policies.text("vend_failed", lang))

    def _out_of_stock(self, product: str, lang: str | None) -> None:
        rows = self.ledger.columns()
        if any(
            r.stock > 0 and r.product == product and stock.blocked(r, self.clock.now().date()) is None
            for r in rows
        ):
            self.ledger.record(VendFailedEvent, reason="all_columns_faulted", attempts=[])
            self.alarms.raise_("vend_failed", "a vend failed: every column with stock is faulted", "critical")
        else:
            self.ledger.record(OutOfStockEvent, product=product, language=lang)
            self.alarms.raise_("out_of_stock", f"no vendable {product} left", "critical")
            LOG.warning("out_of_stock", product=product)
        self.kits = None
        # no kit can come: where else to get naloxone now, and the offer to watch the training anyway
        self.offer_until = self.clock.monotonic() + self.config.policies.out_of_stock_offer_s
        self.kiosk.show(
            "out_of_stock",
            lang,
            hold_s=self.config.policies.out_of_stock_offer_s,
            override=self.config.policies.text("out_of_stock", lang),
        )

    def _no_kit_before_video(self, lang: str) -> None:
        """Out of stock (or every column faulted) at the press: say so before any video."""
        self._out_of_stock(self.config.vend_product, lang)

    # ------------------------------------------------------------ checks

    def check_expiry(self) -> None:
        """A column whose front kit is expired or of a held lot holds (never vends) with an alarm until
        a technician takes the kits out (a restock with a lower count) or the hold is released."""
        today = self.clock.now().date()
        for row in self.ledger.columns():
            code = f"lot_expired_{row.column}"
            if row.stock > 0 and stock.is_expired(row, today):
                self.alarms.raise_(
                    code,
                    f"column {row.column} lot {row.lot} expired {row.expiry}; not vended, "
                    "take the expired kits out",
                    "warning",
                    row.column,
                )
            else:
                self.alarms.clear(code, "no expired stock in the column")
            held = f"lot_held_{row.column}"
            if row.held:
                msg = f"column {row.column}: {row.held}; not vended"
                self.alarms.raise_(held, msg, "warning", row.column)
            else:
                self.alarms.clear(held, "the column's front lot is not held")

    def self_test(self) -> bool:
        """Door closed: the board must answer and report the door closed. Passing clears column faults
        (the technician had the door open to fix them)."""
        try:
            self.board.ping()
            status = self.board.status()
            ok, why = not status.door_open, "door still open"
        except BoardError as exc:
            ok, why = False, str(exc)
        self.self_test_ok = ok
        if not ok:
            self.alarms.raise_("self_test_failed", f"self-test after door close failed: {why}", "critical")
            return False
        self.alarms.clear("self_test_failed", "self-test passed")
        for row in self.ledger.columns():
            if row.fault is not None:
                self.ledger.set_fault(row.column, None)
                self.alarms.clear(f"column_fault_{row.column}", "cleared after service")
        self.alarms.clear("vend_failed", "cleared after service")
        for alarm in self.ledger.active_alarms():
            if alarm.code.startswith("board_fault_"):
                self.alarms.clear(alarm.code, "cleared after service")
        LOG.info("self_test_passed")
        return True


