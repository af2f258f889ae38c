"""Ingest logic on both backends: every event counted once whatever the delivery, bad input refused."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inventory.clock import FakeClock
from inventory.config import CentralConfig
from inventory.ingest import Incoming, Ingestor
from inventory.migrations import MIGRATIONS
from inventory.store import GapBeyondUnit, SqliteStore, Store
from schemas.models import Ack, ReplayCommand, topic
from tests.inventory.conftest import make_config, ts
from tests.inventory.gen import UnitStream


class Recorder:
    """Stands in for the MQTT publish function: keeps what would have gone to the broker."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, str | None]] = []

    def __call__(
        self,
        t: str,
        payload: bytes,
        qos: int,
        response_topic: str | None,
        correlation: bytes | None,
        expiry_s: int | None,
    ) -> None:
        self.sent.append((t, payload, response_topic))

    def acks(self, unit: str) -> list[int]:
        return [Ack.model_validate_json(p).acked_seq for t, p, _ in self.sent if t == topic(unit, "ack")]

    def replays(self, unit: str) -> list[ReplayCommand]:
        return [
            ReplayCommand.model_validate_json(p) for t, p, _ in self.sent if t == topic(unit, "cmd", "replay")
        ]


def ingestor(store: Store, config: CentralConfig, clock: FakeClock) -> tuple[Ingestor, Recorder]:
    store.sync_config_units([(u.id, u.site, u.name) for u in config.units], clock.now())
    rec = Recorder()
    return Ingestor(store, config, clock, rec, "central-test"), rec


def feed(ing: Ingestor, msgs: list[tuple[str, bytes]], batch: int = 7) -> None:
    for i in range(0, len(msgs), batch):
        ing.process([Incoming(t, p) for t, p in msgs[i : i + batch]])


def stream(unit: str = "unit-001", seed: int = 1, vends: int = 30) -> UnitStream:
    s = UnitStream(unit, "Site B")
    s.random_day(random.Random(seed), days=40, vends=vends)
    return s


def fed_without(
    store: Store, config: CentralConfig, clock: FakeClock, seqs: range, seed: int, vends: int
) -> tuple[Ingestor, Recorder, UnitStream, list[tuple[str, bytes]]]:
    """A fresh ingestor fed unit-001's stream of `vends` vends (random `seed`) without its events of
    `seqs`; all its messages."""
    ing, rec = ingestor(store, config, clock)
    s = stream(seed=seed, vends=vends)
    msgs = s.messages()
    feed(ing, msgs[: seqs.start - 1] + msgs[seqs.stop - 1 :])
    return ing, rec, s, msgs


def assert_counted_once(store: Store, s: UnitStream) -> None:
    assert store.count_events(unit=s.unit) == len(s.events)
    assert store.count_events("dispense", s.unit) == sum(s.kits.values()) + sum(s.tests.values())
    row = store.unit(s.unit)
    assert row is not None
    assert row.stock == s.stock, f"expected stock {s.stock}, store has {row.stock}"
    assert row.acked_seq == s.seq


def test_duplicates_and_reordering_count_each_event_once(
    store: Store, config: CentralConfig, clock: FakeClock
) -> None:
    ing, rec = ingestor(store, config, clock)
    s = stream()
    msgs = s.messages()
    rng = random.Random(7)
    delivered = msgs + rng.sample(msgs, len(msgs) // 2)  # half of them twice
    rng.shuffle(delivered)
    feed(ing, delivered)
    assert_counted_once(store, s)
    assert rec.acks(s.unit)[-1] == s.seq
    assert store.counters()["events_duplicate"] == len(msgs) // 2
    assert ing.tick() == []


def test_missing_then_replayed_events_are_requested_and_counted_once(
    store: Store, config: CentralConfig, clock: FakeClock
) -> None:
    ing, rec = ingestor(store, config, clock)
    s = stream(seed=3)
    msgs = s.messages()
    lost = set(range(10, 15)) | {40}
    feed(ing, [m for i, m in enumerate(msgs) if i not in lost])
    assert rec.acks(s.unit)[-1] == 10, "acked seq must stop before the first gap (seq 11)"
    assert ing.tick() == [], "no replay before the gap timeout"
    clock.advance(31)
    replays = ing.tick()
    assert [r.from_seq for r in replays] == [11]
    assert rec.sent[-1][2] == "nalox/v1/unit-001/cmd_response/central-test", (
        "where the ACL lets the unit answer"
    )
    assert ing.tick() == [], "not asked again before another timeout"
    # the unit replays everything from seq 11 (duplicates included)
    feed(ing, msgs[10:])
    assert_counted_once(store, s)
    clock.advance(100)
    assert ing.tick() == []


def test_tail_gap_known_from_state_is_replayed(store: Store, config: CentralConfig, clock: FakeClock) -> None:
    ing, rec = ingestor(store, config, clock)
    s = stream(seed=4, vends=5)
    msgs = s.messages()
    feed(ing, msgs[:-2])
    feed(ing, [(topic(s.unit, "state"), s.state(ts(0)).model_dump_json().encode())])
    clock.advance(31)
    assert [(r.from_seq, r.to_seq) for r in ing.tick()] == [(s.seq - 1, s.seq)], "the end is the state's"
    feed(ing, msgs[-2:])
    assert_counted_once(store, s)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.randoms(use_true_random=False), dup_rate=st.floats(0, 1), batch=st.integers(1, 50))
def test_any_delivery_order_ends_with_the_same_store(
    order: random.Random, dup_rate: float, batch: int
) -> None:
    store = SqliteStore(":memory:")
    store.migrate()
    clock = FakeClock()
    ing, _ = ingestor(store, make_config(), clock)
    s = stream(seed=order.randint(0, 1000), vends=25)
    msgs = s.messages()
    delivered = msgs + [m for m in msgs if order.random() < dup_rate]
    order.shuffle(delivered)
    feed(ing, delivered, batch=batch)
    assert_counted_once(store, s)
    store.close()


def good_event(unit: str = "unit-001", seq: int = 1) -> tuple[str, bytes]:
    s = UnitStream(unit, "Site B")
    s.restock(0, 1, 10)
    e = s.events[0].model_copy(update={"seq": seq, "event_id": f"{unit}-{seq:08d}"})
    return topic(unit, "event", "restock"), e.model_dump_json().encode()


def bad_messages() -> dict[str, tuple[str, bytes]]:
    t, good = good_event(seq=2)
    obj = json.loads(good)
    return {
        "malformed_json": (t, b'{"event_id": "abc'),
        "unknown_schema_version": (t, json.dumps({**obj, "schema_version": 99}).encode()),
        "unit_mismatch": (t, json.dumps({**obj, "unit": "unit-002"}).encode()),
        "unknown_unit": good_event("unit-999", 1),
        "oversized": (t, json.dumps({**obj, "reason": "x" * 70_000}).encode()),
        "invalid_payload": (t, json.dumps({**obj, "stock_after": -4}).encode()),
        "type_mismatch": (topic("unit-001", "event", "dispense"), good),
        "bad_topic": ("nalox/v1/unit-001/event/gossip", good),
    }


def test_bad_input_is_refused_counted_and_never_stops_ingest(
    store: Store, config: CentralConfig, clock: FakeClock
) -> None:
    ing, _ = ingestor(store, config, clock)
    bad = bad_messages()
    batch = (
        [Incoming(*good_event(seq=1))] + [Incoming(*m) for m in bad.values()] + [Incoming(*good_event(seq=2))]
    )
    result = ing.process(batch)
    assert result.rejected == len(bad)
    assert result.inserted == 2, "good messages in the same batch as bad ones are still stored"
    rejects = store.rejects()
    assert {r: v["count"] for r, v in rejects.items()} == {r: 1 for r in bad}
    assert "expected schema_version 1, got another" in rejects["unknown_schema_version"]["last_detail"]
    assert store.unit("unit-999") is None
    held = {q["reason"]: q for q in store.quarantined()}
    assert set(held) == set(bad), "every refusal with a unit in its topic is quarantined"
    assert held["invalid_payload"]["seq"] == 2
    assert held["invalid_payload"]["size"] == len(bad["invalid_payload"][1])
    assert held["unit_mismatch"]["event_id"] == "unit-001-00000002"


def test_a_refused_payload_content_reaches_no_table_log_or_counter(
    store: Store, config: CentralConfig, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    ing, _ = ingestor(store, config, clock)
    t, good = good_event(seq=1)
    obj = json.loads(good)
    secret = "SECRET-Jane-Doe"
    hostile = [
        Incoming(t, f'{{"x": "{secret}"'.encode()),  # malformed: the first bytes were copied before
        Incoming(t, json.dumps({**obj, "unit": "unit-002", "reason": secret}).encode()),
        Incoming(t, json.dumps({**obj, secret: 1}).encode()),  # an unknown field named with content
        Incoming(t, json.dumps({**obj, "schema_version": secret}).encode()),
        Incoming(t, json.dumps({**obj, "lot": {"k": secret}}).encode()),
        Incoming(t, json.dumps({**obj, "seq": "x", "event_id": secret + "/\\"}).encode()),
    ]
    assert ing.process(hostile).rejected == len(hostile)
    dumped = json.dumps([store.rejects(), store.quarantined(None)])
    assert secret not in dumped and secret not in capsys.readouterr().out


def test_a_state_enrolls_an_unknown_unit_only_when_configured(store: Store, clock: FakeClock) -> None:
    s = UnitStream("unit-777", "Site Z")
    s.restock(0, 1, 10)
    state = (topic(s.unit, "state"), s.state(ts(0)).model_dump_json().encode())
    strict, _ = ingestor(store, make_config(), clock)
    strict.process([Incoming(*state)])
    assert store.unit("unit-777") is None
    auto, _ = ingestor(store, make_config(enrollment={"from_state": True}), clock)
    auto.process(
        [
            Incoming(topic(s.unit, "status"), s.status(ts(0)).model_dump_json().encode()),
            Incoming(*s.messages()[0]),
            Incoming(*state),
        ]
    )
    row = store.unit("unit-777")
    assert row is not None and row.site == "Site Z" and row.status == "online"
    assert row.stock == {1: 10}


def test_status_newer_session_wins_and_last_will_is_final(
    store: Store, config: CentralConfig, clock: FakeClock
) -> None:
    ing, _ = ingestor(store, config, clock)
    s = UnitStream("unit-001", "Site B")

    def status(state: str, session: int, minutes: float) -> Incoming:
        return Incoming(
            topic(s.unit, "status"), s.status(ts(minutes), state, session).model_dump_json().encode()
        )

    ing.process([status("online", 2, 10)])
    ing.process([status("offline", 1, 20)])  # a stale session's will
    row = store.unit(s.unit)
    assert row is not None and row.status == "online"
    ing.process([status("offline", 2, 5)])  # the will of the current session (stamped at connect)
    row = store.unit(s.unit)
    assert row is not None and row.status == "offline"
    ing.process([status("online", 2, 30)])  # a late duplicate of the same session's online
    row = store.unit(s.unit)
    assert row is not None and row.status == "offline"


def test_migrations_are_recorded_and_idempotent(store: Store) -> None:
    latest = MIGRATIONS[-1][0]
    assert store.schema_version() == latest
    assert store.migrate() == latest
    with store.tx() as tx:
        versions = [r[0] for r in tx.rows("SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, latest + 1))


def test_ack_is_published_after_each_batch(store: Store, config: CentralConfig, clock: FakeClock) -> None:
    ing, rec = ingestor(store, config, clock)
    s = stream(vends=3)
    feed(ing, s.messages(), batch=2)
    acks = rec.acks(s.unit)
    assert acks == sorted(acks) and acks[-1] == s.seq


def test_an_operator_can_give_up_on_events_the_unit_no_longer_has(
    store: Store, config: CentralConfig, clock: FakeClock
) -> None:
    ing, rec, s, _ = fed_without(store, config, clock, range(3, 6), seed=8, vends=5)  # 3..5 gone for good
    assert rec.acks(s.unit)[-1] == 2
    clock.advance(31)
    assert [r.from_seq for r in ing.tick()] == [3]
    assert store.accept_gap(s.unit, 5, "central database restored from backup", clock.now()) == 3
    assert store.advance_acked(s.unit).acked_seq == s.seq
    assert store.accepted_gaps(s.unit)[0]["from_seq"] == 3
    assert ing.tick() == [], "no more replay requests once the gap is accepted"
    assert store.accept_gap(s.unit, 4, "again", clock.now()) == 0, "nothing to give up below the ack"


def test_accept_gap_never_passes_the_last_seq_the_unit_reported(
    store: Store, config: CentralConfig, clock: FakeClock
) -> None:
    ing, rec, s, _ = fed_without(store, config, clock, range(2, 3), seed=9, vends=2)
    with pytest.raises(GapBeyondUnit, match=f"at most {s.seq}"):
        store.accept_gap(s.unit, s.seq + 1, "beyond the unit", clock.now())
    with pytest.raises(GapBeyondUnit):
        store.accept_gap(s.unit, 10**15, "far beyond", clock.now())
    assert store.advance_acked(s.unit).acked_seq == 1, "a refused accept-gap changes nothing"
    assert store.accept_gap(s.unit, 2, "gone", clock.now()) >= 1


def test_a_unit_whose_numbering_restarted_gets_no_more_acks(
    store: Store, config: CentralConfig, clock: FakeClock
) -> None:
    """A unit re-imaged with the same id starts again at seq 1. An ack for the old high seq would make
    it prune new events the service has not seen, so acks stop and an alert asks for an operator."""
    from inventory.alerts import AlertManager

    ing, rec = ingestor(store, config, clock)
    old = stream(seed=2, vends=5)
    feed(ing, old.messages())
    assert rec.acks(old.unit)[-1] == old.seq
    fresh = UnitStream(old.unit, old.site, start=old.start)
    fresh.restock(10_000, 1, 20)
    clock.advance(60)
    feed(ing, [(topic(old.unit, "state"), fresh.state(clock.now()).model_dump_json().encode())])
    sent = len(rec.acks(old.unit))
    fresh_msgs = [
        (t, p.replace(b'"event_id":"unit-001-', b'"event_id":"new-unit-001-')) for t, p in fresh.messages()
    ]
    feed(ing, fresh_msgs)
    assert len(rec.acks(old.unit)) == sent, "no ack after the numbering restarted"
    assert store.count_events(unit=old.unit) == len(old.events) + 1, "the new events are still counted"
    clock.advance(100)
    assert ing.tick() == [], "and no replay requests either"
    alerts = AlertManager(store, config.alerts, clock).run_once()
    assert [a.kind for a in alerts if a.unit == old.unit and a.kind == "seq_reset"] == ["seq_reset"]


def test_a_restarted_numbering_is_caught_from_the_events_alone(
    store: Store, config: CentralConfig, clock: FakeClock
) -> None:
    """Before the unit's new state arrives: new events reusing acked seqs pause acks in their own batch."""
    ing, rec = ingestor(store, config, clock)
    old = stream(seed=2, vends=5)
    feed(ing, old.messages())
    sent = len(rec.acks(old.unit))
    fresh = UnitStream(old.unit, old.site, start=old.start)
    fresh.restock(10_000, 1, 20)
    fresh.restock(10_001, 2, 20)
    msgs = [
        (t, p.replace(b'"event_id":"unit-001-', b'"event_id":"new-unit-001-')) for t, p in fresh.messages()
    ]
    feed(ing, msgs)
    assert len(rec.acks(old.unit)) == sent, "no ack for the old high seq: it would prune the new events"
    row = store.unit(old.unit)
    assert row is not None and row.seq_reset_at is not None
    assert store.count_events(unit=old.unit) == len(old.events) + 2


def test_a_late_event_inside_an_accepted_gap_is_not_a_restart(
    store: Store, config: CentralConfig, clock: FakeClock
) -> None:
    ing, rec, s, msgs = fed_without(store, config, clock, range(3, 6), seed=8, vends=5)
    store.accept_gap(s.unit, 5, "given up", clock.now())
    feed(ing, msgs[2:5])  # they turn up after all
    row = store.unit(s.unit)
    assert row is not None and row.seq_reset_at is None
    assert rec.acks(s.unit)[-1] == s.seq
    assert store.count_events(unit=s.unit) == len(msgs)


def test_the_retained_state_again_after_central_restarts_is_not_a_restart(
    store: Store, config: CentralConfig, clock: FakeClock
) -> None:
    """Seen in a soak: the unit was killed after publishing events past its last state; central then
    restarted and the broker handed it the retained (older) state again. That is not a unit whose
    numbering restarted: acks must go on."""
    ing, rec = ingestor(store, config, clock)
    s = stream(seed=2, vends=5)
    msgs = s.messages()
    state_at = s.seq - 2
    retained = (topic(s.unit, "state"), s.state(clock.now(), last_seq=state_at).model_dump_json().encode())
    feed(ing, [*msgs, retained])
    feed(ing, [retained])  # central restarted: the same retained state once more
    row = store.unit(s.unit)
    assert row is not None and row.seq_reset_at is None
    assert rec.acks(s.unit)[-1] == s.seq
