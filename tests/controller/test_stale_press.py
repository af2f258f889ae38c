"""A press belongs to the person at the machine now: a press the board held while the daemon was down,
or one that waited too long, plays no video and drops no kit, and the screen says it was not counted."""

from __future__ import annotations

from pathlib import Path

from controller.serial.board_api import ButtonPressed
from tests.controller.conftest import Rig


def test_press_held_while_daemon_down_is_void_after_restart(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    try:
        r.daemon.stop()  # the daemon is killed ...
        r.board.press_while_down("es")  # ... someone presses, gives up and walks away
        r.clock.advance(30)  # the daemon comes back 30 s later
        r.restart()
        assert r.player.texts[-1].startswith("Esa pulsación no se contó")  # told, in their language
        r.clock.advance(60)
        r.daemon.pump()
        assert r.events("video") == [] and r.events("dispense") == []
        assert r.player.plays == []
        assert r.daemon.kiosk.screen == "idle"
        r.press("en")  # a person standing there now is served
        assert [v.phase for v in r.events("video")] == ["started"]
    finally:
        r.close()


def test_press_with_board_reported_age_is_void(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    try:
        r.board.press("en", age_s=30.0)  # a v2 board stamps each press with its age
        assert r.events("video") == [] and r.player.plays == []
        r.board.press("en", age_s=0.2)
        r.daemon.pump()
        assert len(r.events("video")) == 1
    finally:
        r.close()


def test_press_that_waited_in_the_queue_is_void(tmp_path: Path) -> None:
    r = Rig(tmp_path)
    try:
        r.board._on_event(ButtonPressed("en"))
        r.clock.advance(r.config.policies.press_max_age_s + 0.1)  # the loop was busy meanwhile
        r.daemon.pump()
        assert r.events("video") == [] and r.player.plays == []
        assert "not counted" in r.player.texts[-1]
    finally:
        r.close()
