"""`nalox sim board` as its own process behind a real pty, for integration tests and the noisy run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, nalox

START_TIMEOUT = 15.0


class SimProcessError(Exception):
    """The simulator did not start or a control command failed; the message carries its output."""


class SimBoardProcess:
    """One `nalox sim board --link PATH ...` process; start() waits until PATH and PATH.ctl exist."""

    def __init__(self, link: Path, state_dir: Path | None = None, faults: str = "", spin_ms: float = 5,
                 seed: int = 1, columns: int = 6, stock: int = 20) -> None:
        self.link = link
        self.args = ["--link", str(link), "--columns", str(columns), "--stock", str(stock),
                     "--spin-ms", str(spin_ms), "--seed", str(seed)]
        if faults:
            self.args += ["--faults", faults]
        if state_dir is not None:
            self.args += ["--state-dir", str(state_dir)]
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = link.parent / f"{link.name}.sim.log"

    def start(self) -> SimBoardProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its whole life
        self.proc = subprocess.Popen(nalox("sim", "board", *self.args), cwd=ROOT, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        ctl = Path(f"{self.link}.ctl")
        pause = threading.Event()
        waited = 0.0
        while waited < START_TIMEOUT:
            if self.proc.poll() is not None:
                code, tail = self.proc.returncode, self.log_tail()
                raise SimProcessError(f"nalox sim board: expected it running, it exited {code}: {tail}")
            if ctl.exists() and self.link.exists() and self._answers():
                return
            pause.wait(0.05)
            waited += 0.05
        self.stop()
        raise SimProcessError(f"nalox sim board: expected {self.link} within {START_TIMEOUT} s, got: "
                              f"{self.log_tail()}")

    def _answers(self) -> bool:
        try:
            self.stats()
        except SimProcessError:
            return False
        return True

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def ctl(self, *args: str) -> str:
        done = subprocess.run(nalox("sim", "ctl", "--link", str(self.link), *args), cwd=ROOT,
                              capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise SimProcessError(f"nalox sim ctl {' '.join(args)}: exit {done.returncode}: {done.stderr}")
        return done.stdout

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.ctl("stats"))
        return out

    def kill(self) -> None:
        """SIGKILL: the board loses power; the pty master closes, the symlink stays behind."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def __enter__(self) -> SimBoardProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
