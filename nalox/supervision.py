"""Process supervision for the demo and the soak: each room a child in its own process group, stopped
(or killed, as a crash would) with everything it started, and nothing left running at exit."""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog

from controller import log as unit_log
from nalox import proctree
from nalox.errors import NaloxError
from nalox.tools import require_tools

log = structlog.get_logger("nalox.supervision")
NALOX = [sys.executable, "-m", "nalox.cli"]  # the `nalox` command of this interpreter


class Stopped(Exception):
    """SIGTERM arrived: unwind and stop everything."""


@dataclass(eq=False)
class Proc:
    """One supervised child in its own process group; stop() takes the whole tree down."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(self.env or {}))
        with open(self.log_path, "ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        LIVE.add(self)
        log.info("started", proc=self.name, pid=self.popen.pid)
        return self

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise NaloxError(f"{self.name}: expected a started process, found none")
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def check_alive(self) -> None:
        """Raise NaloxError with the tail of its log when the process has exited."""
        if self.popen is not None and not self.alive():
            raise NaloxError(
                f"{self.name} exited with {self.returncode()}; log {self.log_path}: {self.log_tail()}"
            )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the group, then SIGKILL to the group and any descendant that left it."""
        if self.popen is None:
            return
        family = proctree.descendants(self.popen.pid)
        if self.popen.poll() is None:
            _signal_group(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("stop timed out, killing", proc=self.name, timeout_s=timeout)
        self._reap(family)

    def kill9(self) -> None:
        """kill -9 of the process and everything it started (a crash or a power cut)."""
        if self.popen is None:
            return
        self._reap(proctree.descendants(self.popen.pid))

    def _reap(self, family: list[proctree.Process]) -> None:
        assert self.popen is not None
        _signal_group(self.popen.pid, signal.SIGKILL)
        for child in family:
            proctree.kill(child)
        self.popen.wait()
        left = proctree.wait_gone(family, timeout=5)
        if left:
            log.warning("still running after SIGKILL", proc=self.name, pids=[p.pid for p in left])
        LIVE.discard(self)

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class _Live(set[Proc]):
    """Every child still running; killed at interpreter exit whatever path led there."""

    def kill_all(self) -> None:
        for proc in list(self):
            proc.kill9()


LIVE = _Live()
atexit.register(LIVE.kill_all)


def _on_sigterm(signum: int, frame: object) -> None:
    raise Stopped()


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Inside: SIGTERM raises Stopped, so `finally` blocks stop every child."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_supervised(prog: str, body: Callable[[], int], failure: int = 1) -> int:
    """The shell of a command that starts rooms (demo, soak): JSON logs on stderr, the programs it needs
    checked first, SIGTERM and Ctrl-C stop every child (exit 130), a NaloxError is one line (`failure`)."""
    unit_log.configure(stream=sys.stderr)
    try:
        require_tools()
        with sigterm_raises():
            return body()
    except NaloxError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return failure
    except (KeyboardInterrupt, Stopped):
        print(f"\n{prog}: stopped", file=sys.stderr)
        return 130
