"""Invariant 8 at the unit: a column is a queue of lot segments; the kit that drops is the front
one's and its event says so; an expired front kit never vends (the column holds with an alarm until a
technician takes it out); a held lot (recall from central, or heat) never vends, across restarts;
heat exposure per lot from its load, with the policy holding a lot after a hot day; a version-1
ledger keeps its history when it becomes a queue; acknowledged events are purged after their age."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from controller.clock import FakeClock
from controller.ledger import LEDGER_VERSION, Ledger, mkt_c
from schemas.models import LotHoldCommand
from tests.controller.conftest import Rig, lot_rig


def one_column(tmp_path: Path, stock: int, lot: str, expiry: str, **sections: Any) -> Rig:
    return lot_rig(tmp_path, stock, (lot, expiry), **sections)


def vend(r: Rig) -> None:
    r.clock.advance(120)  # past the another-kit window: every kit after a video
    r.press()
    if r.player.token is not None:  # no kit to give: the person is told before any video
        r.complete()


def test_a_top_up_loads_behind_the_older_lot_which_drops_first_and_is_reported(tmp_path: Path) -> None:
    r = one_column(tmp_path, 3, "OLD", "2027-03-01")
    try:
        r.daemon.restock(1, 10, counted_before=3, lot="NEW", expiry=date(2029, 1, 1))
        r.board.stock[1] = 10
        assert [(s.lot, s.count) for s in r.daemon.ledger.segments(1)] == [("OLD", 3), ("NEW", 7)]
        state = r.daemon.snapshot_state().columns[0]
        assert (state.lot, state.expiry) == ("OLD", date(2027, 3, 1)), "the state shows the front kit's lot"
        assert [(s.lot, s.count) for s in state.lots] == [("OLD", 3), ("NEW", 7)]
        for _ in range(5):
            vend(r)
        drops = r.events("dispense")
        assert [(e.lot, e.expiry) for e in drops] == [("OLD", date(2027, 3, 1))] * 3 + [
            ("NEW", date(2029, 1, 1))
        ] * 2
        assert [e.stock_after for e in drops] == [9, 8, 7, 6, 5]
        assert [(s.lot, s.count) for s in r.daemon.ledger.segments(1)] == [("NEW", 5)]
        assert r.daemon.ledger.column(1).lot == "NEW"
    finally:
        r.close()


def test_fefo_across_columns_looks_at_each_front_kit(tmp_path: Path) -> None:
    with lot_rig(tmp_path, 2, ("A", "2028-01-01"), ("B", "2027-06-01")) as r:
        # column 1 gets kits expiring before column 2's behind its own: its front still expires later
        r.daemon.restock(1, 6, counted_before=2, lot="EARLY", expiry=date(2027, 1, 1))
        r.board.stock[1] = 6
        vend(r)
        vend(r)
        assert [e.lot for e in r.events("dispense")] == ["B", "B"], "column 2's front kit expires first"
        vend(r)
        vend(r)
        vend(r)
        assert [e.lot for e in r.events("dispense")][2:] == ["A", "A", "EARLY"]


def test_an_expired_front_kit_is_never_vended_until_a_technician_takes_it_out(tmp_path: Path) -> None:
    r = one_column(tmp_path, 2, "STALE", "2026-11-10")  # the clock starts on 2026-11-01
    try:
        r.daemon.restock(1, 8, counted_before=2, lot="FRESH", expiry=date(2029, 1, 1))
        r.board.stock[1] = 8
        r.clock.advance(10 * 86400)  # 2026-11-11: the front kits expired yesterday
        for _ in range(3):
            vend(r)
        assert r.events("dispense") == [], "fresh kits behind an expired one cannot drop first"
        assert r.board.per_column[1] == 0
        assert r.daemon.ledger.alarm_active("lot_expired_1")
        held = r.daemon.snapshot_state().columns[0].held
        assert held is not None and "expired" in held
        assert len(r.events("out_of_stock")) == 3
        # the technician opens the door, takes the 2 expired kits from the front, counts 6 left
        r.daemon.restock(1, 6, counted_before=8)
        r.board.stock[1] = 6
        assert [(s.lot, s.count) for s in r.daemon.ledger.segments(1)] == [("FRESH", 6)]
        assert not r.daemon.ledger.alarm_active("lot_expired_1")
        vend(r)
        assert [e.lot for e in r.events("dispense")] == ["FRESH"]
    finally:
        r.close()


def test_a_recalled_lot_stops_vending_at_once_and_stays_held_across_a_restart(tmp_path: Path) -> None:
    with lot_rig(tmp_path, 3, ("RECALLED", "2027-01-01"), ("GOOD", "2028-01-01")) as r:
        cmd = LotHoldCommand(
            command_id="c1",
            issued_at=r.clock.now(),
            lot="RECALLED",
            hold=True,
            reason="FDA R-1",
            by="pharmacist",
        )
        out = r.daemon.run_command(cmd).model_dump()
        assert out == {"lot": "RECALLED", "held": True, "changed": True, "kits_here": 3}
        state = r.daemon.snapshot_state()
        assert [(h.lot, h.kind, h.by) for h in state.holds] == [("RECALLED", "recall", "pharmacist")]
        assert state.columns[0].held and "FDA R-1" in state.columns[0].held
        vend(r)
        assert [e.lot for e in r.events("dispense")] == ["GOOD"]
        assert r.daemon.ledger.alarm_active("lot_held_1")
        r.restart()
        vend(r)
        assert [e.lot for e in r.events("dispense")] == ["GOOD", "GOOD"], "the hold survived the restart"
        release = cmd.model_copy(update={"command_id": "c2", "hold": False, "reason": "withdrawn"})
        r.daemon.run_command(release)
        assert not r.daemon.ledger.alarm_active("lot_held_1")
        vend(r)
        assert [e.lot for e in r.events("dispense")][-1] == "RECALLED"  # earliest expiry again


def test_a_hot_day_holds_the_exposed_lot_with_an_alarm_and_a_clear_reason(tmp_path: Path) -> None:
    r = one_column(tmp_path, 5, "SUMMER", "2028-01-01", heat_policy={"max_hours_outside_label": 6})
    try:
        r.board.temperature_c = 22.0
        r.daemon._poll_status()
        for _ in range(4 * 5):  # five hours at 34 °C: still under the 6 h limit
            r.clock.advance(900)
            r.board.temperature_c = 34.0
            r.daemon._poll_status()
        assert r.daemon.ledger.holds() == []
        for _ in range(4 * 2):  # two more hours
            r.clock.advance(900)
            r.daemon._poll_status()
        holds = r.daemon.ledger.holds()
        assert [(h.lot, h.kind) for h in holds] == [("SUMMER", "heat")]
        assert "outside the label range 20-25 °C (limit 6 h)" in holds[0].reason
        assert r.daemon.ledger.alarm_active("lot_heat_SUMMER")
        seg = r.daemon.snapshot_state().columns[0].lots[0]
        assert seg.exposure is not None and 6 * 3600 < seg.exposure.seconds_outside_label <= 7 * 3600
        assert seg.exposure.mkt_c is not None and abs(seg.exposure.mkt_c - 34.0) < 0.01  # all 7 h at 34
        vend(r)
        assert r.events("dispense") == [] and r.board.per_column[1] == 0
        r.daemon.run_command(
            LotHoldCommand(
                command_id="h1", issued_at=r.clock.now(), lot="SUMMER", hold=False, reason="tested", by="qa"
            ),
        )
        assert not r.daemon.ledger.alarm_active("lot_heat_SUMMER")
        vend(r)
        (kit,) = r.events("dispense")
        assert kit.exposure is not None and kit.exposure.seconds_outside_label > 6 * 3600, (
            "exposure to dispense"
        )
        tel = r.daemon.telemetry()
        assert len(tel.samples) >= 1 + 28 and tel.samples[-1].celsius == 34.0  # (the vend polls too)
        assert r.daemon.telemetry().samples == [], "each reading is sent once"
    finally:
        r.close()


def test_mean_kinetic_temperature_matches_the_usp_formula() -> None:
    import math

    temps = [20.0, 30.0]
    expected = 10000.0 / -math.log(sum(math.exp(-10000.0 / (t + 273.15)) for t in temps) / 2) - 273.15
    total = sum(math.exp(-(83144.0 / 8.3144) / (t + 273.15)) * 3600 for t in temps)
    assert abs(mkt_c(total, 7200) - expected) < 0.01  # type: ignore[operator]
    assert 26.0 < expected < 26.5, "MKT weighs the warm hour more than the mean (25 °C)"


def test_a_version_1_ledger_becomes_a_queue_and_keeps_its_history(tmp_path: Path) -> None:
    r = one_column(tmp_path, 4, "LEGACY", "2028-01-01")
    try:
        vend(r)
        events_before = [e.event_id for e in r.daemon.ledger.events()]
        path = r.daemon.ledger.path
    finally:
        r.close()
    db = sqlite3.connect(path)  # make it a version-1 ledger again: no queue, no version
    db.executescript(
        "DROP TABLE lot_segments; DROP TABLE lot_holds; DROP TABLE temperature_samples; "
        "DELETE FROM meta WHERE key = 'ledger_version';"
    )
    db.close()
    ledger = Ledger(path, FakeClock(), unit_id="test-unit-1")
    try:
        assert ledger.get_meta("ledger_version") == str(LEDGER_VERSION)
        assert [(s.lot, s.count) for s in ledger.segments(1)] == [("LEGACY", 3)]
        assert [e.event_id for e in ledger.events()] == events_before
        assert ledger.column(1).stock == 3
    finally:
        ledger.close()


def test_acknowledged_events_are_purged_after_their_age(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    from schemas.models import DoorEvent

    ledger = Ledger(tmp_path / "l.sqlite3", clock, unit_id="u1")
    try:
        for _ in range(4):
            ledger.record(DoorEvent, open=True)
        ledger.prune(3)  # central acknowledged seqs 1-3
        clock.advance(40 * 86400)
        ledger.record(DoorEvent, open=False)
        assert ledger.purge(clock.now() - timedelta(days=30)) == 3
        assert [e.seq for e in ledger.events()] == [4, 5], "unacknowledged and recent events stay"
        assert ledger.last_seq() == 5
    finally:
        ledger.close()
