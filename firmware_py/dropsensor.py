"""Drop sensor driver: a light beam under a column; a kit falling through blocks it briefly."""


class DropSensor:
    """Edge detector on the beam pin. arm() before the coil turns; fired() is True once per new block."""

    def __init__(self, pin):
        self.pin = pin
        self.last = 0

    def blocked(self):
        """Read the beam now (do not call while a dispense watches this column: it eats the edge)."""
        self.last = self.pin.value()
        return self.last == 1

    def arm(self):
        self.last = self.pin.value()

    def fired(self):
        value = self.pin.value()
        edge = value == 1 and self.last == 0
        self.last = value
        return edge
