"""The report that opened the kiosk issue, with real processes: the daemon is killed, someone presses,
the daemon comes back later. The board held the press and sends it on HELLO; the daemon voids it (no
video, no kit) and says so. Nothing of the killed daemon's player is left behind, and none in /tmp."""

from __future__ import annotations

from pathlib import Path

import psutil

from controller.cli import make_clip
from controller.ledger import read_census
from tests.controller.procs import SimBoardProcess, UnitProcess, unit_config, wait_until


def count(ledger: Path, kind: str) -> int:
    return read_census(ledger).events.get(kind, 0)


def mpv_socket_dirs(unit: UnitProcess) -> list[Path]:
    assert unit.proc is not None
    wait_until("the unit's mpv", lambda: psutil.Process(unit.proc.pid).children(), 20)  # type: ignore[union-attr]
    out = []
    for child in psutil.Process(unit.proc.pid).children():
        for arg in child.cmdline():
            if arg.startswith("--input-ipc-server="):
                out.append(Path(arg.split("=", 1)[1]).parent)
    return out


def test_press_while_daemon_killed_is_void_after_restart(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", 1.0)
    board = SimBoardProcess(tmp_path, "--seed", "5")
    unit = UnitProcess(unit_config(tmp_path, board.link, {"en": clip, "es": clip}), tmp_path)
    ledger = tmp_path / "unit" / "ledger.sqlite3"
    run_dir = tmp_path / "unit" / "run"
    try:
        board.ctl(cmd="temp", c=22.0)
        unit.start()
        [first_dir] = mpv_socket_dirs(unit)
        assert first_dir.parent == run_dir, "mpv's socket lives in the daemon's runtime dir, not /tmp"
        unit.kill9()
        board.ctl(cmd="press", lang="es")  # nobody listens: the board keeps retrying it
        unit.start()
        wait_until("the held press to be voided", lambda: b"press_void" in unit.log_bytes(), 20)
        assert count(ledger, "video") == 0 and count(ledger, "dispense") == 0
        assert board.stats_cli()["dropped"] == 0
        [second_dir] = mpv_socket_dirs(unit)
        assert sorted(run_dir.iterdir()) == [second_dir], "the killed daemon's player folder is removed"
        board.ctl(cmd="press", lang="es")  # a person pressing now gets the video
        wait_until("a video for a fresh press", lambda: count(ledger, "video") >= 1, 20)
        assert unit.terminate() == 0
        assert not run_dir.exists() or list(run_dir.iterdir()) == [], "a clean stop leaves nothing"
    finally:
        if unit.proc is not None and unit.proc.poll() is None:
            unit.kill9()
        board.stop()
