"""systemd notify: READY=1 once serving, WATCHDOG=1 pings at half WATCHDOG_USEC, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.cli import make_clip
from controller.sdnotify import Notifier
from tests.controller.procs import SimBoardProcess, UnitProcess, unit_config


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    folder = tempfile.mkdtemp(prefix="nalox-sd-")  # short path: unix socket names are limited
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.5)
    yield sock, path
    sock.close()
    shutil.rmtree(folder)


def receive(sock: socket.socket, wanted: str, timeout: float) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
        if any(wanted in m for m in got):
            return got
    raise AssertionError(f"expected {wanted!r} on NOTIFY_SOCKET within {timeout}s, found {got}")


def test_notifier_without_systemd_does_nothing() -> None:
    n = Notifier(environ={})
    assert not n.enabled and n.watchdog_interval_s is None and n.ready() is False


def test_watchdog_interval_is_half_and_only_for_our_pid() -> None:
    assert Notifier(environ={"WATCHDOG_USEC": "4000000"}).watchdog_interval_s == 2.0
    assert Notifier(environ={"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}).watchdog_interval_s is None
    assert Notifier(environ={"NOTIFY_SOCKET": "@abstract"}).address == "\0abstract"


def test_unit_run_under_systemd_protocol(tmp_path: Path, notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    clip = make_clip(tmp_path / "clip.mp4", 1.0)
    board = SimBoardProcess(tmp_path, "--spin-ms", "5")
    unit = UnitProcess(unit_config(tmp_path, board.link, {"en": clip, "es": clip}), tmp_path)
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"}
    try:
        unit.start(env)
        assert any(m.startswith("READY=1") for m in receive(sock, "READY=1", 20))
        pings = receive(sock, "WATCHDOG=1", 5)
        pings += receive(sock, "WATCHDOG=1", 5)
        assert sum(m == "WATCHDOG=1" for m in pings) >= 2, "the loop keeps pinging the watchdog"
        assert unit.terminate() == 0
        assert "STOPPING=1" in receive(sock, "STOPPING=1", 5)
    finally:
        if unit.proc is not None and unit.proc.poll() is None:
            unit.kill9()
        board.stop()
