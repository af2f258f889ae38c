"""The nalox layer's one root error: a composed system (demo, fleet, soak) could not start or finish."""

from __future__ import annotations


class NaloxError(Exception):
    """Says what was expected and what happened; `nalox demo` prints it and exits 1."""
