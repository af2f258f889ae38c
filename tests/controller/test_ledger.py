"""The ledger: durable settings, strictly increasing seq, unique event ids, outbox API, stock in the same
transaction as its event, command ids persisted before use."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.clock import FakeClock
from controller.ledger import ColumnChange, Ledger, LedgerError, read_census
from schemas.models import DispenseEvent, DoorEvent, RestockEvent, parse_event


def new_ledger(path: Path) -> Ledger:
    led = Ledger(path / "ledger.sqlite3", FakeClock(), unit_id="u1")
    led.ensure_column(1, "nasal")
    return led


def test_wal_and_synchronous_full(tmp_path: Path) -> None:
    led = new_ledger(tmp_path)
    assert led._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert led._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    led.close()


def test_seq_increases_and_survives_reopen(tmp_path: Path) -> None:
    led = new_ledger(tmp_path)
    seqs = [led.record(DoorEvent, open=i % 2 == 0).seq for i in range(5)]
    led.close()
    led = new_ledger(tmp_path)
    seqs.append(led.record(DoorEvent, open=True).seq)
    assert seqs == [1, 2, 3, 4, 5, 6]
    ids = [e.event_id for e in led.events()]
    assert len(set(ids)) == 6 and all(len(i) == 32 for i in ids)
    led.close()


def test_record_many_appends_after_the_last_seq_in_one_transaction(tmp_path: Path) -> None:
    led = new_ledger(tmp_path)
    led.record(DoorEvent, open=True)
    assert led.record_many(DoorEvent, ({"open": i % 2 == 0} for i in range(4))) == 4
    assert [e.seq for e in led.events()] == [1, 2, 3, 4, 5] and led.depth() == 5
    with pytest.raises(ValueError):  # a value the event refuses: nothing of the batch is kept
        led.record_many(DoorEvent, [{"open": True}, {"open": "not a flag"}])
    assert led.last_seq() == 5 and read_census(tmp_path / "ledger.sqlite3").events == {"door": 5}
    led.close()


def test_stock_change_in_same_transaction_as_event(tmp_path: Path) -> None:
    led = new_ledger(tmp_path)
    led.record(RestockEvent, changes=(ColumnChange(1, stock=2),), column=1, added=2)
    cid = led.allocate_command(1, "en", "video")
    ev = led.record(
        DispenseEvent,
        changes=(ColumnChange(1, stock_delta=-1),),
        settle=(cid, "dropped"),
        column=1,
        product="nasal",
        doses=2,
        command_id=cid,
        via="video",
    )
    assert ev.stock_after == 1 and led.column(1).stock == 1
    with pytest.raises(LedgerError, match="expected stock >= 0"):
        led.record(
            DispenseEvent,
            changes=(ColumnChange(1, stock_delta=-2),),
            column=1,
            product="nasal",
            doses=2,
            command_id=cid,
            via="video",
        )
    assert led.column(1).stock == 1 and led.last_seq() == 2, "a refused change leaves no event behind"
    led.close()


def test_command_ids_persist_before_use_and_settle_once(tmp_path: Path) -> None:
    led = new_ledger(tmp_path)
    a, b = led.allocate_command(1, "en", "video"), led.allocate_command(1, "es", "window")
    assert b == a + 1 and 0 < a < 2**32
    led.close()
    led = new_ledger(tmp_path)
    assert [c.command_id for c in led.pending_commands()] == [a, b]
    led.settle(a, "jammed")
    with pytest.raises(LedgerError, match=f"expected pending command {a}"):
        led.settle(a, "dropped")
    assert led.allocate_command(1, None, "test") == b + 1
    led.close()


def test_outbox_pending_prune_depth(tmp_path: Path) -> None:
    led = new_ledger(tmp_path)
    for i in range(10):
        led.record(DoorEvent, open=bool(i % 2))
    rows = led.pending(after_seq=3, limit=4)
    assert [r.seq for r in rows] == [4, 5, 6, 7]
    assert parse_event(rows[0].payload).seq == 4 and rows[0].event_type == "door"
    assert led.depth() == 10 and led.oldest_pending_at() is not None
    assert led.prune(6) == 6 and led.depth() == 4 and led.acked_seq() == 6
    assert led.prune(5) == 0 and led.acked_seq() == 6, "acks never go backwards"
    assert led.prune(99) == 4 and led.acked_seq() == 10, "an ack past last_seq is clamped"
    assert led.pending(0, 100) == [] and led.oldest_pending_at() is None
    assert len(led.events()) == 10, "pruning the outbox keeps the events"
    led.close()


def test_wrong_unit_refused(tmp_path: Path) -> None:
    new_ledger(tmp_path).close()
    with pytest.raises(LedgerError, match="expected the ledger of unit 'u2', found unit 'u1'"):
        Ledger(tmp_path / "ledger.sqlite3", FakeClock(), unit_id="u2")


def test_concurrent_writers_and_reader(tmp_path: Path) -> None:
    led = new_ledger(tmp_path)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for _ in range(50):
                led.record(DoorEvent, open=True)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def read() -> None:
        for _ in range(50):
            led.pending(0, 10)
            led.depth()

    threads = [threading.Thread(target=write) for _ in range(3)] + [threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    seqs = [e.seq for e in led.events()]
    assert seqs == list(range(1, 151))
    led.close()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 3), st.booleans()), max_size=30))
def test_stock_never_negative_and_matches_events(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[int, bool]]
) -> None:
    led = new_ledger(tmp_path_factory.mktemp("led"))
    expected = 0
    for delta, absolute in ops:
        change = ColumnChange(1, stock=abs(delta)) if absolute else ColumnChange(1, stock_delta=delta)
        target = abs(delta) if absolute else expected + delta
        try:
            led.record(RestockEvent, changes=(change,), column=1, added=delta)
        except LedgerError:
            assert target < 0
            continue
        expected = target
    assert led.column(1).stock == expected >= 0
    afters = [e.stock_after for e in led.events() if isinstance(e, RestockEvent)]
    assert (afters[-1] if afters else 0) == expected
    led.close()


def test_file_readable_by_others_while_open(tmp_path: Path) -> None:
    led = new_ledger(tmp_path)
    led.record(DoorEvent, open=True)
    assert read_census(tmp_path / "ledger.sqlite3").events == {"door": 1}  # its own read-only connection
    led.close()


def test_census_counts_what_the_ledger_holds(tmp_path: Path) -> None:
    led = new_ledger(tmp_path)
    led.record(RestockEvent, changes=(ColumnChange(1, stock=5),), column=1, added=5, expected_before=0,
               source="initial")
    cids = [led.allocate_command(1, "en", "video") for _ in range(3)]
    for cid in cids[:2]:
        led.record(DispenseEvent, changes=(ColumnChange(1, stock_delta=-1),), settle=(cid, "dropped"),
                   column=1, product="nasal", doses=2, command_id=cid, via="video")
    led.prune(1)
    census = read_census(tmp_path / "ledger.sqlite3")
    assert census == led.census()
    assert census.events == {"restock": 1, "dispense": 2} and census.dispensed == 2
    assert census.stock == {1: 3} and census.dispensed_per_column == {1: 2}
    assert census.dispensed_per_command == {cids[0]: 1, cids[1]: 1} and census.pending_commands == [cids[2]]
    assert census.command_outcomes == {"dropped": 2, "pending": 1}
    assert (census.outbox_depth, census.last_seq, census.acked_seq) == (2, 3, 1)
    assert read_census(tmp_path / "nothing.sqlite3").events == {}, "no file yet: an empty census"
    led.close()


def test_reporter_session_and_an_earlier_versions_reporter_file_live_in_the_ledger(tmp_path: Path) -> None:
    legacy = tmp_path / "ledger.sqlite3.mqtt.sqlite"
    con = sqlite3.connect(legacy)
    con.execute("CREATE TABLE reporter_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    con.execute("INSERT INTO reporter_meta VALUES ('session', 41)")
    con.execute("CREATE TABLE command_answers (n INTEGER PRIMARY KEY AUTOINCREMENT, command_id TEXT UNIQUE "
                "NOT NULL, name TEXT NOT NULL, answer TEXT NOT NULL)")
    con.execute("INSERT INTO command_answers (command_id, name, answer) VALUES ('c-1', 'lock', ?)",
                ('{"command_id": "c-1", "status": "ok", "reason": null, "result": {"mode": "locked"}}',))
    con.commit()
    con.close()
    led = new_ledger(tmp_path)
    assert led.import_reporter_file(legacy) and not led.import_reporter_file(legacy), "imported once"
    assert led.next_session() == 42 and led.next_session() == 43
    answer = led.command_answer("c-1")
    assert answer is not None and answer.result == {"mode": "locked"}
    led.close()
    again = new_ledger(tmp_path)
    assert again.next_session() == 44 and again.census().command_answers == 1
    again.close()
