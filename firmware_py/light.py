"""Status light driver: one output pin, a pattern, the level the pin should have at a given tick.

    lit          steady on: ready
    blinking     500 ms on, 500 ms off: busy (a vend in progress)
    host_silent  two 100 ms flashes every 2 s: the controller has been silent too long
    off          dark
"""

from firmware_py import codec


def level(pattern, now):
    """Pin level (0 or 1) of `pattern` at tick `now` (ms)."""
    if pattern == codec.LIGHT_LIT:
        return 1
    if pattern == codec.LIGHT_BLINK:
        return 1 if now % 1000 < 500 else 0
    if pattern == codec.LIGHT_HOST_SILENT:
        phase = now % 2000
        return 1 if phase < 100 or 200 <= phase < 300 else 0
    return 0


class StatusLight:
    """The pattern the controller asked for, overridden by host_silent when it has gone quiet."""

    def __init__(self, pin, host_silent_ms):
        self.pin = pin
        self.host_silent_ms = host_silent_ms
        self.requested = codec.LIGHT_OFF
        self.shown = codec.LIGHT_OFF

    def update(self, now, silent_for):
        """`silent_for`: ms since the controller's last good frame (since boot when it never spoke)."""
        self.shown = codec.LIGHT_HOST_SILENT if silent_for >= self.host_silent_ms else self.requested
        if self.pin is not None:
            self.pin.value(level(self.shown, now))
        return self.shown
