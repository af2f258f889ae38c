"""Done-when: 200 presses against `nalox sim board --faults jam=0.05` (own process, real pty); the ledger
matches `nalox sim ctl stats` exactly: drops, per column, per command id, stock."""

from __future__ import annotations

from pathlib import Path

from tests.controller.vend200 import run


def test_200_presses_with_5_percent_jams_ledger_equals_simulator(tmp_path: Path) -> None:
    figures = run(tmp_path, presses=200, jam=0.05, spin_ms=5, seed=1)
    assert figures["sim_dropped"] == figures["ledger_dispensed"] == 200, figures
    assert figures["per_column_equal"] and figures["stock_equal"] and figures["per_command_equal"], figures
    assert figures["double_drops"] == []
    jams = figures["sim_faults"].get("jam", 0)
    assert jams > 0, "the run must actually meet jams"
    assert figures["command_outcomes"].get("jammed", 0) == jams, "every jam seen by the board is journaled"
    assert figures["command_outcomes"].get("dropped") == 200 and "pending" not in figures["command_outcomes"]
