"""Lot holds, their log and the temperature history in the store, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from inventory.store import Store

T = datetime(2026, 11, 1, 12, 7, 30, tzinfo=UTC)


def test_holds_are_kept_once_with_who_and_why_and_released_with_a_reason(store: Store) -> None:
    assert store.hold_lot("LOT-1", "recall", "maker recall", "pharmacist", T)
    assert not store.hold_lot("LOT-1", "recall", "again", "someone else", T + timedelta(minutes=1))
    assert store.lot_holds()["LOT-1"]["reason"] == "maker recall"
    assert not store.release_lot("LOT-2", "never held", "pharmacist", T)
    assert store.release_lot("LOT-1", "withdrawn", "director", T + timedelta(hours=1))
    assert store.lot_holds() == {}
    log = store.lot_hold_log("LOT-1")
    assert [(x["action"], x["by"], x["reason"]) for x in log] == [
        ("release", "director", "withdrawn"),
        ("hold", "pharmacist", "recall: maker recall"),
    ]


def test_temperature_history_is_bucketed_and_pruned(store: Store) -> None:
    readings = [(T + timedelta(minutes=m), 20.0 + m % 7) for m in range(0, 60)]
    with store.tx() as tx:
        store.add_temperatures(tx, "unit-001", readings[:30], 900)
    with store.tx() as tx:
        store.add_temperatures(tx, "unit-001", readings[30:], 900)
    rows = store.temperatures("unit-001", T - timedelta(hours=1))
    assert len(rows) == 5, "12:00, 12:15, 12:30, 12:45 and 13:00 buckets"
    by_bucket = {at.strftime("%H:%M"): (lo, mean, hi) for at, lo, mean, hi in rows}
    first = [c for t, c in readings if t < T.replace(minute=15)]
    assert by_bucket["12:00"] == (min(first), sum(first) / len(first), max(first))
    assert store.prune_temperatures(T.replace(minute=30, second=0)) == 2
    assert len(store.temperatures("unit-001", T - timedelta(hours=1))) == 3
