"""A short fleet soak: 20 simulated units in two processes against central on PostgreSQL, every unit's
three counts (board, ledger, central store) equal at the end. `make fleet-soak` runs 1,000 for ten
minutes (docs/simulator.md)."""

from __future__ import annotations

import uuid
from pathlib import Path

import psutil
import psycopg

from nalox import fleetsoak


def test_short_fleet_soak_counts_every_unit_three_ways_and_agrees(tmp_path: Path) -> None:
    schema = f"nalox_test_fleet_{uuid.uuid4().hex[:10]}"
    opts = fleetsoak.Options(units=20, duration_s=20, compression=30, processes=2, schema=schema,
                             every_s=10, settle_s=120, workdir=tmp_path / "fleet")
    try:
        verdict, figures = fleetsoak.run(opts)
    finally:
        with psycopg.connect(fleetsoak.PG, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    summary = fleetsoak.summarise(verdict, figures)
    assert verdict.passed, verdict.table()
    assert verdict.units == 20 and figures["processes"] == 2 and figures["settled"]
    # a press every 10 s for 20 s: each unit pressed once or more, every press gave one kit (no faults here)
    assert verdict.presses >= 20 and verdict.physical == verdict.presses
    assert verdict.physical == verdict.ledger == verdict.central
    assert verdict.events_central == verdict.events_ledger > verdict.physical
    assert summary["verdict"] == "PASS" and summary["unserved_presses"] == 0
    assert summary["kits_before_video"] == 0, "a tap is never a long press (an emergency kit without video)"
    assert not psutil.Process().children(recursive=True), "the fleet soak left processes running"


def test_verdict_fails_a_unit_whose_counts_differ() -> None:
    account = {"unit": "fleet-0001", "presses": 2, "sim_dropped": 2, "ledger_dispensed": 2,
               "ledger_event_ids": ["a", "b", "c"], "outbox": 0, "double_drops": 0,
               "sim_stock": {"1": 3}, "ledger_stock": {"1": 3}}
    good = fleetsoak.Verdict()
    good.add(account, ["a", "b", "c"], 2, {"1": 3})
    assert good.passed and "PASS" in good.table()
    lost = fleetsoak.Verdict()
    lost.add(account, ["a", "b", "b"], 1, {"1": 4})
    assert not lost.passed
    assert (lost.lost_events, lost.doubled_events, lost.units_differing) == (1, 1, ["fleet-0001"])
    assert "FAIL" in lost.table()
