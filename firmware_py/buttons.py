"""Language buttons driver: one pin per language; a press is a debounced rising edge."""

from firmware_py.hal import ticks_diff


class Buttons:
    """poll(now) returns the indices (into codec.LANGUAGES) newly pressed since the last poll."""

    def __init__(self, pins, debounce_ms=50):
        self.pins = pins
        self.debounce_ms = debounce_ms
        self._last = [0] * len(pins)
        self._edge_at = [None] * len(pins)

    def poll(self, now):
        pressed = []
        for i, pin in enumerate(self.pins):
            value = pin.value()
            if value == 1 and self._last[i] == 0 and self._outside_bounce(i, now):
                pressed.append(i)
                self._edge_at[i] = now
            self._last[i] = value
        return pressed

    def _outside_bounce(self, i, now):
        at = self._edge_at[i]
        return at is None or ticks_diff(now, at) >= self.debounce_ms
