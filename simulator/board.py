"""Simulated dispenser board: the real firmware main loop on simulated hardware, in a thread.

    board = SimulatedBoard(columns=6, stock=20, spin_ms=300)
    board.attach(port)      # any pyserial-like end: memlink.serial_pair()[1], a PtyPort, ...
    board.start()           # runs firmware_py.board.Board(hal).step() until stop()
    board.press("en"); board.set_door(True); board.set_fault("jam", 0.1, column=2); board.reboot()
    board.stats()           # physical ground truth

The board never closes the port it was given; its owner does.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import serial
import structlog

from firmware_py import bootsel, codec
from firmware_py.board import Board
from firmware_py.nvs import FileStore, MemoryStore
from simulator.errors import SimulatorError
from simulator.hal import FAULT_NAMES, SimHal, World, now_ms
from simulator.noise import Noise
from simulator.slots import SlotError, load_board_class

log = structlog.get_logger("simulator")
# How long an idle board waits for input between main-loop steps: the slack of a retransmission, and the
# latency of a button press or door change on a port without cancel_read (a pty). 50 idle boards cost
# about a tenth of a core; a fleet in one process passes a longer idle_wait_s (its ports wake the board
# on every press, door and fault, so only the status light's timing gets coarser).
IDLE_WAIT_S = 0.02
# ... and while busy (a coil turning, a reply waiting for its ACK): the resolution of the simulated coil
# and of the firmware's retransmission timer. A fleet trades some of it for CPU (busy_wait_s).
BUSY_WAIT_S = 0.001
# After an operator action the board steps at its busy rate this long (as a real one scans its inputs
# continuously), so the firmware sees a tap's release at once: a tap read again only after a long idle
# wait would be a long press (an emergency kit) to the firmware.
HURRY_S = 0.05


class SimUart:
    """The board's UART over a pyserial-like port: board-side line noise and reply delay live here."""

    def __init__(self, seed: int) -> None:
        self.port: Any = None
        self.noise = Noise(0.0, seed)
        self.slow_ms = 0.0
        self._rx = bytearray()
        self._delayed: list[tuple[float, bytes]] = []
        self.bytes_in = 0
        self.bytes_out = 0
        self.write_errors = 0

    def read(self, n: int) -> bytes | None:
        data = bytes(self._rx[:n])
        del self._rx[:n]
        if len(data) < n and self.port is not None:
            waiting = self.port.in_waiting
            if waiting:
                data += self.port.read(min(waiting, n - len(data)))
        if not data:
            return None
        self.bytes_in += len(data)
        return self.noise.corrupt(data)

    def write(self, data: bytes) -> int:
        wire = self.noise.corrupt(data)
        if self.slow_ms > 0:
            self._delayed.append((time.monotonic() + self.slow_ms / 1000.0, wire))
        else:
            self._send(wire)
        return len(data)

    def _send(self, wire: bytes) -> None:
        try:
            if self.port is not None:
                self.port.write(wire)
                self.bytes_out += len(wire)
        except (serial.SerialException, OSError):
            self.write_errors += 1

    def pump(self) -> None:
        """Send delayed writes whose time has come."""
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            self._send(self._delayed.pop(0)[1])

    @property
    def delaying(self) -> bool:
        return bool(self._delayed)

    def wake(self) -> None:
        """End the current (or next) wait at once: the operator did something the firmware must see."""
        cancel = getattr(self.port, "cancel_read", None)
        if cancel is not None:
            try:
                cancel()
            except (serial.SerialException, OSError):
                pass

    def wait(self, timeout: float) -> None:
        """Block up to `timeout` seconds for the first incoming byte."""
        if self._rx:
            return
        if self.port is None:
            time.sleep(timeout)
            return
        self.port.timeout = timeout
        self._rx.extend(self.port.read(1))

    def counters(self) -> dict[str, int]:
        out = {"uart_bytes_in": self.bytes_in, "uart_bytes_out": self.bytes_out,
               "uart_write_errors": self.write_errors}
        out.update({"noise_" + k: v for k, v in self.noise.counts().items()})
        return out


def parse_faults(spec: str) -> list[tuple[str, float, int | None]]:
    """'jam=0.05,miss_drop=0.02@3,slow=200' -> [(name, value, column or None), ...]."""
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, sep, rest = item.partition("=")
        if not sep:
            raise SimulatorError(f"fault {item!r}: expected NAME=P[@COL]")
        value, _, col = rest.partition("@")
        try:
            out.append((name.strip(), float(value), int(col) if col else None))
        except ValueError:
            raise SimulatorError(f"fault {item!r}: expected a number P and an integer COL") from None
    return out


class SimulatedBoard:
    """Real firmware, simulated hardware; see the module docstring."""

    def __init__(self, columns: int = 6, stock: int = 20, faults: str = "", seed: int = 0,
                 spin_ms: float = 300, nvs_path: str | os.PathLike[str] | None = None,
                 board_id: str = "sim-0001", trial_ms: float = 30_000, nvs: Any = None,
                 idle_wait_s: float = IDLE_WAIT_S, busy_wait_s: float = BUSY_WAIT_S) -> None:
        if not 1 <= columns <= 32:
            raise SimulatorError(f"columns: expected 1..32, got {columns}")
        if stock < 0:
            raise SimulatorError(f"stock: expected a count >= 0, got {stock}")
        if not spin_ms > 0:
            raise SimulatorError(f"spin_ms: expected a time > 0, got {spin_ms}")
        if not 0 < busy_wait_s <= idle_wait_s <= 5:
            raise SimulatorError(f"waits: expected 0 < busy_wait_s <= idle_wait_s <= 5, got {busy_wait_s}, "
                                 f"{idle_wait_s}")
        self.idle_wait_s, self.busy_wait_s = idle_wait_s, busy_wait_s
        self._hurry_until = 0.0  # time.monotonic() until which the board steps at its busy rate
        self.world = World(columns, stock, spin_ms, seed)
        self.world.on_drop = self._attribute_drop
        self.uart = SimUart(seed)
        self.nvs: Any = nvs if nvs is not None else (
            FileStore(str(nvs_path), sync=True) if nvs_path else MemoryStore())
        self.board_id = board_id
        self.trial_ms = trial_ms  # a firmware on trial that has not said HELLO by then is rolled back
        self._trial_until: float | None = None
        self.slot = bootsel.FACTORY
        self.boot_reasons: list[str] = []
        self.spin_ms = spin_ms
        self.fw: Board | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._reboot = threading.Event()
        self._reset_reason = "sim_reboot"
        self.running = threading.Event()
        self._port_failing = False
        self._link_totals: dict[str, int] = {}
        for name, p, col in parse_faults(faults):
            self.set_fault(name, p, col)

    # ------------------------------------------------------------ lifecycle

    def attach(self, port: Any) -> None:
        self.uart.port = port

    def start(self) -> None:
        if self._thread is not None:
            raise SimulatorError("start: the board is already running")
        self._boot_safely("power_on")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"simboard-{self.board_id}", daemon=True)
        self._thread.start()
        self.running.set()

    def stop(self) -> None:
        self._stop.set()
        self.uart.wake()  # not a whole idle wait before the loop sees it
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.world.reset_outputs()
        self.running.clear()

    def __enter__(self) -> SimulatedBoard:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _firmware_options(self) -> dict[str, int]:
        spin = self.spin_ms
        return {
            "spin_timeout_ms": int(spin * 2 + 100),
            "settle_ms": max(2, int(spin // 10)),
            "test_ms": int(spin * 0.3) + 2,  # past the latest jam point (0.2 turn) despite 1 ms ticks
            "button_debounce_ms": 0,
            "door_debounce_ms": 0,
        }

    def _boot(self, reason: str) -> None:
        if self.fw is not None:  # link counters of earlier boots stay in stats()
            for name, value in self.fw.link.counters.items():
                self._link_totals[name] = self._link_totals.get(name, 0) + value
        self.world.reset_outputs()
        slot, why = bootsel.choose(self.nvs)  # the boot selector runs before any firmware
        if why in ("rolled_back", "slot_invalid"):
            reason = why
        self._trial_until = now_ms() + self.trial_ms if why == "trial" else None
        hal = SimHal(self.world, self.uart, self.nvs, self.board_id, reason, reset=self._soft_reset)
        board_class = Board if slot == bootsel.FACTORY else load_board_class(self.nvs, slot)
        self.slot = slot
        self.fw = board_class(hal, **self._firmware_options())
        self.boot_reasons.append(reason)
        with self.world.lock:
            self.world.truth.boots += 1
        log.info("board_boot", board=self.board_id, reason=reason, boot_count=self.fw.boot_count,
                 interrupted=self.fw.interrupted, slot=slot, firmware=getattr(self.fw, "firmware", None))

    def _soft_reset(self) -> None:
        self._reset_reason = "soft_reset"
        self._reboot.set()

    def _trial_expired(self) -> bool:
        """A firmware on trial that did not say HELLO in time: the board restarts, bootsel rolls back."""
        if self._trial_until is None or now_ms() < self._trial_until:
            return False
        self._trial_until = None
        return bootsel.in_trial(self.nvs)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._reboot.is_set() or self.world.reboot_due() or self._trial_expired():
                reason = self._reset_reason if self._reboot.is_set() else "watchdog"
                self._reset_reason = "sim_reboot"
                self._reboot.clear()
                self._boot_safely(reason)
            if not self._step():
                break

    def _boot_safely(self, reason: str) -> None:
        """Boot; firmware that does not load or dies while starting restarts the board (watchdog),
        and the boot selector takes the board back to the slot it came from."""
        for _ in range(4):
            try:
                self._boot(reason)
                return
            except (SlotError, Exception):
                log.exception("firmware_crash_at_boot", board=self.board_id)
                reason = "watchdog"
        raise SimulatorError("board: no firmware boots (factory firmware failing)")

    def _step(self) -> bool:
        fw = self.fw
        assert fw is not None
        try:
            fw.step()
            self.uart.pump()
            hurry = fw.busy() or self.uart.delaying or time.monotonic() < self._hurry_until
            self.uart.wait(self.busy_wait_s if hurry else self.idle_wait_s)
        except (serial.SerialException, OSError) as exc:
            if self._stop.is_set():
                return False
            if not self._port_failing:
                log.warning("board_port_error", board=self.board_id, error=str(exc))
            self._port_failing = True
            self._stop.wait(0.05)
            return True
        except Exception:  # a firmware bug: a real board's watchdog would restart it
            log.exception("firmware_crash", board=self.board_id)
            self._boot_safely("watchdog")
            return True
        self._port_failing = False
        return True

    def _attribute_drop(self, column: int) -> int | None:
        fw = self.fw
        job = fw.job if fw is not None else None
        cid = job.command_id if job is not None and job.kind == "dispense" else None
        log.info("kit_dropped", board=self.board_id, column=column, command_id=cid)
        return cid

    # ------------------------------------------------------------ the operator's hands

    def press(self, lang: str = "en", hold_ms: float | None = None) -> None:
        """Press the button of `lang`; `hold_ms`: hold it that long (None: one reading, a tap)."""
        if lang not in codec.LANGUAGES:
            raise SimulatorError(f"press: expected a language in {codec.LANGUAGES}, got {lang!r}")
        if hold_ms is not None and not 0 <= hold_ms <= 120_000:
            raise SimulatorError(f"press: expected hold_ms in 0..120000, got {hold_ms!r}")
        self.world.press(codec.LANGUAGES.index(lang), hold_ms)
        self._hurry((hold_ms or 0) / 1000.0)

    def set_door(self, open: bool) -> None:
        self.world.set_door(open)
        self._hurry()

    def _hurry(self, longer_s: float = 0.0) -> None:
        """Step at the busy rate for a while from now on (the operator did something), starting now."""
        self._hurry_until = time.monotonic() + HURRY_S + longer_s
        self.uart.wake()

    def set_temperature(self, c: float) -> None:
        with self.world.lock:
            self.world.temp_c = float(c)

    def set_stock(self, column: int, n: int) -> None:
        self._check_column(column)
        if n < 0:
            raise SimulatorError(f"stock: expected a count >= 0, got {n}")
        self.world.set_stock(column, n)

    def set_fault(self, name: str, p: float, column: int | None = None) -> None:
        if name not in FAULT_NAMES:
            raise SimulatorError(f"fault: expected one of {', '.join(FAULT_NAMES)}, got {name!r}")
        if column is not None:
            self._check_column(column)
        if name == "noise":
            if not 0 <= p <= 1:
                raise SimulatorError(f"fault noise: expected a rate 0..1, got {p}")
            self.uart.noise.rate = p
        elif name == "slow":
            self.uart.slow_ms = max(0.0, p)
        elif not 0 <= p <= 1:
            raise SimulatorError(f"fault {name}: expected a probability 0..1, got {p}")
        else:
            self.world.set_fault(name, p, column)
        self._hurry()
        log.info("fault_set", board=self.board_id, fault=name, value=p, column=column)

    def reboot(self) -> None:
        """Restart the firmware between two steps; non-volatile storage is kept."""
        if self._thread is None:
            self._boot_safely("sim_reboot")
        else:
            self._reboot.set()
            self._hurry()

    def _check_column(self, column: int) -> None:
        if not 1 <= column <= len(self.world.columns):
            raise SimulatorError(f"column: expected 1..{len(self.world.columns)}, got {column}")

    # ------------------------------------------------------------ ground truth

    def stats(self) -> dict[str, Any]:
        world = self.world
        with world.lock:
            truth = world.truth
            cols = range(1, len(world.columns) + 1)
            return {
                "dropped": truth.dropped,
                "per_column": {str(c): truth.per_column.get(c, 0) for c in cols},
                "per_command": {str(k): v for k, v in sorted(truth.per_command.items())},
                "double_drops": sorted(k for k, v in truth.per_command.items() if v > 1),
                "unattributed": truth.unattributed,
                "stock": {str(c): world.columns[c - 1].stock for c in cols},
                "presses": truth.presses,
                "boots": truth.boots,
                "faults": dict(truth.injected),
                "fault_settings": {k: v[0] for k, v in world.faults.items()} | self._line_faults(),
                "door_open": world.door_open,
                "light": world.light,
                "firmware": getattr(self.fw, "firmware", None),
                "slot": self.slot,
                "link": self._link_counters(),
            }

    def _line_faults(self) -> dict[str, float]:
        out = {}
        if self.uart.noise.rate:
            out["noise"] = self.uart.noise.rate
        if self.uart.slow_ms:
            out["slow"] = self.uart.slow_ms
        return out

    def _link_counters(self) -> dict[str, int]:
        """Firmware link counters summed over every boot, plus the UART's."""
        fw = self.fw
        counters = dict(self._link_totals)
        for name, value in (fw.link.counters.items() if fw is not None else ()):
            counters[name] = counters.get(name, 0) + value
        counters.update(self.uart.counters())
        return counters
