"""Entry point on a real MicroPython dispenser board: build the HAL from `machine` and run the main loop.

Pin numbers below are for the reference board (ESP32, 6 columns); change PINS for yours.
"""

import time

import machine

from firmware_py.board import Board
from firmware_py.nvs import FileStore

PINS = {  # type: dict
    "motors": (12, 13, 14, 15, 16, 17),
    "current": (32, 33, 34, 35, 36, 39),
    "drops": (18, 19, 21, 22, 23, 25),
    "door": 26,
    "temp": 27,
    "buttons": (4, 5),
    "uart": (1, 9, 10),  # id, tx, rx
}


class Hal:
    def __init__(self):
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
        self.nvs = FileStore("/nvs")
        self.board_id = "".join("%02x" % b for b in machine.unique_id())
        self.reset_cause = reset_cause_name(machine.reset_cause())


def reset_cause_name(cause):
    names = {
        getattr(machine, "PWRON_RESET", -1): "power_on",
        getattr(machine, "WDT_RESET", -2): "watchdog",
        getattr(machine, "HARD_RESET", -3): "hard_reset",
        getattr(machine, "SOFT_RESET", -4): "soft_reset",
        getattr(machine, "DEEPSLEEP_RESET", -5): "deep_sleep",
    }
    return names.get(cause, "unknown")


def run():
    board = Board(Hal())
    wdt = machine.WDT(timeout=2000)
    while True:
        board.step()
        wdt.feed()
        if not board.busy():
            time.sleep_ms(1)  # type: ignore[attr-defined]


run()
