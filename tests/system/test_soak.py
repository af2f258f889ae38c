"""A short soak: faults injected at seeded moments, and still 0 lost, 0 counted twice, 0 dispensed twice."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import psutil

from nalox import soak


def test_short_soak_with_faults_reconciles_exactly(tmp_path: Path) -> None:
    opts = soak.Options(presses=40, seed=3, fault_rate=0.35, cut_s=(2.0, 6.0), workdir=tmp_path / "soak")
    figures = soak.run(opts)
    assert soak.verdict(figures) == [], soak.verdict(figures)
    assert figures["presses"] == 40
    hostile = figures["hostile"]  # a copied unit certificate tried every attack of issue 11
    assert hostile["rounds"] >= 1 and hostile["breaches"] == {} and hostile["stolen_messages"] == 0
    assert set(hostile["broker_answers"]["shared_group"]) == {0x87}
    # its odd payloads are all refused (a broker kill may lose some it sent: a hostile unit keeps no outbox)
    assert hostile["central_events_accepted"] == 0 and sum(hostile["central_quarantine"].values()) >= 1
    assert figures["sim_dropped"] > 0
    assert figures["ledger_dispensed"] == figures["sim_dropped"] == figures["central_dispensed"]
    assert figures["events_lost"] == 0 and figures["events_counted_twice"] == 0
    assert figures["kits_dispensed_twice"] == 0
    assert figures["outbox_depth"] == 0
    kinds = {k for k, n in figures["faults_injected"].items() if n}
    assert {"broker_kill", "unit_kill_in_dispense", "cut"} <= kinds, f"seed 3 injects these; got {kinds}"
    assert not psutil.Process().children(recursive=True), "the soak left processes running"


def test_verdict_names_every_kind_of_difference() -> None:
    good: dict[str, Any] = {"sim_dropped": 3, "ledger_dispensed": 3, "central_dispensed": 3, "events_lost": 0,
            "events_counted_twice": 0, "events_unknown_to_ledger": 0, "kits_dispensed_twice": 0,
            "stock": {"ledger": {"1": 2}, "sim": {"1": 2}, "central": {"1": 2}}}
    assert soak.verdict(good) == []
    bad = copy.deepcopy(good)
    bad.update(central_dispensed=2, events_lost=1, kits_dispensed_twice=1, outbox_depth=6)
    bad["stock"]["central"] = {"1": 3}
    problems = " | ".join(soak.verdict(bad))
    for words in ("central counts 2 kits", "events lost: 1", "kits dispensed twice: 1", "stock differs",
                  "outbox still holds 6 events"):
        assert words in problems
