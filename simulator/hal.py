"""Simulated dispenser hardware: the physical world (coils, kits, beam, door, temperature, buttons)
and the HAL pins the real firmware reads.

Physical truth is decided where the firmware looks: a coil advances only when the firmware reads
that column's drop-sensor pin, and a kit falls (and is counted as ground truth) inside that read,
so the drop, the sensor edge and the firmware's journal write of "dropped" happen in one main-loop
step. A simulated reboot is only ever applied between steps, so the journal and the physical
truth always agree (except for the deliberate `miss_drop` fault: a kit falls unseen).
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from firmware_py.hal import CURRENT_FULL_SCALE_MA, TICKS_PERIOD
from firmware_py.temp import raw_from_centi

RUN_MA = 300
JAM_MA = 1800
FAULT_NAMES = ("jam", "miss_drop", "stuck_sensor", "dead_motor", "noise", "reboot_during_dispense", "slow")


def now_ms() -> float:
    return time.monotonic() * 1000.0


@dataclass
class Column:
    """One coil column: kits loaded, coil position within a revolution, this spin's faults."""

    stock: int
    motor_on: bool = False
    last_t: float = 0.0
    pos: float = 0.0  # ms of coil travel since the last kit left
    dropped_this_spin: bool = False
    jam_at: float | None = None
    dead: bool = False
    miss: bool = False
    stuck: bool = False


@dataclass
class Truth:
    """What really happened, for stats(): the ground truth tests compare against."""

    dropped: int = 0
    per_column: dict[int, int] = field(default_factory=dict)
    per_command: dict[int, int] = field(default_factory=dict)
    unattributed: int = 0
    presses: int = 0
    boots: int = 0
    injected: dict[str, int] = field(default_factory=dict)


class World:
    """The machine's physical state, shared by the firmware thread (pins) and the control API."""

    def __init__(self, columns: int, stock: int, spin_ms: float, seed: int = 0,
                 clock: Callable[[], float] = now_ms) -> None:
        self.clock = clock  # milliseconds; tests inject a scripted one
        self.spin_ms = float(spin_ms)
        self.columns = [Column(stock) for _ in range(columns)]
        self.lock = threading.RLock()
        self.rng = random.Random(seed)  # fault draws only, so status polling cannot shift them
        self._drift_rng = random.Random(seed + 1)
        self.faults: dict[str, tuple[float, int | None]] = {}
        self.door_open = False
        self.temp_c = 22.0  # room temperature, inside the 20-25 °C storage range
        self._drift = 0.0
        # per button: [presses waiting (hold ms each, None: one reading high), last value read, held until]
        self.buttons: list[list[Any]] = [[[], 0, None], [[], 0, None]]
        self.light = 0  # the status light's pin level, as the firmware last drove it
        self.light_changes = 0
        self.reboot_at: float | None = None
        self.truth = Truth()
        self.on_drop: Callable[[int], int | None] = lambda column: None  # -> command id or None

    # ------------------------------------------------------------ faults

    def set_fault(self, name: str, p: float, column: int | None = None) -> None:
        with self.lock:
            if p <= 0:
                self.faults.pop(name, None)
                if name == "stuck_sensor":
                    for col in self.columns:
                        col.stuck = False
            else:
                self.faults[name] = (p, column)

    def _roll(self, name: str, column: int) -> bool:
        p, only = self.faults.get(name, (0.0, None))
        if p <= 0 or (only is not None and only != column) or self.rng.random() >= p:
            return False
        self.truth.injected[name] = self.truth.injected.get(name, 0) + 1
        return True

    # ------------------------------------------------------------ coils

    def motor(self, column: int, on: bool) -> None:
        with self.lock:
            col = self.columns[column - 1]
            if on and not col.motor_on:
                self._start_spin(col, column)
            elif not on and col.motor_on:
                col.motor_on = False
                if self._roll("stuck_sensor", column):
                    col.stuck = True

    def _start_spin(self, col: Column, column: int) -> None:
        col.motor_on = True
        col.last_t = self.clock()
        col.dropped_this_spin = False
        col.dead = self._roll("dead_motor", column)
        col.jam_at = None
        if not col.dead and self._roll("jam", column):
            # a wedged kit stops the coil early in its turn, so a motor test (a quarter turn) meets it too
            col.jam_at = col.pos + self.rng.uniform(0.05, 0.2) * self.spin_ms
        col.miss = self._roll("miss_drop", column)
        if self.reboot_at is None and self._roll("reboot_during_dispense", column):
            self.reboot_at = col.last_t + self.rng.uniform(0.0, 1.2 * self.spin_ms)

    def _travel(self, col: Column, t: float) -> float:
        if not col.motor_on or col.dead or col.dropped_this_spin:
            return col.pos
        pos = col.pos + max(0.0, t - col.last_t)
        return pos if col.jam_at is None else min(pos, col.jam_at)

    def current_ma(self, column: int) -> int:
        with self.lock:
            col = self.columns[column - 1]
            if not col.motor_on or col.dead:
                return 0
            if col.jam_at is not None and self._travel(col, self.clock()) >= col.jam_at:
                return JAM_MA
            return RUN_MA

    def read_drop(self, column: int) -> int:
        """The beam pin: advancing the coil here is what makes a kit fall (see module docstring)."""
        with self.lock:
            col = self.columns[column - 1]
            t = self.clock()
            col.pos = self._travel(col, t)
            col.last_t = t
            seen = False
            if col.motor_on and not col.dropped_this_spin and col.pos >= self.spin_ms:
                seen = self._kit_falls(col, column)
            return 1 if (seen or col.stuck) else 0

    def _kit_falls(self, col: Column, column: int) -> bool:
        col.pos = 0.0
        col.dropped_this_spin = True
        if col.stock <= 0:
            return False  # the coil turned a full revolution over an empty column
        col.stock -= 1
        truth = self.truth
        truth.dropped += 1
        truth.per_column[column] = truth.per_column.get(column, 0) + 1
        cid = self.on_drop(column)
        if cid is None:
            truth.unattributed += 1
        else:
            truth.per_command[cid] = truth.per_command.get(cid, 0) + 1
        return not col.miss

    def reset_outputs(self) -> None:
        """Power cycle: every motor stops (no fault rolls), a pending reboot is consumed."""
        with self.lock:
            for col in self.columns:
                col.motor_on = False
            self.reboot_at = None

    def reboot_due(self) -> bool:
        with self.lock:
            return self.reboot_at is not None and self.clock() >= self.reboot_at

    # ------------------------------------------------------------ operator side

    def set_door(self, is_open: bool) -> None:
        with self.lock:
            self.door_open = is_open
            if is_open:
                for col in self.columns:
                    col.stuck = False  # the technician clears whatever blocked the beam

    def set_stock(self, column: int, count: int) -> None:
        with self.lock:
            self.columns[column - 1].stock = count

    def press(self, language: int, hold_ms: float | None = None) -> None:
        """A press of button `language`: high for one reading, or for `hold_ms` of the world's clock."""
        if hold_ms is not None and not 0 <= hold_ms <= 120_000:
            raise ValueError(f"press: expected hold_ms in 0..120000, got {hold_ms!r}")
        with self.lock:
            self.buttons[language][0].append(hold_ms)
            self.truth.presses += 1

    def read_button(self, language: int) -> int:
        with self.lock:
            state = self.buttons[language]
            if state[1] == 1:
                if state[2] is None or self.clock() >= state[2]:
                    state[1], state[2] = 0, None
            elif state[0]:
                hold = state[0].pop(0)
                state[1] = 1
                state[2] = None if hold is None else self.clock() + hold
            return int(state[1])

    def temperature_centi(self) -> int:
        with self.lock:
            self._drift = max(-0.3, min(0.3, self._drift + self._drift_rng.gauss(0.0, 0.01)))
            return round((self.temp_c + self._drift) * 100)


# ---------------------------------------------------------------- HAL pins over the world


class MotorPin:
    def __init__(self, world: World, column: int) -> None:
        self.world, self.column, self._value = world, column, 0

    def value(self, v: int | None = None) -> int | None:
        if v is None:
            return self._value
        self._value = 1 if v else 0
        self.world.motor(self.column, bool(v))
        return None


class InputPin:
    """An input pin of the simulated board: its level is whatever the world says now."""

    def __init__(self, level: Callable[[], int]) -> None:
        self.value = level


class Adc:
    """An ADC channel of the simulated board: its 16-bit reading is whatever the world says now."""

    def __init__(self, reading: Callable[[], int]) -> None:
        self.read_u16 = reading


def current_reading(world: World, column: int) -> Callable[[], int]:
    """The motor current sense of `column`, scaled as the firmware's ADC reads it."""
    return lambda: min(65535, world.current_ma(column) * 65535 // CURRENT_FULL_SCALE_MA + 1)


class LightPin:
    """The status light: the level the firmware drives, kept in the world for stats()."""

    def __init__(self, world: World) -> None:
        self.world = world

    def value(self, v: int | None = None) -> int | None:
        with self.world.lock:
            if v is None:
                return self.world.light
            level = 1 if v else 0
            if level != self.world.light:
                self.world.light_changes += 1
            self.world.light = level
        return None


class SimHal:
    """The HAL object of firmware_py/hal.py, built over a World, a UART and a key->bytes store."""

    board_model = "nalox-sim"

    def __init__(self, world: World, uart: object, nvs: object, board_id: str, reset_cause: str,
                 reset: Callable[[], None] = lambda: None) -> None:
        n = len(world.columns)
        self.uart = uart
        self.motor_pins = [MotorPin(world, c) for c in range(1, n + 1)]
        self.current_adcs = [Adc(current_reading(world, c)) for c in range(1, n + 1)]
        self.drop_pins = [InputPin(functools.partial(world.read_drop, c)) for c in range(1, n + 1)]
        self.empty_pins = None
        self.door_pin = InputPin(lambda: 1 if world.door_open else 0)
        self.temp_adc = Adc(lambda: raw_from_centi(world.temperature_centi()))
        self.button_pins = [InputPin(functools.partial(world.read_button, b)) for b in (0, 1)]
        self.light_pin = LightPin(world)
        self.reset = reset  # the firmware restarts itself (after an update): machine.reset() on a board
        self.nvs = nvs
        self.board_id = board_id
        self.reset_cause = reset_cause
        self._clock = world.clock

    def ticks_ms(self) -> int:
        return int(self._clock()) & (TICKS_PERIOD - 1)
