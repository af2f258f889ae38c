"""Fixtures and helpers shared by every test package: the leak guard (no thread or child process may
outlive its test), the `nalox` command of this interpreter, a real mosquitto on a free port, the
artifact folder."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import structlog

from nalox.broker import Broker
from nalox.supervision import NALOX

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
LEAK_GRACE_S = 10.0

__all__ = ["NALOX", "ROOT", "nalox", "run_nalox", "stop_group"]


def nalox(*args: str) -> list[str]:
    """The command line of `nalox ARGS` run by this interpreter (so the tests' venv is used)."""
    return [*NALOX, *args]


def run_nalox(*args: str, timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """`nalox ARGS` in its own process from the repository root, output captured as text."""
    return subprocess.run(nalox(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kwargs)


def stop_group(proc: subprocess.Popen[Any], grace_s: float) -> None:
    """SIGTERM to the process group `proc` leads (started with start_new_session), SIGKILL when it is
    still there after `grace_s` seconds; reaped either way."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every test stops the threads and child processes it started (board links, simulators, paho
    loops, web servers, mpv, sim boards, unit daemons); they get LEAK_GRACE_S to finish."""
    before = set(threading.enumerate())
    before_pids = {p.pid for p in _children()}  # module- and session-scoped fixtures' own processes
    yield
    deadline = time.monotonic() + LEAK_GRACE_S
    while True:
        threads = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        children = [p for p in _children() if p.pid not in before_pids and _alive(p)]
        if not threads and not children:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"expected no threads or processes left by the test, found threads "
                                 f"{[t.name for t in threads]} and processes {children}")
        for t in threads:
            t.join(timeout=0.05)
        psutil.wait_procs(children, timeout=0.05)


def _children() -> list[psutil.Process]:
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A real mosquitto with the project's development config, on a free port, for one test."""
    b = Broker(workdir=tmp_path / "broker")
    b.workdir.mkdir()
    with b:
        yield b


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(autouse=True)
def _structlog_config_per_test() -> Iterator[None]:
    """A command-line main() run in one test configures structlog onto that test's captured stdout;
    put the previous configuration back so no later test writes to a closed file."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
