"""`nalox diag ping` against a scripted board on a real pty: output, JSON, exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.diag import cli, ping
from tests.controller.serial.pty_board import PtyPeer, Script


@pytest.fixture
def peer() -> Iterator[PtyPeer]:
    with PtyPeer() as p:
        yield p


def test_ping_prints_each_round_trip_and_a_summary(peer: PtyPeer, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--port", peer.path, "ping", "--count", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out[:3]] == ["ping 1", "ping 2", "ping 3"]
    assert all("pong in" in line and line.endswith(" ms") for line in out[:3])
    assert out[3].startswith("3 sent, 3 received, 0 lost; rtt p50 ")
    assert out[4].startswith("link: frames_sent=") and "crc_errors=0" in out[4]


def test_ping_json(peer: PtyPeer, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--port", peer.path, "ping", "--count", "5", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] is True and summary["board_id"] == "peer-board"
    assert (summary["sent"], summary["received"], summary["lost"]) == (5, 5, 0)
    assert 0 < summary["rtt_ms"]["p50"] <= summary["rtt_ms"]["p99"] <= summary["rtt_ms"]["max"]
    assert summary["link"]["frames_received"] >= 6 and summary["link"]["crc_errors"] == 0


def test_ping_fails_clearly_when_the_board_does_not_answer(capsys: pytest.CaptureFixture[str]) -> None:
    with PtyPeer(Script(silent=True)) as p:
        code = cli.main(["--port", p.path, "ping", "--count", "1", "--timeout", "0.5"])
    assert code == 1
    err = capsys.readouterr().err
    assert "no session with the board" in err and "expected an ACK" in err


def test_ping_fails_clearly_when_the_port_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--port", str(tmp_path / "nothing"), "ping", "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["ok"] is False
    assert "could not open" in captured.err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ping"]) == 2
    assert cli.main(["--port", "/dev/null", "ping", "--count", "0"]) == 2
    assert "expected at least 1, got 0" in capsys.readouterr().err


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))
    assert ping.percentile(values, 50) == 50 and ping.percentile(values, 99) == 99
    assert ping.percentile([7.0], 99) == 7.0
