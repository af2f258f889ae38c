"""Service door switch driver with debounce: reports a change once it has been stable."""

from firmware_py.hal import ticks_diff


class DoorSwitch:
    """poll(now) returns True/False when the door settles in a new state, else None."""

    def __init__(self, pin, debounce_ms=20):
        self.pin = pin
        self.debounce_ms = debounce_ms
        self.open = pin.value() == 1
        self._seen = self.open
        self._since = None

    def poll(self, now):
        value = self.pin.value() == 1
        if value != self._seen:
            self._seen = value
            self._since = now
        if self._seen == self.open or self._since is None:
            return None
        if ticks_diff(now, self._since) < self.debounce_ms:
            return None
        self.open = self._seen
        return self.open
