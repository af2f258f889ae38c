"""Entry point on a real MicroPython dispenser board: choose the firmware slot, build the HAL from
`machine` and run the main loop.

This file and bootsel.py are the boot selector: the copy flashed at the bench runs first on every
start; an update over the link replaces the slot it boots, never them (PROTOCOL.md, section 9).
Pin numbers below are for the reference board (ESP32, 6 columns); change PINS for yours.
"""

import sys
import time

import machine

from firmware_py import bootsel
from firmware_py.nvs import FileStore

NVS_PATH = "/nvs"
BOARD_MODEL = "nalox-esp32-6"
TRIAL_MS = 30000  # a new firmware that has not answered HELLO by then is rolled back

PINS = {  # type: dict
    "motors": (12, 13, 14, 15, 16, 17),
    "current": (32, 33, 34, 35, 36, 39),
    "drops": (18, 19, 21, 22, 23, 25),
    "door": 26,
    "temp": 27,
    "buttons": (4, 5),
    "light": 2,
    "uart": (1, 9, 10),  # id, tx, rx
}


class Hal:
    board_model = BOARD_MODEL

    def __init__(self, nvs, reason):
        out, inp = machine.Pin.OUT, machine.Pin.IN
        self.ticks_ms = time.ticks_ms  # type: ignore[attr-defined]
        uid, tx, rx = PINS["uart"]
        self.uart = machine.UART(uid, baudrate=115200, bits=8, parity=None, stop=1, tx=tx, rx=rx, timeout=0)
        self.motor_pins = [machine.Pin(n, out, value=0) for n in PINS["motors"]]
        self.current_adcs = [machine.ADC(machine.Pin(n)) for n in PINS["current"]]
        self.drop_pins = [machine.Pin(n, inp) for n in PINS["drops"]]
        self.empty_pins = None
        self.door_pin = machine.Pin(PINS["door"], inp, machine.Pin.PULL_UP)
        self.temp_adc = machine.ADC(machine.Pin(PINS["temp"]))
        self.button_pins = [machine.Pin(n, inp) for n in PINS["buttons"]]
        self.light_pin = machine.Pin(PINS["light"], out, value=0)
        self.nvs = nvs
        self.board_id = "".join("%02x" % b for b in machine.unique_id())
        self.reset_cause = reason or reset_cause_name(machine.reset_cause())
        self.reset = machine.reset


def reset_cause_name(cause):
    names = {
        getattr(machine, "PWRON_RESET", -1): "power_on",
        getattr(machine, "WDT_RESET", -2): "watchdog",
        getattr(machine, "HARD_RESET", -3): "hard_reset",
        getattr(machine, "SOFT_RESET", -4): "soft_reset",
        getattr(machine, "DEEPSLEEP_RESET", -5): "deep_sleep",
    }
    return names.get(cause, "unknown")


def firmware_board(slot):
    """The Board class of `slot`: the factory copy next to this file, or a received one in storage."""
    if slot != bootsel.FACTORY:
        for name in list(sys.modules):
            if name == "firmware_py" or name.startswith("firmware_py."):
                del sys.modules[name]
        sys.path.insert(0, NVS_PATH + "/" + bootsel.prefix(slot).rstrip("/"))
    from firmware_py.board import Board
    return Board


def run():
    nvs = FileStore(NVS_PATH)
    slot, why = bootsel.choose(nvs)
    reason = why if why in ("rolled_back", "slot_invalid") else None
    board = firmware_board(slot)(Hal(nvs, reason))
    trial_until = time.ticks_add(time.ticks_ms(), TRIAL_MS) if why == "trial" else None  # type: ignore[attr-defined]
    wdt = machine.WDT(timeout=2000)
    while True:
        board.step()
        wdt.feed()
        if trial_until is not None and time.ticks_diff(time.ticks_ms(), trial_until) >= 0:  # type: ignore[attr-defined]
            trial_until = None
            if bootsel.in_trial(nvs):
                machine.reset()  # no HELLO in time: bootsel goes back to the previous slot
        if not board.busy():
            time.sleep_ms(1)  # type: ignore[attr-defined]


run()
