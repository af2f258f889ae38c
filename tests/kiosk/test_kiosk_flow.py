"""The person at the machine, on fakes with an injected clock: their language on every screen, kits for
the person (another kit inside the window, not after; the next person watches the video), the
emergency kit at once, out of stock said before any video."""

from __future__ import annotations

from collections import deque
from pathlib import Path

from controller.fakes import FakeBoard
from controller.kiosk import i18n
from controller.kiosk import messages as m
from tests.controller.conftest import Rig, make_config

ES = i18n.pack("es")


def rig(tmp_path: Path, board: FakeBoard | None = None, **sections: object) -> Rig:
    policies = {"status_poll_s": 30.0, "another_kit_window_s": 20.0, "kits_per_session": 5}
    policies.update(sections.pop("policies", {}))  # type: ignore[call-overload]
    return Rig(tmp_path, make_config(tmp_path, policies=policies, **sections), board)


def vias(r: Rig) -> list[str]:
    return [e.via for e in r.events("dispense")]


def test_spanish_speaker_gets_spanish_on_every_screen(tmp_path: Path) -> None:
    with rig(tmp_path) as r:
        start = len(r.daemon.kiosk.shown)
        r.press("es")
        assert r.player.texts[-1].startswith(ES.gettext(m.WATCH_VIDEO))
        r.complete()
        assert r.player.texts[-1].startswith(ES.gettext(m.TAKE_KIT))
        r.clock.advance(5)
        r.press("en")  # "another kit" with whatever button: still the person's language
        assert r.player.texts[-1].startswith(ES.gettext(m.TAKE_KIT))
        assert ES.gettext(m.KITS_TAKEN, number=2, limit=5) in r.player.texts[-1]
        for c in range(1, 7):
            r.board.script[c] = deque(["jammed"])
        r.clock.advance(5)
        r.press("en")
        assert r.daemon.kiosk.screen == "vend_failed"
        assert r.player.texts[-1].startswith(ES.gettext(m.VEND_FAILED))
        person = r.daemon.kiosk.shown[start:]
        assert {lang for _screen, lang in person} == {"es"}, person
        assert [s for s, _ in person] == [
            "video",
            "dispensing",
            "take_kit",
            "dispensing",
            "take_kit",
            "dispensing",
            "vend_failed",
        ]


def test_another_kit_inside_the_window_not_after(tmp_path: Path) -> None:
    with rig(tmp_path) as r:
        r.press("en")
        r.complete()
        r.clock.advance(19)
        r.press("en")
        assert vias(r) == ["video", "extra"] and len(r.player.plays) == 1
        r.clock.advance(21)  # 21 s after the last kit: the window is closed
        r.daemon.pump()
        r.press("en")
        assert vias(r) == ["video", "extra"], "no kit without the video after the window"
        assert len(r.player.plays) == 2 and r.daemon.kiosk.screen == "video"


def test_cap_per_person_then_the_video_again(tmp_path: Path) -> None:
    with rig(tmp_path, policies={"kits_per_session": 3}) as r:
        r.press("es")
        r.complete()
        for _ in range(4):
            r.clock.advance(2)
            r.press("es")
        assert vias(r) == ["video", "extra", "extra"]
        assert len(r.player.plays) == 2, "the fourth press after three kits starts a new video"


def test_next_person_must_watch_the_video(tmp_path: Path) -> None:
    with rig(tmp_path) as r:
        r.press("en")
        r.complete()
        r.clock.advance(25)
        r.daemon.pump()
        assert r.daemon.kiosk.screen == "idle"
        r.press("es")
        assert len(r.events("dispense")) == 1 and r.player.plays[-1][0].name == "es.mp4"
        r.complete()
        assert vias(r) == ["video", "video"]


def test_emergency_long_press_gives_one_kit_at_once(tmp_path: Path) -> None:
    with rig(tmp_path) as r:
        r.board.press("es", long=True)
        r.daemon.pump()
        assert vias(r) == ["emergency"] and r.player.plays == []
        assert r.board.stats()["dropped"] == 1
        assert ("emergency", "es") in r.daemon.kiosk.shown
        assert r.player.texts[-1].startswith(ES.gettext(m.EMERGENCY))
        r.press("es")  # a plain press afterwards: the video, no kit session from the emergency
        assert len(r.player.plays) == 1 and r.board.stats()["dropped"] == 1
        r.clock.advance(40)
        r.daemon.pump()


def test_emergency_button_by_index_and_off_by_config(tmp_path: Path) -> None:
    with rig(tmp_path, kiosk={"buttons": ["en", "es", "emergency"]}) as r:
        r.board.press("en", index=2)  # protocol v2 boards report the button's index
        r.daemon.pump()
        assert vias(r) == ["emergency"]
    with rig(tmp_path / "off", policies={"emergency": False}) as off:
        said = len(off.daemon.kiosk.speaker.said)
        off.board.press("en", long=True)
        off.daemon.pump()
        assert vias(off) == [] and off.player.plays == [], "turned off: no kit from a long press"
        assert len(off.daemon.kiosk.speaker.said) == said + 1, "... it says the screen again"


def test_emergency_during_a_video_stops_it_and_gives_the_kit(tmp_path: Path) -> None:
    with rig(tmp_path) as r:
        r.press("en")
        r.board.press("en", long=True)
        r.daemon.pump()
        assert [e.phase for e in r.events("video")] == ["started", "abandoned"]
        assert vias(r) == ["emergency"]


def test_out_of_stock_before_any_video(tmp_path: Path) -> None:
    cols = [{"column": 1, "product": "nasal-4mg", "capacity": 30, "initial_stock": 0}]
    r = rig(
        tmp_path,
        FakeBoard(columns=1, stock=0),
        columns=cols,
        kiosk={"access_points": [{"name": "County Health Clinic", "phone": "555-0100"}]},
    )
    try:
        r.press("es")
        assert r.player.plays == [] and r.daemon.kiosk.screen == "out_of_stock"
        assert r.player.texts[-1].startswith(ES.gettext(m.OUT_OF_STOCK))
        assert "County Health Clinic" in r.player.texts[-1] or "County Health Clinic" in str(
            r.daemon.kiosk.current.spec
        )
        r.clock.advance(31)  # the offer lapsed: back to idle; the next press is told again
        r.daemon.pump()
        assert r.daemon.kiosk.screen == "idle"
        r.press("en")
        assert r.player.plays == [] and len(r.events("out_of_stock")) == 2
    finally:
        r.close()


def test_repeat_button_and_long_press_on_a_screen_say_it_again(tmp_path: Path) -> None:
    with rig(tmp_path, kiosk={"buttons": ["en", "es", "repeat"]}) as r:
        speaker = r.daemon.kiosk.speaker
        r.press("es")
        r.complete()
        said = list(speaker.said)
        r.board.press("en", index=2)
        r.daemon.pump()
        assert speaker.said[-1] == said[-1] and len(speaker.said) == len(said) + 1
        r.board.press("es", long=True)  # a long press on the take-kit screen repeats, it is no emergency
        r.daemon.pump()
        assert vias(r) == ["video"] and speaker.said[-1] == said[-1]


def test_out_of_service_screen_for_ledger_down_and_door(tmp_path: Path) -> None:
    with rig(tmp_path) as r:
        r.daemon.kiosk.set_out_of_service("ledger", "ledger_down")  # the API for the ledger's owner
        assert r.daemon.kiosk.screen == "out_of_service"
        assert ES.gettext(m.REASON_LEDGER) not in r.player.texts[-1]  # default language: English
        assert "cannot keep its records" in r.player.texts[-1]
        r.daemon.kiosk.set_out_of_service("ledger", None)
        assert r.daemon.kiosk.screen == "idle"
        r.board.set_door(True)
        r.daemon.pump()
        assert r.daemon.kiosk.screen == "out_of_service"
        r.press("es")
        assert r.player.texts[-1].startswith(ES.gettext(m.OUT_OF_SERVICE)), "told, never a silent refusal"
        r.board.set_door(False)
        r.daemon.pump()
        assert r.daemon.kiosk.screen == "idle"


def test_status_light_follows_the_unit(tmp_path: Path) -> None:
    with rig(tmp_path) as r:
        assert r.board.light_pattern == "lit", "ready"
        r.press("en")
        assert r.board.light_pattern == "blinking", "busy: a person's video"
        r.complete()
        r.daemon.pump()
        assert r.board.light_pattern == "lit"
        r.board.set_door(True)
        r.daemon.pump()
        assert r.board.light_pattern == "off", "cannot vend"


def test_broken_player_fallback_kit_is_told_to_take_it(tmp_path: Path) -> None:
    with rig(tmp_path) as r:
        r.press("es")
        r.player.fail("crash")
        r.daemon.pump()
        assert vias(r) == ["fallback"] and r.daemon.kiosk.screen == "take_kit"
        assert r.player.texts[-1].startswith(ES.gettext(m.TAKE_KIT))
        assert "segundos" not in r.player.texts[-1], "no 'another kit' offer without a video watched"


def test_board_down_is_out_of_service_and_a_press_is_told_so(tmp_path: Path) -> None:
    with rig(tmp_path) as r:
        r.board.link_down = True
        r.clock.advance(31)  # the next status poll finds no board
        r.daemon.pump()
        assert r.daemon.kiosk.screen == "out_of_service"
        assert "cannot reach its dispenser" in r.player.texts[-1]
        r.press("es")
        assert r.player.plays == [], "no video for a kit that cannot drop"
        assert r.player.texts[-1].startswith(ES.gettext(m.OUT_OF_SERVICE))
        assert ES.gettext(m.REASON_BOARD) in r.player.texts[-1]
        r.board.link_down = False
        r.clock.advance(31)
        r.daemon.pump()
        assert r.daemon.kiosk.screen == "idle"
        r.press("es")
        assert len(r.player.plays) == 1
