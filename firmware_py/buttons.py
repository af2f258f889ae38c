"""Buttons driver: one pin per button. A press is reported when it ends, with how long it was held.

A press starts at a rising edge and ends once the pin has read low for `debounce_ms` without a break
(bounce at either end is part of the press); it is held from the rising edge to the first of those low
readings. A button held HOLD_MAX_MS is reported then, once (a stuck button does not go on pressing)."""

from firmware_py.hal import ticks_diff

HOLD_MAX_MS = 0xFFFF  # codec.HOLD_MAX_MS


class Buttons:
    """poll(now) returns [(index, hold_ms, released_at)] for presses that ended since the last poll."""

    def __init__(self, pins, debounce_ms=50):
        self.pins = pins
        self.debounce_ms = debounce_ms
        self._down_at = [None] * len(pins)  # ticks of the press's rising edge, None when not held
        self._low_since = [None] * len(pins)  # while held: first of the current run of low readings
        self._reported = [False] * len(pins)  # held past HOLD_MAX_MS and already reported

    def poll(self, now):
        ended = []  # type: list
        for i, pin in enumerate(self.pins):
            value = pin.value()
            down = self._down_at[i]
            low = self._low_since[i]
            if down is not None and low is not None and ticks_diff(now, low) >= self.debounce_ms:
                self._end(i, low, ended)  # low long enough (maybe a new press since: seen below)
                down = None
            if down is None:
                if value == 1:
                    self._down_at[i] = now
                    self._low_since[i] = None
                continue
            if value == 1:
                self._low_since[i] = None
                if not self._reported[i] and ticks_diff(now, down) >= HOLD_MAX_MS:
                    self._reported[i] = True
                    ended.append((i, HOLD_MAX_MS, now))
            elif low is None:
                self._low_since[i] = now
        return ended

    def _end(self, i, released_at, ended):
        if not self._reported[i]:
            hold = min(ticks_diff(released_at, self._down_at[i]), HOLD_MAX_MS)
            ended.append((i, hold, released_at))
        self._down_at[i] = None
        self._low_since[i] = None
        self._reported[i] = False
