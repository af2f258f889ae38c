"""The controller's one root error. Every error the unit raises on purpose (board, port, config, ledger,
command refusals, control socket, diagnostics usage, player) is a ControllerError, so an edge (the CLI,
the control socket, a remote command) catches the room's errors in one place."""

from __future__ import annotations


class ControllerError(Exception):
    """Root of the unit controller's errors; the message says what was expected and what came."""
