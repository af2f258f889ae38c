"""Helpers for tests that run `nalox sim board` and `nalox unit run` as separate processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controller.cli import example_text
from controller.ledger import read_census
from simulator.control import request
from tests.conftest import NALOX


def wait_until(what: str, predicate: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {what} within {timeout}s, found it not so")
        pause.wait(0.02)


class SimBoardProcess:
    def __init__(self, workdir: Path, *args: str) -> None:
        self.link = workdir / "dispenser"
        self.log = open(workdir / "board.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [*NALOX, "sim", "board", "--link", str(self.link), *args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until("the simulated board's control socket", lambda: Path(f"{self.link}.ctl").exists(), 20)

    def ctl(self, **message: Any) -> dict[str, Any]:
        reply = request(f"{self.link}.ctl", message)
        assert reply["ok"], reply
        return reply

    def stats_cli(self) -> dict[str, Any]:
        """Ground truth the way an operator reads it: `nalox sim ctl --link PATH stats`."""
        out = subprocess.run(
            [*NALOX, "sim", "ctl", "--link", str(self.link), "stats"],
            check=True,
            capture_output=True,
            timeout=30,
        ).stdout
        return dict(json.loads(out))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=15)
        self.log.close()


class UnitProcess:
    def __init__(self, config: Path, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, env: dict[str, str] | None = None) -> UnitProcess:
        self.starts += 1
        log = open(self.workdir / f"unit-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*NALOX, "unit", "run", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        log.close()
        wait_until("the unit to log unit_ready", lambda: b"unit_ready" in self.log_bytes(), 30)
        return self

    def log_bytes(self) -> bytes:
        return (self.workdir / f"unit-{self.starts}.log").read_bytes()

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def unit_config(workdir: Path, link: Path, clips: dict[str, Path], **replace: str) -> Path:
    text = (
        example_text()
        .replace("/tmp/nalox/dispenser", str(link))
        .replace("/tmp/nalox/unit", str(workdir / "unit"))
    )
    for lang, clip in clips.items():
        text = text.replace(f"/tmp/nalox/videos/{lang}.mp4", str(clip))
    text = text.replace("mpv_args = []", 'mpv_args = ["--no-config"]')
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path = workdir / "unit.toml"
    path.write_text(text)
    return path


def ledger_truth(path: Path) -> dict[str, Any]:
    """What the ledger says (its census, read-only), in the shape of the simulator's stats."""
    c = read_census(path)
    return {
        "dropped": c.dispensed,
        "per_column": {str(col): c.dispensed_per_column.get(col, 0) for col in c.stock},
        "stock": {str(col): n for col, n in c.stock.items()},
        "per_command": {str(cid): n for cid, n in c.dispensed_per_command.items()},
    }
