"""A short run of bench/flood.py: a unit whose certificate was copied floods the production broker
(oversized, retained, deep, foreign and many-topic messages, packets over the limit) while an honest unit
reports and central ingests. Every refused kind is refused, every honest event arrives once and is acked,
central quarantines what the broker had to let through, and the broker's memory stays bounded."""

from __future__ import annotations

from pathlib import Path

from bench.flood import run

REFUSED_KINDS = ("oversized_event", "retained_event", "deep_topic", "other_unit", "retained_other")


def test_a_flood_is_refused_and_the_honest_unit_and_central_keep_working(tmp_path: Path) -> None:
    r = run(seconds=3, honest_rate=20, db=None, workdir=tmp_path, oversized=3)
    kinds = r["hostile"]["per_kind"]
    for kind in REFUSED_KINDS:
        k = kinds[kind]
        assert k["attempted"] > 0 and k["refused"] == k["attempted"], k
    assert r["hostile"]["connections_closed"] == 3, "each packet over max_packet_size closes the connection"
    honest = r["honest"]
    assert honest["sent"] > 0 and honest["stored"] == honest["sent"] == honest["acked"], honest
    assert r["central"]["honest_duplicates"] == 0
    let_through = kinds["many_event_topics"]["accepted"] + kinds["retained_state_64k"]["accepted"]
    assert let_through > 0 and sum(r["central"]["hostile_refused"].values()) > 0, r["central"]
    assert r["central"]["quarantine_open_rows"] <= 500
    assert r["broker_rss_mb"]["peak"] - r["broker_rss_mb"]["before"] < 200, r["broker_rss_mb"]
