"""The short version of `make fuzz`: each atheris target runs a thousand coverage-guided inputs
(10^6 in `make fuzz`) and none crashes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("target", ["deframer", "codec", "payload"])
def test_fuzz_target_runs_without_a_crash(target: str) -> None:
    done = subprocess.run([sys.executable, "-m", "bench.fuzz", target, "--runs", "1000"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures == {**figures, "target": target, "execs": 1000, "crashes": 0}, figures


def test_fuzz_harness_reports_a_crash(tmp_path: Path) -> None:
    """The harness can fail: a target that raises makes it exit non-zero with crashes 1."""
    script = tmp_path / "crash.py"
    script.write_text(
        "import sys, atheris\n"
        "def one(data):\n"
        "    if len(data) > 2: raise ValueError('boom')\n"
        "atheris.Setup([sys.argv[0], '-runs=100000'], one)\n"
        "atheris.Fuzz()\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode != 0 and "ValueError" in done.stdout + done.stderr
