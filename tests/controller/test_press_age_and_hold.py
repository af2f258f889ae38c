"""Protocol 2 presses carry their age (as each copy leaves the board) and how long they were held. The
firmware's own link frames the press here (tests/firmware's bench board, its clock driven by the test),
the controller's SerialBoard decoder turns the frame into the event, and the unit daemon (injected
clock) decides: too old -> void; held kiosk.long_press_ms or more -> the long-press action; else the
video."""

from __future__ import annotations

from pathlib import Path

from controller.fakes import FakeBoard
from controller.serial import board_link
from controller.serial.board_api import ButtonPressed
from firmware_py import codec
from tests.controller.conftest import Rig, make_config
from tests.firmware.harness import Bench


def board_press(hold_ms: int, unacked_ms: int, button: int = 0) -> ButtonPressed:
    """A v2 board: `button` held `hold_ms`, then the controller does not ACK for `unacked_ms` (its port
    closed and reopened, the daemon running all along); the copy that gets through, as SerialBoard
    decodes it."""
    bench = Bench()
    bench.step(3)
    bench.send(codec.Hello(2))
    bench.run_until(lambda g: any(isinstance(m, codec.HelloReply2) for m in g))
    bench.hal.button_pins[button].value(1)
    bench.step(hold_ms // 10, advance_ms=10)
    bench.hal.button_pins[button].value(0)
    bench.auto_ack = False
    bench.step(max(unacked_ms // 10, 6), advance_ms=10)
    bench.auto_ack = True
    copies = [m for m in bench.step(15, advance_ms=100) if isinstance(m, codec.Button2)]
    assert copies, "the board resends its press until acknowledged"
    return board_link._board_event(copies[-1])  # type: ignore[return-value]


def rig(tmp_path: Path, **policies: object) -> Rig:
    return Rig(tmp_path, make_config(tmp_path, policies={"status_poll_s": 30.0, **policies}), FakeBoard())


def test_press_held_by_the_board_through_a_port_reopen_is_void(tmp_path: Path) -> None:
    event = board_press(hold_ms=150, unacked_ms=30_000)
    assert event.age_s is not None and 30.0 <= event.age_s <= 32.0 and event.hold_ms == 150
    with rig(tmp_path) as r:
        r.board._on_event(event)  # arrives now: only the board's age says it is 30 s old
        r.daemon.pump()
        assert r.events("video") == [] and r.events("dispense") == [] and r.player.plays == []
        assert "not counted" in r.player.texts[-1]
        r.board._on_event(board_press(hold_ms=150, unacked_ms=0))  # a person there now is served
        r.daemon.pump()
        assert [v.phase for v in r.events("video")] == ["started"]


def test_long_press_gives_one_emergency_kit(tmp_path: Path) -> None:
    event = board_press(hold_ms=1600, unacked_ms=0, button=1)
    assert event.hold_ms is not None and event.hold_ms >= 1500 and event.age_s is not None and event.age_s < 1
    with rig(tmp_path) as r:
        r.board._on_event(event)
        r.daemon.pump()
        assert [e.via for e in r.events("dispense")] == ["emergency"] and r.player.plays == []
        assert r.board.stats()["dropped"] == 1
        assert ("emergency", "es") in r.daemon.kiosk.shown


def test_long_press_with_emergency_off_repeats_the_speech(tmp_path: Path) -> None:
    with rig(tmp_path, emergency=False) as r:
        speaker = r.daemon.kiosk.speaker
        before = len(speaker.said)
        r.board._on_event(board_press(hold_ms=1600, unacked_ms=0))
        r.daemon.pump()
        assert r.events("dispense") == [] and r.player.plays == [] and r.events("video") == []
        assert len(speaker.said) == before + 1, "the screen is said again"


def test_short_press_plays_the_video(tmp_path: Path) -> None:
    event = board_press(hold_ms=200, unacked_ms=0)
    assert event.hold_ms is not None and event.hold_ms < 1500
    with rig(tmp_path) as r:
        r.board._on_event(event)
        r.daemon.pump()
        assert [v.phase for v in r.events("video")] == ["started"] and len(r.player.plays) == 1
        assert r.events("dispense") == []
        r.complete()
        assert [e.via for e in r.events("dispense")] == ["video"]


def test_long_press_threshold_is_the_unit_config(tmp_path: Path) -> None:
    r = Rig(tmp_path, make_config(tmp_path, policies={"status_poll_s": 30.0}, kiosk={"long_press_ms": 3000}),
            FakeBoard())
    try:
        r.board._on_event(ButtonPressed("en", index=0, age_s=0.1, hold_ms=2000))
        r.daemon.pump()
        assert r.events("dispense") == [] and len(r.player.plays) == 1, "2 s is no long press at 3 s"
    finally:
        r.close()


def test_long_press_configured_to_repeat_says_the_screen_again(tmp_path: Path) -> None:
    r = Rig(tmp_path, make_config(tmp_path, policies={"status_poll_s": 30.0}, kiosk={"long_press": "repeat"}),
            FakeBoard())
    try:
        said = len(r.daemon.kiosk.speaker.said)
        r.board._on_event(ButtonPressed("en", index=0, age_s=0.1, hold_ms=1600))
        r.daemon.pump()
        assert r.events("dispense") == [] and r.player.plays == []
        assert len(r.daemon.kiosk.speaker.said) == said + 1
    finally:
        r.close()
