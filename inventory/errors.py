"""The central service's one root error: config, store, ingest refusals and report periods are all
InventoryErrors, so an edge (the CLI, a web handler, the ingest loop) catches the room's errors once."""

from __future__ import annotations


class InventoryError(Exception):
    """Root of the central service's errors; the message says what was expected and what came."""
