"""Hardware abstraction of the dispenser board: what a HAL object provides, and ticks helpers.

A HAL is any object with these attributes (duck-typed, micropython-lib style; `main.py`
builds one from `machine`, `simulator/hal.py` builds a simulated one, tests use dummy pins):

    ticks_ms()      -> int milliseconds, wrapping like MicroPython's time.ticks_ms
    uart            read(n) -> bytes or None (never blocks), write(data) -> int
    motor_pins      one output pin per column; value(1) runs that column's coil motor
    current_adcs    one ADC per column; read_u16() -> 0..65535 = 0..CURRENT_FULL_SCALE_MA
    drop_pins       one input pin per column; value() 1 while the drop beam is blocked
    empty_pins      None, or one input pin per column; value() 1 when the column is empty
    door_pin        input pin; value() 1 while the service door is open
    temp_adc        read_u16() of the thermistor channel (scale in temp.py)
    button_pins     input pins in LANGUAGES order (en, es); value() 1 while pressed
    nvs             non-volatile key -> bytes store (see nvs.py): get(key), put(key, value)
    board_id        short text naming this board
    reset_cause     text for the BOOT message: "power_on", "watchdog", "sim_reboot", ...

Optional (protocol 2; a HAL without them still runs):

    light_pin       output pin of the status light (light.py drives the patterns)
    board_model     text naming the hardware; firmware bundles are made for one model
    reset()         restart the board (machine.reset): after an update, into the new slot

A pin is anything with value() / value(v) like machine.Pin.
"""

TICKS_PERIOD = 1 << 30  # MicroPython's ticks_ms wraps at 2**30 on most ports
_HALF = TICKS_PERIOD // 2

try:
    from time import ticks_add, ticks_diff, ticks_ms  # type: ignore[attr-defined]  # MicroPython
except ImportError:
    import time

    def ticks_ms():
        return int(time.monotonic() * 1000) & (TICKS_PERIOD - 1)

    def ticks_add(ticks, delta):
        return (ticks + delta) & (TICKS_PERIOD - 1)

    def ticks_diff(new, old):
        """Signed difference new - old, correct across one wrap of the ticks counter."""
        return ((new - old + _HALF) & (TICKS_PERIOD - 1)) - _HALF


CURRENT_FULL_SCALE_MA = 3000


class DummyPin:
    """A pin for hardware-free runs and tests: holds a value, value() reads it, value(v) sets it."""

    def __init__(self, value=0):
        self._value = value

    def value(self, v=None):
        if v is None:
            return self._value
        self._value = 1 if v else 0
        return None


class DummyADC:
    """An ADC returning whatever `raw` is set to."""

    def __init__(self, raw=0):
        self.raw = raw

    def read_u16(self):
        return self.raw
