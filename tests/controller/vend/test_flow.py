"""Vend flow on a FakeBoard and FakePlayer with a FakeClock: the gate, window, FEFO, jams, door, stock."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from controller.fakes import FakeBoard
from controller.serial.board_api import DoorChanged
from tests.controller.conftest import Rig, lot_rig, make_config


def test_first_start_records_initial_stock_as_restock_events(rig: Rig) -> None:
    restocks = rig.events("restock")
    assert [e.source for e in restocks] == ["initial"] * 6
    assert {e.column: e.stock_after for e in restocks} == {c: 20 for c in range(1, 7)}
    assert rig.daemon.mode == "vending"


def test_kit_only_after_video_completes(rig: Rig) -> None:
    rig.press("es")
    assert rig.player.plays and rig.player.plays[0][0].name == "es.mp4"
    assert rig.board.stats()["dropped"] == 0, "no kit may drop before the clip ends"
    rig.complete()
    [dispense] = rig.events("dispense")
    assert dispense.via == "video" and dispense.language == "es" and dispense.doses == 2
    assert rig.board.stats()["dropped"] == 1
    assert [e.phase for e in rig.events("video")] == ["started", "completed"]


def test_presses_during_video_are_ignored(rig: Rig) -> None:
    rig.press()
    rig.press()
    rig.press("es")
    assert len(rig.player.plays) == 1
    rig.complete()
    assert rig.board.stats()["dropped"] == 1


def test_fefo_picks_earliest_expiry_then_skips_expired(tmp_path: Path) -> None:
    with lot_rig(tmp_path, 5, ("LATE", "2029-01-01"), ("EXPIRED", "2020-01-01"), ("SOON", "2027-01-01")) as r:
        r.press()
        r.complete()
        assert r.events("dispense")[0].lot == "SOON"
        assert r.daemon.ledger.alarm_active("lot_expired_2")
        assert r.daemon.ledger.column(2).stock == 5


def test_window_dispenses_without_replaying_video(rig: Rig) -> None:
    rig.press()
    rig.complete()
    rig.clock.advance(30)
    rig.press()
    assert len(rig.player.plays) == 1
    assert [e.via for e in rig.events("dispense")] == ["video", "extra"]  # "another kit", counted apart
    rig.clock.advance(61)  # the same person's window of 60 s after their last kit is over
    rig.press()
    assert len(rig.player.plays) == 2
    assert len(rig.events("dispense")) == 2


def test_window_zero_replays_every_time(tmp_path: Path) -> None:
    r = Rig(tmp_path, make_config(tmp_path, policies={"multi_kit_window_s": 0}))
    try:
        r.press()
        r.complete()
        r.press()
        assert len(r.player.plays) == 2 and len(r.events("dispense")) == 1
    finally:
        r.close()


def test_abandonment_after_length_plus_grace(rig: Rig) -> None:
    rig.press()
    rig.clock.advance(3.0 + 10.0 + 0.1)
    rig.daemon.pump()
    assert [e.phase for e in rig.events("video")] == ["started", "abandoned"]
    assert rig.board.stats()["dropped"] == 0
    rig.player.token = None
    rig.press()  # a new press starts a fresh video
    assert len(rig.player.plays) == 2


def test_late_completion_of_abandoned_clip_is_ignored(rig: Rig) -> None:
    rig.press()
    token = rig.player.token
    rig.clock.advance(14)
    rig.daemon.pump()
    rig.player.token = token
    rig.player.complete()
    rig.daemon.pump()
    assert rig.board.stats()["dropped"] == 0 and not rig.events("dispense")


def test_player_failure_falls_back_to_dispense_with_alarm(rig: Rig) -> None:
    rig.press()
    rig.player.fail("crash")
    rig.daemon.pump()
    [d] = rig.events("dispense")
    assert d.via == "fallback"
    assert rig.events("video")[-1].phase == "failed" and "crash" in (rig.events("video")[-1].detail or "")
    assert rig.daemon.ledger.alarm_active("video_player")


def test_player_failure_with_block_fallback_gives_nothing(tmp_path: Path) -> None:
    r = Rig(tmp_path, make_config(tmp_path, videos={"fallback": "block"}))
    try:
        r.press()
        r.player.fail("missing_file")
        r.daemon.pump()
        assert not r.events("dispense") and r.board.stats()["dropped"] == 0
        assert r.daemon.ledger.alarm_active("video_player")
        assert r.daemon.kiosk.screen == "video_broken"
        assert any("ask the release desk staff" in t for t in r.player.texts)
    finally:
        r.close()


def test_jam_faults_column_and_retries_with_new_command_id(rig: Rig) -> None:
    from collections import deque

    rig.board.script[1] = deque(["jammed"])  # column 1 has the earliest expiry
    rig.press()
    rig.complete()
    [d] = rig.events("dispense")
    assert d.column == 2
    first = [c for c in rig.board.journal if rig.board.journal[c].column == 1]
    assert first and first[0] != d.command_id
    assert rig.daemon.ledger.column(1).fault == "jammed"
    assert rig.daemon.ledger.alarm_active("column_fault_1")


def test_every_column_failing_records_vend_failed(rig: Rig) -> None:
    from collections import deque

    for c in range(1, 7):
        rig.board.script[c] = deque(["jammed"])
    rig.press()
    rig.complete()
    [f] = rig.events("vend_failed")
    assert f.reason == "all_columns_failed" and len(f.attempts) == 3
    assert len({a.command_id for a in f.attempts}) == 3
    assert rig.daemon.ledger.alarm_active("vend_failed")
    assert rig.board.stats()["dropped"] == 0


def test_out_of_stock_says_where_before_any_video_and_offers_it(tmp_path: Path) -> None:
    cols = [{"column": 1, "product": "nasal-4mg", "capacity": 30, "initial_stock": 0}]
    msg = "Out of naloxone: try the county health office."
    r = Rig(
        tmp_path,
        make_config(tmp_path, columns=cols, policies={"out_of_stock_message": msg}),
        FakeBoard(columns=1, stock=0),
    )
    try:
        r.press()
        assert not r.player.plays, "no video before the person learns there is no kit"
        assert r.daemon.kiosk.screen == "out_of_stock"
        assert len(r.events("out_of_stock")) == 1
        assert r.player.texts[-1].startswith(msg)
        assert r.daemon.ledger.alarm_active("out_of_stock")
        r.press()  # "watch the training anyway"
        assert len(r.player.plays) == 1
        r.complete()
        assert r.board.stats()["dropped"] == 0 and not r.events("dispense")
        assert [e.phase for e in r.events("video")] == ["started", "completed"]
        assert r.daemon.kiosk.screen == "out_of_stock"
    finally:
        r.close()


def test_door_open_is_service_mode_until_close_and_self_test(rig: Rig) -> None:
    rig.board.set_door(True)
    rig.daemon.pump()
    assert rig.daemon.mode == "service"
    rig.press()
    assert not rig.player.plays
    rig.board.set_door(False)
    rig.daemon.pump()
    assert rig.daemon.mode == "vending"
    assert [e.open for e in rig.events("door")] == [True, False]


def test_door_open_during_video_abandons(rig: Rig) -> None:
    rig.press()
    rig.board.set_door(True)
    rig.daemon.pump()
    assert rig.events("video")[-1].phase == "abandoned"


def test_self_test_failure_keeps_service_mode(rig: Rig) -> None:
    rig.board.set_door(True)
    rig.daemon.pump()
    rig.board.link_down = True
    rig.board.door_open = False
    rig.daemon._on_board_event(DoorChanged(False))  # the board's event arrives; its status does not
    rig.daemon.pump()
    assert rig.daemon.mode == "service" and rig.daemon.ledger.alarm_active("self_test_failed")


def test_temperature_bands_and_excursion_time_per_lot(rig: Rig) -> None:
    rig.board.temperature_c = 27.0
    rig.clock.advance(31)
    rig.daemon.pump()
    rig.board.temperature_c = 45.0
    rig.clock.advance(31)
    rig.daemon.pump()
    assert rig.daemon.ledger.alarm_active("temperature_excursion")
    rig.board.temperature_c = 22.0
    rig.clock.advance(31)
    rig.daemon.pump()
    assert not rig.daemon.ledger.alarm_active("temperature_excursion")
    temps = [(e.band, e.state) for e in rig.events("temperature")]
    assert temps == [
        ("storage", "entered"),
        ("excursion", "entered"),
        ("excursion", "left"),
        ("storage", "left"),
    ]
    assert rig.daemon.ledger.excursions()["LOT-1"] == 31.0


def test_restock_blind_count_needs_reason_on_discrepancy(rig: Rig) -> None:
    import pytest

    from controller.daemon import CommandRefused

    with pytest.raises(CommandRefused, match="differs from the ledger's 20; expected a reason"):
        rig.daemon.restock(1, 30, counted_before=18)
    ev = rig.daemon.restock(
        1, 30, counted_before=18, reason="two kits missing", lot="NEW", expiry=date(2030, 1, 1)
    )
    assert ev.discrepancy == -2 and ev.added == 12 and ev.stock_after == 30
    # the 18 kits found stay in front (their lot is the next to drop); the 12 new ones load behind
    assert rig.daemon.ledger.column(1).stock == 30 and rig.daemon.ledger.column(1).lot == "LOT-1"
    assert [(s.lot, s.count) for s in rig.daemon.ledger.segments(1)] == [("LOT-1", 18), ("NEW", 12)]


def test_snapshot_state_and_telemetry_validate(rig: Rig) -> None:
    state = rig.daemon.snapshot_state()
    assert state.mode == "vending" and len(state.columns) == 6 and state.last_seq == 6
    assert rig.daemon.telemetry().outbox_depth == 6


def test_board_fault_alarm_cleared_by_service(rig: Rig) -> None:
    from controller.serial.board_api import BoardFault

    rig.daemon._on_board_event(BoardFault("jam", 2, "jammed at 1800 mA"))
    rig.daemon.pump()
    assert rig.daemon.ledger.alarm_active("board_fault_jam_2")
    rig.board.set_door(True)
    rig.board.set_door(False)
    rig.daemon.pump()
    assert not rig.daemon.ledger.alarm_active("board_fault_jam_2")
    assert rig.daemon.mode == "vending"


def test_commands_lock_unlock_test_vend_and_refusals(rig: Rig) -> None:
    from datetime import UTC, datetime

    import pytest

    from controller.daemon import CommandRefused
    from schemas.models import LockCommand, RebirthCommand, TestVendCommand, UnlockCommand

    now = datetime.now(UTC)
    assert rig.daemon.run_command(LockCommand(command_id="a", issued_at=now)).model_dump()["mode"] == "locked"
    rig.press()
    assert not rig.player.plays, "a locked unit does not vend"
    assert (
        rig.daemon.run_command(UnlockCommand(command_id="b", issued_at=now)).model_dump()["mode"] == "vending"
    )
    with pytest.raises(CommandRefused, match="test_vend needs service mode"):
        rig.daemon.run_command(TestVendCommand(command_id="c0", issued_at=now, column=3))
    assert not rig.events("dispense"), "a refused remote test vend drops nothing"
    rig.daemon.run_command(LockCommand(command_id="a2", issued_at=now))
    result = rig.daemon.run_command(TestVendCommand(command_id="c", issued_at=now, column=3)).model_dump()
    assert result["outcome"] == "dropped" and rig.events("dispense")[0].via == "test"
    with pytest.raises(CommandRefused, match="expected a configured column, found column 9"):
        rig.daemon.run_command(TestVendCommand(command_id="d", issued_at=now, column=9))
    with pytest.raises(CommandRefused, match="the unit daemon carries out .* found 'rebirth'"):
        rig.daemon.run_command(RebirthCommand(command_id="e", issued_at=now))  # the reporter's command


def test_link_failure_mid_dispense_is_settled_later_never_doubled(rig: Rig) -> None:
    rig.press()
    real_dispense = rig.board.dispense

    def dispense_then_lose_link(cid: int, col: int):  # type: ignore[no-untyped-def]
        real_dispense(cid, col)  # the kit drops, the reply is lost
        rig.board.link_down = True
        from controller.serial.board_api import BoardTimeout

        raise BoardTimeout(f"reply to {cid} lost")

    rig.board.dispense = dispense_then_lose_link  # type: ignore[method-assign, assignment]
    rig.complete()
    assert rig.board.stats()["dropped"] == 1
    assert not rig.events("dispense") and rig.daemon.ledger.pending_commands()
    assert rig.daemon.ledger.alarm_active("board_unreachable")
    assert rig.events("vend_failed")[-1].reason == "board_unreachable"
    rig.board.link_down = False
    rig.clock.advance(31)  # next status poll reconciles
    rig.daemon.pump()
    assert len(rig.events("dispense")) == 1 and not rig.daemon.ledger.pending_commands()
    assert rig.board.stats()["dropped"] == 1, "no other column was tried while the outcome was unknown"
    assert not rig.daemon.ledger.alarm_active("board_unreachable")


def test_messages_in_the_persons_language(tmp_path: Path) -> None:
    cols = [{"column": 1, "product": "nasal-4mg", "capacity": 30, "initial_stock": 0}]
    msgs = {"en": "Out of naloxone.", "es": "No hay naloxona."}
    r = Rig(
        tmp_path,
        make_config(tmp_path, columns=cols, policies={"out_of_stock_message": msgs}),
        FakeBoard(columns=1, stock=0),
    )
    try:
        r.press("es")
        assert r.player.texts[-1].startswith("No hay naloxona.")
        assert r.config.policies.text("out_of_stock", "fr") == "Out of naloxone."
        assert r.config.policies.text("thank_you", "es") is None  # no county text: the Spanish pack
        r.board.stock[1] = 1
        r.daemon.restock(1, 1)
        r.clock.advance(31)  # the offer to watch anyway is over: a new press is a new person
        r.press("es")
        r.complete()
        assert r.daemon.kiosk.screen == "take_kit"
        assert r.player.texts[-1].startswith("Tome su kit de la bandeja de abajo.")
    finally:
        r.close()


def test_door_close_without_self_test_when_configured_off(tmp_path: Path) -> None:
    r = Rig(tmp_path, make_config(tmp_path, policies={"self_test_on_close": False}))
    try:
        r.board.set_door(True)
        r.daemon.pump()
        r.board.link_down = True  # a self-test would fail now
        r.daemon._on_board_event(DoorChanged(False))
        r.daemon.pump()
        assert r.daemon.mode == "vending"
    finally:
        r.board.link_down = False
        r.close()
