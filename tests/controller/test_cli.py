"""`nalox unit run` without a board: one JSON error line saying what was expected, exit 1."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.controller.procs import NALOX, unit_config


def test_run_without_a_board_exits_1_with_a_clear_line(tmp_path: Path) -> None:
    config = unit_config(tmp_path, tmp_path / "no-such-port", {})
    done = subprocess.run([*NALOX, "unit", "run", "--config", str(config)], capture_output=True, timeout=60)
    assert done.returncode == 1
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    [error] = [x for x in lines if x["level"] == "error"]
    assert error["event"] == "board_unavailable"
    assert error["expected"] == f"a dispenser board answering on {tmp_path / 'no-such-port'}"
    assert "no-such-port" in error["error"] and "exception" not in error
