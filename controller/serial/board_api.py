"""The controller's view of the dispenser board: one interface, a serial implementation (board_link.py)
and whatever fakes the tests need. Typed values only; no raw frames or dicts leave here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from controller.errors import ControllerError
from firmware_py import codec

Outcome = str  # one of codec.OUTCOME_NAMES values: "dropped", "jammed", ...


class BoardError(ControllerError):
    """The board did not answer as expected (timeout, version mismatch, link down)."""


class BoardTimeout(BoardError):
    pass


@dataclass(frozen=True)
class BoardInfo:
    protocol: int  # the version this session negotiated (1 or 2)
    firmware: str
    board_id: str
    columns: int
    boot_count: int
    model: str = ""  # protocol 2 boards name their model; "" from a protocol 1 board


@dataclass(frozen=True)
class BoardStatus:
    door_open: bool
    temperature_c: float
    faults: frozenset[str]
    motors: tuple[int, ...]  # per column: 0 idle, 1 running, 2 fault
    sensors: tuple[int, ...]  # per column: 0 clear, 1 blocked, 2 fault


@dataclass(frozen=True)
class DispenseOutcome:
    command_id: int
    column: int
    outcome: Outcome

    @property
    def dropped(self) -> bool:
        return self.outcome == "dropped"


@dataclass(frozen=True)
class MotorTestOutcome:
    column: int
    outcome: Outcome  # "ok", "jammed", "motor_fault", "door_open", "bad_column"
    current_ma: int


@dataclass(frozen=True)
class ButtonPressed:
    """A button press. `index` is the board's button number (protocol v1: the language code's index,
    mapped in controller.kiosk.buttons); `age_s` is how long ago the board saw it end, as the board sent
    it (None: not reported; protocol 2 boards report it, saturating at 65.535 s); `hold_ms` how long it
    was held (None: not reported); `long` a long press known as such (the kiosk also counts a hold of
    kiosk.long_press_ms or more as long)."""

    language: str  # "en" | "es" on protocol v1
    index: int | None = None
    age_s: float | None = None
    long: bool = False
    hold_ms: int | None = None


LightPattern = str  # "off" | "lit" (ready) | "blinking" (busy) | "host_silent" (shown by the board only)


@dataclass(frozen=True)
class LightState:
    requested: LightPattern  # what the controller last asked for
    shown: LightPattern  # what the light shows now ("host_silent" when the board stopped hearing us)


@dataclass(frozen=True)
class DoorChanged:
    open: bool


@dataclass(frozen=True)
class BoardFault:
    code: str
    column: int
    detail: str


@dataclass(frozen=True)
class BoardRebooted:
    boot_count: int
    reason: str


BoardEvent = ButtonPressed | DoorChanged | BoardFault | BoardRebooted


@dataclass
class LinkCounters:
    frames_sent: int = 0
    frames_received: int = 0
    crc_errors: int = 0
    retransmissions: int = 0
    timeouts: int = 0
    resyncs: int = 0
    duplicates: int = 0
    naks_sent: int = 0
    reopens: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        d = {k: v for k, v in self.__dict__.items() if isinstance(v, int)}
        d.update(self.extra)
        return d


class Board(Protocol):
    """What the vend logic, diagnostics and the daemon need from a dispenser board."""

    counters: LinkCounters

    def start(self, on_event: Callable[[BoardEvent], None]) -> BoardInfo: ...
    def close(self) -> None: ...
    def ping(self, timeout: float = 1.0) -> float: ...  # round trip in seconds
    def status(self) -> BoardStatus: ...
    def dispense(self, command_id: int, column: int) -> DispenseOutcome: ...
    def query_result(self, command_id: int) -> DispenseOutcome: ...
    def motor_test(self, column: int) -> MotorTestOutcome: ...
    def light(self, pattern: LightPattern) -> LightState: ...  # protocol 2 boards; "lit", "blinking", "off"


def outcome_name(code: int) -> Outcome:
    return codec.OUTCOME_NAMES.get(code, f"unknown_{code}")
