"""A dispenser board whose firmware runs on the real MicroPython interpreter, behind a pyserial-like port.

    board = MicroPythonBoard(columns=4, stock=10, spin_ms=20)
    board.attach(PtyPort(path))     # or a memlink end; the controller opens `path`
    board.start()                   # the firmware's main loop steps in the VM (mpvm/vm/mp_board.py)
    board.press(0); board.set_door(True); board.reboot(); board.stats(); board.mem()

A thread bridges the port and the VM's UART: bytes from the line go into the VM with each step,
bytes the firmware wrote come back out. `noise` corrupts both directions like simulator.noise.
The CPython SimulatedBoard stays the fast path for fleets; this one proves the firmware on MicroPython.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import serial
import structlog

from simulator.mpvm import MicroPythonVM
from simulator.noise import Noise

log = structlog.get_logger("simulator.mpboard")
IDLE_WAIT_S = 0.01


class MicroPythonBoard:
    def __init__(self, columns: int = 4, stock: int = 10, spin_ms: int = 20, noise: float = 0.0,
                 seed: int = 1, trial_ms: int = 30_000, heap_kb: int = 256,
                 host_silent_ms: int = 10_000) -> None:
        self.options = {
            "columns": columns, "stock": stock, "spin_ms": spin_ms, "trial_ms": trial_ms,
            "firmware": {"spin_timeout_ms": spin_ms * 2 + 100, "settle_ms": max(2, spin_ms // 10),
                         "button_debounce_ms": 0, "door_debounce_ms": 0, "host_silent_ms": host_silent_ms},
        }
        self.heap_kb = heap_kb
        self.noise = Noise(noise, seed)
        self.port: Any = None
        self.vm: MicroPythonVM | None = None
        self.boot_info: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.steps = 0

    def attach(self, port: Any) -> None:
        self.port = port

    def start(self) -> MicroPythonBoard:
        self.vm = MicroPythonVM(heap_kb=self.heap_kb)
        self.boot_info = json.loads(self.vm.call("mp_board", "start", json.dumps(self.options)))
        self._thread = threading.Thread(target=self._run, name="mpboard", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self.vm is not None:
            self.vm.close()
            self.vm = None

    def __enter__(self) -> MicroPythonBoard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        busy = False
        while not self._stop.is_set():
            try:
                rx = self._read(0.0 if busy else IDLE_WAIT_S)
                assert self.vm is not None
                answer = json.loads(self.vm.call("mp_board", "step", self.noise.corrupt(rx).hex()))
                self.steps += 1
                if answer["tx"]:
                    self.port.write(self.noise.corrupt(bytes.fromhex(answer["tx"])))
                busy = bool(answer["busy"] or answer["tx"] or rx)
            except (serial.SerialException, OSError) as exc:
                if self._stop.is_set():
                    return
                log.warning("mpboard_port_error", error=str(exc))
                self._stop.wait(0.05)
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("mpboard_step_failed")
                self._stop.wait(0.05)

    def _read(self, wait: float) -> bytes:
        port = self.port
        if port is None:
            self._stop.wait(wait)
            return b""
        waiting = port.in_waiting
        if waiting:
            data: bytes = port.read(waiting)
            return data
        if wait <= 0:
            return b""
        port.timeout = wait
        data = port.read(1)
        if data and port.in_waiting:
            data += port.read(port.in_waiting)
        return data

    def _ctl(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.vm is not None
        answer: dict[str, Any] = json.loads(self.vm.call("mp_board", "ctl", json.dumps(request)))
        return answer

    def press(self, button: int = 0, hold_ms: int | None = None) -> None:
        self._ctl({"cmd": "press", "button": button, "hold_ms": hold_ms})

    def set_door(self, open: bool) -> None:
        self._ctl({"cmd": "door", "open": open})

    def reboot(self) -> None:
        self._ctl({"cmd": "reboot"})

    def fill_journal(self, n: int, base: int) -> None:
        self._ctl({"cmd": "fill_journal", "n": n, "base": base})

    def track_heap(self, on: bool) -> None:
        """While on, every step collects garbage first, so mem()'s peak is the peak of live objects."""
        self._ctl({"cmd": "track", "on": on})

    def cut_power_at(self, kind: str, key: str, nth: int = 1) -> None:
        """Arm a power cut at the nth write of `kind` ("put", "append", "drop") to `key` in the board's
        storage: that write never happens and the board starts again."""
        self._ctl({"cmd": "cut", "kind": kind, "key": key, "nth": nth})

    def stats(self) -> dict[str, Any]:
        return self._ctl({"cmd": "stats"})

    def mem(self) -> dict[str, Any]:
        """Heap figures inside the VM: live bytes now (after a collection), the highest allocation seen
        after any step since the last mem() (live objects only while track_heap is on), and the
        baseline before the firmware was imported."""
        return self._ctl({"cmd": "mem"})
