"""Scripted stand-ins for the dispenser board and the video player, for unit tests with an injected clock.

FakeBoard keeps the physical truth (kits that really dropped, per column and per command id) and a
command journal like the firmware's: a repeated command id returns its first outcome and never drops again.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller.clock import Clock
from controller.serial import board_api as api
from controller.vend.video import OnPlayerEvent, VideoCompleted, VideoFailed, VideoProgress, VideoStarted


class SimulatedCrash(BaseException):  # noqa: N818 - a test's stand-in for kill -9, not an error
    """Raised by FakeBoard to stop the daemon dead at a chosen moment (the test's kill -9)."""


class FakeBoard:
    def __init__(self, columns: int = 6, stock: int = 20, jam_p: float = 0.0, seed: int = 0) -> None:
        self.counters = api.LinkCounters()
        self.stock = {c: stock for c in range(1, columns + 1)}
        self.per_column = {c: 0 for c in range(1, columns + 1)}
        self.journal: dict[int, api.DispenseOutcome] = {}
        self.script: dict[int, deque[str]] = {}  # column -> outcomes to return next
        self.jam_p = jam_p
        self.rng = random.Random(seed)
        self.door_open = False
        self.temperature_c = 22.0
        self.boots = 1
        self.presses = 0
        self.queued: list[api.BoardEvent] = []  # presses made while the daemon was down
        self.link_down = False
        self.closed = False
        self.light_pattern = "off"  # what the status light shows (board.light)
        self._on_event: Callable[[api.BoardEvent], None] = lambda e: None

    # ------------------------------------------------------------ Board interface

    def start(self, on_event: Callable[[api.BoardEvent], None]) -> api.BoardInfo:
        self.closed = False  # a restarted daemon opens the port again
        self._check_link()
        self._on_event = on_event
        while self.queued:  # like the real board: events held while nobody listened go out on HELLO
            on_event(self.queued.pop(0))
        return api.BoardInfo(
            protocol=1, firmware="fake-1.0", board_id="fake", columns=len(self.stock), boot_count=self.boots
        )

    def close(self) -> None:
        self.closed = True

    def ping(self, timeout: float = 1.0) -> float:
        self._check_link()
        return 0.001

    def status(self) -> api.BoardStatus:
        self._check_link()
        n = len(self.stock)
        return api.BoardStatus(self.door_open, self.temperature_c, frozenset(), (0,) * n, (0,) * n)

    def dispense(self, command_id: int, column: int) -> api.DispenseOutcome:
        self._check_link()
        if command_id in self.journal:
            return self.journal[command_id]
        result = api.DispenseOutcome(command_id, column, self._physical(column))
        self.journal[command_id] = result
        return result

    def query_result(self, command_id: int) -> api.DispenseOutcome:
        self._check_link()
        return self.journal.get(command_id, api.DispenseOutcome(command_id, 0, "unknown_command"))

    def motor_test(self, column: int) -> api.MotorTestOutcome:
        self._check_link()
        return api.MotorTestOutcome(column, "ok" if column in self.stock else "bad_column", 120)

    def light(self, pattern: api.LightPattern) -> api.LightState:
        self._check_link()
        if pattern not in ("off", "lit", "blinking"):
            raise api.BoardError(f"light: expected off, lit or blinking, got {pattern!r}")
        self.light_pattern = pattern
        return api.LightState(pattern, pattern)

    # ------------------------------------------------------------ the physical machine

    def _check_link(self) -> None:
        if self.link_down:
            self.counters.timeouts += 1
            raise api.BoardTimeout("expected a reply from the board, found none (fake link down)")
        if self.closed:
            raise api.BoardError("expected an open board, found it closed")

    def _physical(self, column: int) -> str:
        if column not in self.stock:
            return "bad_column"
        if self.door_open:
            return "door_open"
        scripted = self.script.get(column)
        outcome = (
            scripted.popleft() if scripted else ("jammed" if self.rng.random() < self.jam_p else "dropped")
        )
        if outcome == "dropped" and self.stock[column] == 0:
            outcome = "empty"
        if outcome == "dropped":
            self.stock[column] -= 1
            self.per_column[column] += 1
        return outcome

    # ------------------------------------------------------------ what a test does to the machine

    def press(
        self, language: str = "en", index: int | None = None, age_s: float | None = None, long: bool = False
    ) -> None:
        self.presses += 1
        self._on_event(api.ButtonPressed(language, index=index, age_s=age_s, long=long))

    def press_while_down(self, language: str = "en") -> None:
        """A press while no daemon listens: the board keeps it and sends it when the link comes up."""
        self.presses += 1
        self.queued.append(api.ButtonPressed(language))

    def set_door(self, open_: bool) -> None:
        self.door_open = open_
        self._on_event(api.DoorChanged(open_))

    def reboot(self) -> None:
        self.boots += 1
        self._on_event(api.BoardRebooted(self.boots, "test"))

    def stats(self) -> dict[str, Any]:
        per_command = {str(c): 1 for c, r in self.journal.items() if r.dropped}
        return {
            "dropped": sum(self.per_column.values()),
            "per_column": {str(c): n for c, n in self.per_column.items()},
            "per_command": per_command,
            "double_drops": [],
            "stock": {str(c): n for c, n in self.stock.items()},
            "presses": self.presses,
            "boots": self.boots,
        }


class CrashingBoard:
    """Wraps any Board; on request the next dispense stops the daemon dead (SimulatedCrash) either before
    the command reaches the board or after the board acted but before the daemon saw the outcome."""

    def __init__(self, inner: api.Board) -> None:
        self.inner = inner
        self.crash_before = False
        self.crash_after = False

    def dispense(self, command_id: int, column: int) -> api.DispenseOutcome:
        if self.crash_before:
            self.crash_before = False
            raise SimulatedCrash(f"before dispense {command_id}")
        result = self.inner.dispense(command_id, column)
        if self.crash_after:
            self.crash_after = False
            raise SimulatedCrash(f"after dispense {command_id}: {result.outcome}")
        return result

    def __getattr__(self, name: str) -> object:  # everything but dispense: the inner board's own
        return getattr(self.inner, name)


class FakePlayer:
    """A player whose outcome the test decides. `auto` answers every play at once:
    "complete", or a failure reason ("crash", "hang", "missing_file", "unavailable")."""

    def __init__(self, clock: Clock, duration_s: float = 3.0, auto: str | None = None) -> None:
        self.clock = clock
        self.duration_s = duration_s
        self.auto = auto
        self.plays: list[tuple[Path, int]] = []
        self.texts: list[str] = []
        self.subtitles: list[Path | None] = []
        self.overlays: list[Path | None] = []  # None: overlay removed
        self.token: int | None = None
        self.started_at: float | None = None
        self.closed = False
        self._on_event: OnPlayerEvent = lambda e: None

    def start(self, on_event: OnPlayerEvent) -> None:
        self._on_event = on_event

    def play(self, path: Path, token: int, subtitles: Path | None = None) -> None:
        self.plays.append((Path(path), token))
        self.subtitles.append(subtitles)
        self.token, self.started_at = token, self.clock.monotonic()
        if self.auto == "complete":
            self.complete()
        elif self.auto is not None:
            self.fail(self.auto)
        else:
            self._on_event(VideoProgress(token, 0.0, self.duration_s))
            self._on_event(VideoStarted(token))

    def complete(self) -> None:
        """The clip played to its end (the test advanced the clock or does not care)."""
        token = self._take()
        self._on_event(VideoCompleted(token, self.duration_s, self.duration_s))

    def fail(self, reason: str) -> None:
        token = self._take()
        self._on_event(VideoFailed(token, reason, 0.0, detail=f"fake player: {reason}"))

    def _take(self) -> int:
        if self.token is None:
            raise AssertionError("expected a clip playing in the fake player, found none")
        token, self.token = self.token, None
        return token

    def stop_playback(self) -> None:
        self.token = None

    def show_text(self, text: str, seconds: float = 10.0) -> None:
        self.texts.append(text)

    def overlay(self, path: Path, width: int, height: int) -> None:
        self.overlays.append(path)

    def clear_overlay(self) -> None:
        self.overlays.append(None)

    def close(self) -> None:
        self.closed = True
