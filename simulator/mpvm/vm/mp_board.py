"""A whole dispenser board inside the MicroPython VM: the firmware's Board on a small simulated HAL.

Runs only under MicroPython (simulator/mpboard.py drives it from CPython). The host calls
    start(json)  -> json     boot (the boot selector picks the slot, its firmware is imported)
    step(rx_hex) -> json     bytes from the line in, one main-loop step, bytes for the line out
    ctl(json)    -> json     press, door, reboot, stats, mem
The physical world is deliberately small (no fault injection but reboots): kits fall when a coil
has turned spin_ms and the firmware looks at the beam, so drop, sensor edge and journal write
happen in one step as on the CPython simulator. Non-volatile storage is a FileStore on the VM's
file system under /flash (slots live there too), kept across reboots of this VM.
"""

import gc
import json
import sys
import time
from binascii import hexlify, unhexlify

gc.collect()
HEAP_BEFORE_FIRMWARE = gc.mem_alloc()

from firmware_py import bootsel  # noqa: E402  the boot selector is the factory one, never replaced
from firmware_py.nvs import FileStore  # noqa: E402

FLASH = "/flash"
RUN_RAW = 6554  # 300 mA of 3000 mA full scale
TEMP_RAW = 40631  # about 22 C


class World:
    def __init__(self, columns, stock, spin_ms):
        self.spin_ms = spin_ms
        self.stock = [stock] * columns
        self.motor = [None] * columns  # tick the coil started, None when stopped
        self.fell = [False] * columns  # a kit already fell in this spin
        self.door = 0
        self.pending = [[], []]  # presses waiting per button: hold ms each (None: one reading high)
        self.level = [0, 0]
        self.until = [None, None]  # ticks_ms the held button is let go
        self.light = 0
        self.dropped = 0
        self.per_command = {}
        self.presses = 0
        self.boots = 0
        self.job = None  # the firmware's Board, to attribute drops

    def read_drop(self, i):
        started = self.motor[i]
        if started is None or self.fell[i]:
            return 0
        if time.ticks_diff(time.ticks_ms(), started) < self.spin_ms:
            return 0
        self.fell[i] = True
        if self.stock[i] <= 0:
            return 0
        self.stock[i] -= 1
        self.dropped += 1
        board = self.job
        job = board.job if board is not None else None
        key = str(job.command_id) if job is not None and job.kind == "dispense" else "unattributed"
        self.per_command[key] = self.per_command.get(key, 0) + 1
        return 1

    def read_button(self, i):
        if self.level[i]:
            until = self.until[i]
            if until is None or time.ticks_diff(time.ticks_ms(), until) >= 0:
                self.level[i] = 0
                self.until[i] = None
        elif self.pending[i]:
            hold = self.pending[i].pop(0)
            self.level[i] = 1
            self.until[i] = None if hold is None else time.ticks_add(time.ticks_ms(), int(hold))
        return self.level[i]


class PowerCut(Exception):
    """The board loses power at this write: the write never happens, the firmware stops at once."""


class CutStore:
    """The board's FileStore, with a power cut at the `nth` write of `kind` to `key` when armed."""

    def __init__(self, inner):
        self.inner = inner
        self.writes = 0
        self.cut = None  # [kind, key, nth]

    def get(self, key):
        return self.inner.get(key)

    def _write(self, kind, key):
        self.writes += 1
        cut = self.cut
        if cut is not None and cut[0] == kind and cut[1] == key:
            cut[2] -= 1
            if cut[2] <= 0:
                self.cut = None
                STATE["cuts"].append(kind + " " + key)
                raise PowerCut("power cut at %s %s" % (kind, key))

    def put(self, key, value):
        self._write("put", key)
        self.inner.put(key, value)

    def append(self, key, data):
        self._write("append", key)
        self.inner.append(key, data)

    def drop(self, prefix):
        self._write("drop", prefix)
        self.inner.drop(prefix)


class Pin:
    def __init__(self, read=None, write=None):
        self._read = read
        self._write = write

    def value(self, v=None):
        if v is None:
            return self._read()
        self._write(1 if v else 0)
        return None


class ADC:
    def __init__(self, read):
        self.read_u16 = read


class Uart:
    def __init__(self):
        self.rx = bytearray()
        self.tx = bytearray()

    def read(self, n):
        if not self.rx:
            return None
        data = bytes(self.rx[:n])
        self.rx = self.rx[n:]
        return data

    def write(self, data):
        self.tx.extend(data)
        return len(data)


class Hal:
    board_model = "nalox-mpsim"

    def __init__(self, world, uart, nvs, reason):
        n = len(world.stock)
        self.uart = uart
        self.motor_pins = [Pin(lambda i=i: 1 if world.motor[i] is not None else 0,
                               lambda v, i=i: _motor(world, i, v)) for i in range(n)]
        self.current_adcs = [ADC(lambda i=i: RUN_RAW if world.motor[i] is not None else 0) for i in range(n)]
        self.drop_pins = [Pin(lambda i=i: world.read_drop(i)) for i in range(n)]
        self.empty_pins = None
        self.door_pin = Pin(lambda: world.door)
        self.temp_adc = ADC(lambda: TEMP_RAW)
        self.button_pins = [Pin(lambda i=i: world.read_button(i)) for i in range(2)]
        self.light_pin = Pin(lambda: world.light, lambda v: setattr(world, "light", v))
        self.nvs = nvs
        self.board_id = "mpsim-0001"
        self.reset_cause = reason
        self.ticks_ms = time.ticks_ms

    def reset(self):
        STATE["reboot"] = "soft_reset"


def _motor(world, i, v):
    if v and world.motor[i] is None:
        world.motor[i] = time.ticks_ms()
        world.fell[i] = False
    elif not v:
        world.motor[i] = None


STATE = {"board": None, "world": None, "uart": None, "nvs": None, "opts": None, "reboot": None,
         "trial_until": None, "slot": 0, "track": False, "cuts": [], "heap_after_start": 0, "heap_peak": 0,
         "reasons": []}


def _firmware_board_class(slot):
    """Import the firmware of `slot`: the factory copy at /firmware_py or a received one under /flash."""
    for name in list(sys.modules):
        if name.startswith("firmware_py.") and name != "firmware_py.bootsel" and name != "firmware_py.nvs":
            del sys.modules[name]
    for path in list(sys.path):
        if path.startswith(FLASH + "/fw"):
            sys.path.remove(path)
    if slot != bootsel.FACTORY:
        for name in ("firmware_py", "firmware_py.bootsel", "firmware_py.nvs"):
            sys.modules.pop(name, None)
        sys.path.insert(0, FLASH + "/" + bootsel.prefix(slot).rstrip("/"))
    from firmware_py.board import Board
    return Board


def _boot(reason):
    try:
        _start_firmware(reason)
    except Exception as exc:  # power lost again while starting: start again
        sys.print_exception(exc)
        STATE["board"] = None
        STATE["reboot"] = "power_on"


def _start_firmware(reason):
    world = STATE["world"]
    for i in range(len(world.motor)):
        world.motor[i] = None
    nvs = STATE["nvs"]
    slot, why = bootsel.choose(nvs)
    if why in ("rolled_back", "slot_invalid"):
        reason = why
    trial_ms = STATE["opts"]["trial_ms"]
    STATE["trial_until"] = time.ticks_add(time.ticks_ms(), trial_ms) if why == "trial" else None
    STATE["slot"] = slot
    try:
        board_class = _firmware_board_class(slot)
        board = board_class(Hal(world, STATE["uart"], nvs, reason), **STATE["opts"]["firmware"])
    except Exception as exc:  # the new firmware does not start: the watchdog restarts the board
        sys.print_exception(exc)
        STATE["board"] = None
        STATE["reboot"] = "watchdog"
        return
    STATE["board"] = board
    world.job = board
    world.boots += 1
    STATE["reasons"].append(reason)


def start(text):
    opts = json.loads(text)
    world = World(opts["columns"], opts["stock"], opts["spin_ms"])
    STATE["world"] = world
    STATE["uart"] = Uart()
    STATE["nvs"] = CutStore(FileStore(FLASH))
    STATE["opts"] = opts
    _boot("power_on")
    gc.collect()
    STATE["heap_after_start"] = gc.mem_alloc()
    STATE["heap_peak"] = STATE["heap_after_start"]
    return json.dumps({"slot": STATE["slot"], "heap_before_firmware": HEAP_BEFORE_FIRMWARE,
                       "heap_after_start": STATE["heap_after_start"]})


def step(rx_hex):
    uart = STATE["uart"]
    if rx_hex:
        uart.rx.extend(unhexlify(rx_hex))
    trial = STATE["trial_until"]
    if trial is not None and time.ticks_diff(time.ticks_ms(), trial) >= 0:
        STATE["trial_until"] = None
        if bootsel.in_trial(STATE["nvs"]):
            STATE["reboot"] = "watchdog"  # on trial and no HELLO in time
    if STATE["reboot"] is not None:
        reason = STATE["reboot"]
        STATE["reboot"] = None
        _boot(reason)
    board = STATE["board"]
    busy = False
    if board is not None:
        try:
            board.step()
            busy = board.busy()
        except Exception as exc:
            sys.print_exception(exc)
            STATE["reboot"] = "watchdog"
    if STATE["track"]:
        gc.collect()  # measuring: the peak of live objects, not of garbage waiting for a collection
    used = gc.mem_alloc()
    if used > STATE["heap_peak"]:
        STATE["heap_peak"] = used
    tx = hexlify(uart.tx).decode()
    uart.tx = bytearray()
    return json.dumps({"tx": tx, "busy": busy})


def ctl(text):
    req = json.loads(text)
    cmd = req["cmd"]
    world = STATE["world"]
    if cmd == "press":
        world.pending[req["button"]].append(req.get("hold_ms"))
        world.presses += 1
    elif cmd == "door":
        world.door = 1 if req["open"] else 0
    elif cmd == "reboot":
        STATE["reboot"] = "sim_reboot"
    elif cmd == "track":
        STATE["track"] = bool(req["on"])
    elif cmd == "cut":
        STATE["nvs"].cut = [req["kind"], req["key"], req["nth"]]
    elif cmd == "mem":
        peak = STATE["heap_peak"]
        gc.collect()
        STATE["heap_peak"] = gc.mem_alloc()
        return json.dumps({"live": gc.mem_alloc(), "free": gc.mem_free(), "peak_since_last": peak,
                           "before_firmware": HEAP_BEFORE_FIRMWARE, "after_start": STATE["heap_after_start"]})
    elif cmd == "fill_journal":
        board = STATE["board"]
        for i in range(req["n"]):
            board.journal.begin(req["base"] + i, 1)
            board.journal.finish(req["base"] + i, 0)
    elif cmd == "stats":
        board = STATE["board"]
        return json.dumps({
            "dropped": world.dropped, "per_command": world.per_command, "stock": world.stock,
            "presses": world.presses, "boots": world.boots, "light": world.light, "slot": STATE["slot"],
            "light_shown": board.light.shown if board is not None else None,
            "firmware": board.firmware if board is not None else None, "reasons": STATE["reasons"],
            "implementation": sys.implementation.name, "cuts": STATE["cuts"],
            "slot_ok": bootsel.verify(STATE["nvs"], STATE["slot"]) is None,
            "on_trial": bootsel.in_trial(STATE["nvs"]),
            "link": board.link.counters if board is not None else {},
        })
    else:
        raise ValueError("ctl: expected press, door, reboot, track, cut, mem, fill_journal or stats, got %r"
                         % (cmd,))
    return json.dumps({"ok": True})
