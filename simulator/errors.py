"""The simulator's one root error: a request the simulated board cannot honour, a slot that does not
load, a MicroPython VM that cannot start are all SimulatorErrors."""

from __future__ import annotations


class SimulatorError(Exception):
    """A request the simulated board cannot honour (bad fault name, column, language...)."""
