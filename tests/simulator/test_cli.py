"""`nalox sim board` as its own process behind a real pty, driven by `nalox sim ctl` and pyserial."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from firmware_py import codec
from simulator import cli
from tests.conftest import nalox
from tests.simulator.mini_controller import Peer
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sim_board(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    link = tmp_path / "dispenser"
    proc = subprocess.Popen(
        nalox("sim", "board", "--link", str(link), "--columns", "3", "--stock", "2", "--spin-ms", "5",
              "--state-dir", str(tmp_path / "state")),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: Path(f"{link}.ctl").exists() or proc.poll() is not None, 15, "the control socket")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        yield link, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def ctl(link: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(nalox("sim", "ctl", "--link", str(link), *args), cwd=ROOT, capture_output=True,
                          text=True, timeout=30)


def open_peer(link: Path) -> Peer:
    port = serial.serial_for_url(str(link), baudrate=115200, exclusive=True, timeout=0.02)
    return Peer(port)


def test_board_over_pty_survives_port_close_and_reopen(sim_board):
    link, proc = sim_board
    peer = open_peer(link)
    try:
        assert peer.hello().columns == 3
        assert peer.dispense(1, 1).outcome == codec.DROPPED
    finally:
        peer.close()
    peer = open_peer(link)
    try:
        peer.port.reset_input_buffer()
        assert peer.hello().boot_count == 1
        assert peer.dispense(1, 1).outcome == codec.DROPPED, "the journal answers, no second spin"
        assert peer.dispense(2, 1).outcome == codec.DROPPED
        assert peer.dispense(3, 1).outcome == codec.NO_DROP_DETECTED, "column 1 held 2 kits"
    finally:
        peer.close()
    stats = json.loads(ctl(link, "stats").stdout)
    assert stats["per_command"] == {"1": 1, "2": 1}
    assert stats["stock"] == {"1": 0, "2": 2, "3": 2}


def test_ctl_commands_reach_the_board(sim_board):
    link, proc = sim_board
    peer = open_peer(link)
    try:
        peer.hello()
        assert ctl(link, "press", "--lang", "es").returncode == 0
        assert peer.expect_type("Button2").index == 1
        assert ctl(link, "press", "--lang", "en", "--hold-ms", "1600").returncode == 0
        held = peer.expect_type("Button2")
        assert held.index == 0 and 1600 <= held.hold_ms < 2500, held
        assert ctl(link, "door", "open").returncode == 0
        assert peer.expect_type("Door") == codec.Door(1)
        assert ctl(link, "door", "close").returncode == 0
        assert ctl(link, "temp", "12.5").returncode == 0
        assert ctl(link, "stock", "2", "0").returncode == 0
        assert ctl(link, "fault", "jam=1@3").returncode == 0
        assert peer.dispense(10, 3).outcome == codec.JAMMED
        assert peer.dispense(11, 2).outcome == codec.NO_DROP_DETECTED
        assert ctl(link, "reboot").returncode == 0
        peer.expect(lambda m: m == codec.Boot(2, "sim_reboot"), what="BOOT after the reboot")
    finally:
        peer.close()
    stats = json.loads(ctl(link, "stats").stdout)
    assert stats["presses"] == 2 and stats["boots"] == 2 and stats["faults"] == {"jam": 1}
    assert stats["stock"]["2"] == 0 and stats["dropped"] == 0


def test_bad_ctl_requests_exit_non_zero_with_a_message(sim_board):
    link, proc = sim_board
    done = ctl(link, "fault", "gremlins=1")
    assert done.returncode == 1 and "expected one of jam" in done.stderr
    done = ctl(link, "stock", "9", "1")
    assert done.returncode == 1 and "expected 1..3, got 9" in done.stderr
    done = ctl(link, "door", "ajar")
    assert done.returncode == 2 and "expected open or close" in done.stderr
    done = ctl(link, "press", "--hold-ms", "200000")
    assert done.returncode == 2 and "expected --hold-ms in 0..120000, got 200000" in done.stderr


def test_sigterm_removes_link_and_socket_and_logs_json(sim_board):
    link, proc = sim_board
    assert link.is_symlink()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert not link.exists() and not Path(f"{link}.ctl").exists()
    assert proc.stdout is not None
    lines = [json.loads(line) for line in proc.stdout.read().splitlines()]
    assert {"board_boot", "board_ready", "board_stopped"} <= {line["event"] for line in lines}
    assert all("level" in line and "timestamp" in line for line in lines)


def test_ctl_without_a_board_says_so(tmp_path, capsys):
    assert cli.main(["ctl", "--link", str(tmp_path / "nothing"), "stats"]) == 2
    assert "expected a running `nalox sim board`" in capsys.readouterr().err


def test_ctl_argument_errors(tmp_path, capsys):
    assert cli.main(["ctl", "--link", str(tmp_path / "x"), "temp"]) == 2
    assert "expected degrees C, got nothing" in capsys.readouterr().err
    assert cli.main(["ctl", "--link", str(tmp_path / "x"), "fault", "jam=lots"]) == 2
    assert "expected a number P" in capsys.readouterr().err


def test_second_simulator_on_the_same_link_is_refused(sim_board):
    link, proc = sim_board
    done = subprocess.run(nalox("sim", "board", "--link", str(link)), cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2
    assert "another simulator is serving it" in done.stderr
    assert link.is_symlink() and json.loads(ctl(link, "stats").stdout)["boots"] == 1


def test_a_real_file_at_the_link_path_is_not_replaced(tmp_path):
    victim = tmp_path / "ttyUSB0"
    victim.write_text("not a pty")
    done = subprocess.run(nalox("sim", "board", "--link", str(victim)), cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2
    assert "found a real file" in done.stderr
    assert victim.read_text() == "not a pty"


def test_noisy_pty_every_result_matches_the_physical_truth(tmp_path):
    """5% of the bytes corrupted on the board's side of a real pty: each reported outcome is the
    physical truth and no command drops twice."""
    link = tmp_path / "noisy"
    proc = subprocess.Popen(
        nalox("sim", "board", "--link", str(link), "--columns", "4", "--stock", "50", "--spin-ms", "5",
              "--faults", "noise=0.05,jam=0.1", "--seed", "4", "--log-level", "warning"),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: Path(f"{link}.ctl").exists(), 15, "the control socket")
        peer = open_peer(link)
        try:
            results = {cid: peer.dispense(cid, 1 + cid % 4, timeout=3, attempts=5).outcome
                       for cid in range(1, 41)}
        finally:
            peer.close()
        stats = json.loads(ctl(link, "stats").stdout)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    dropped = {str(cid) for cid, outcome in results.items() if outcome == codec.DROPPED}
    assert set(stats["per_command"]) == dropped
    assert stats["double_drops"] == [] and stats["dropped"] == len(dropped)
    assert set(results.values()) <= {codec.DROPPED, codec.JAMMED}
    assert stats["link"]["naks_sent"] > 0 and stats["faults"]["jam"] > 0
