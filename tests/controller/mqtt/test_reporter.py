"""The reporter against a real mosquitto (dev config): status/state/telemetry, events, acks, commands."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from controller.clock import FakeClock, RealClock
from controller.mqtt.reporter import BACKLOG_ALARM, Reporter
from nalox.broker import Broker
from schemas.models import CommandResponse, Status, Telemetry, UnitState, parse_event
from tests.controller.mqtt.standins import StandInUnit, Watcher, real_ledger
from tests.waiting import wait_for


def test_connect_publishes_online_state_and_telemetry(
    make_reporter: Callable[..., Reporter], watcher: Watcher, unit_id: str
) -> None:
    reporter = make_reporter().start()
    status = Status.model_validate_json(watcher.next(f"nalox/v1/{unit_id}/status").payload)
    assert (status.state, status.session) == ("online", reporter.session)
    state = UnitState.model_validate_json(watcher.next(f"nalox/v1/{unit_id}/state").payload)
    assert state.unit == unit_id and state.outbox_depth == 0
    telemetry = watcher.next(f"nalox/v1/{unit_id}/telemetry")
    assert telemetry.qos == 0
    assert Telemetry.model_validate_json(telemetry.payload).unit == unit_id


def test_state_and_status_are_retained_and_stop_says_offline_same_session(
    make_reporter: Callable[..., Reporter], broker: Broker, unit_id: str
) -> None:
    reporter = make_reporter().start()
    assert reporter.client is not None and reporter.client.wait_connected(5)
    wait_for(lambda: reporter.states >= 1, what="a state publish")
    late = Watcher(broker.port, [f"nalox/v1/{unit_id}/#"])
    try:
        state = late.next(f"nalox/v1/{unit_id}/state")
        assert state.retain
        online = late.next(f"nalox/v1/{unit_id}/status")
        assert online.retain and json.loads(online.payload)["state"] == "online"
        session = reporter.session
        reporter.stop()
        offline = Status.model_validate_json(late.next(f"nalox/v1/{unit_id}/status").payload)
        assert (offline.state, offline.session) == ("offline", session)
    finally:
        late.close()


def test_session_counter_persists_across_restarts(
    make_reporter: Callable[..., Reporter], watcher: Watcher, unit_id: str
) -> None:
    first = make_reporter().start()
    s1 = Status.model_validate_json(watcher.next(f"nalox/v1/{unit_id}/status").payload).session
    first.stop()
    watcher.next(f"nalox/v1/{unit_id}/status")  # offline
    make_reporter().start()
    s2 = Status.model_validate_json(watcher.next(f"nalox/v1/{unit_id}/status").payload).session
    assert s2 > s1 >= 1


def test_events_leave_in_seq_order_and_ack_prunes_the_outbox(
    make_reporter: Callable[..., Reporter], watcher: Watcher, unit_id: str, tmp_path: Path
) -> None:
    clock = RealClock()
    ledger = real_ledger(tmp_path, unit_id, clock)
    written = [ledger.append_door(i % 2 == 0) for i in range(150)]
    reporter = make_reporter(clock=clock, ledger=ledger, inflight_window=16).start()
    seen = [parse_event(watcher.next(f"nalox/v1/{unit_id}/event/door").payload) for _ in written]
    assert [e.seq for e in seen] == [e.seq for e in written]
    assert [e.event_id for e in seen] == [e.event_id for e in written]
    assert ledger.depth() == 150  # delivered is not acked: nothing leaves before the central ack
    watcher.publish(f"nalox/v1/{unit_id}/ack", json.dumps({"acked_seq": 100})).wait_for_publish(5)
    wait_for(lambda: ledger.depth() == 50, what="outbox pruned to 50 rows")
    watcher.publish(f"nalox/v1/{unit_id}/ack", json.dumps({"acked_seq": 150})).wait_for_publish(5)
    wait_for(lambda: ledger.depth() == 0, what="outbox drained")
    assert reporter.delivered >= 150


def test_new_rows_are_sent_on_wake(
    make_reporter: Callable[..., Reporter], watcher: Watcher, unit_id: str, tmp_path: Path
) -> None:
    clock = RealClock()
    ledger = real_ledger(tmp_path, unit_id, clock)
    reporter = make_reporter(clock=clock, ledger=ledger).start()
    watcher.next(f"nalox/v1/{unit_id}/status")
    event = ledger.append_door(True)
    reporter.wake()
    assert parse_event(watcher.next(f"nalox/v1/{unit_id}/event/door").payload) == event


def test_bad_ack_is_ignored_and_never_prunes(
    make_reporter: Callable[..., Reporter], watcher: Watcher, unit_id: str, tmp_path: Path
) -> None:
    clock = RealClock()
    ledger = real_ledger(tmp_path, unit_id, clock)
    ledger.append_door()
    reporter = make_reporter(clock=clock, ledger=ledger).start()
    watcher.next(f"nalox/v1/{unit_id}/event/door")
    for bad in (b"", b"{", b'{"acked_seq": -1}', b'{"acked_seq": "all"}', b"[1]"):
        watcher.publish(f"nalox/v1/{unit_id}/ack", bad).wait_for_publish(5)
    watcher.publish(f"nalox/v1/{unit_id}/cmd/rebirth", _cmd("after-bad-acks")).wait_for_publish(5)
    watcher.next(f"nalox/v1/{unit_id}/cmd_response")  # processed in order after the bad acks
    assert ledger.depth() == 1 and reporter.connected


def test_backlog_alarm_rises_past_depth_and_clears_after_ack(
    make_reporter: Callable[..., Reporter], watcher: Watcher, unit_id: str, tmp_path: Path
) -> None:
    clock = RealClock()
    unit, ledger = StandInUnit(unit_id, clock), real_ledger(tmp_path, unit_id, clock)
    for _ in range(6):
        ledger.append_door()
    make_reporter(clock=clock, ledger=ledger, unit=unit, outbox_alarm_depth=5).start()
    wait_for(lambda: BACKLOG_ALARM in unit.alarms, what="the outbox backlog alarm")
    assert "6 unacknowledged" in unit.alarms[BACKLOG_ALARM].message
    watcher.publish(f"nalox/v1/{unit_id}/ack", json.dumps({"acked_seq": 6})).wait_for_publish(5)
    wait_for(lambda: BACKLOG_ALARM not in unit.alarms, what="the backlog alarm cleared")


def test_backlog_alarm_on_age_with_injected_clock(
    make_reporter: Callable[..., Reporter], watcher: Watcher, unit_id: str, tmp_path: Path
) -> None:
    clock = FakeClock()
    unit, ledger = StandInUnit(unit_id, clock), real_ledger(tmp_path, unit_id, clock)
    ledger.append_door()
    reporter = make_reporter(clock=clock, ledger=ledger, unit=unit, outbox_alarm_age_s=600)
    reporter.start()
    watcher.next(f"nalox/v1/{unit_id}/event/door")
    watcher.next(f"nalox/v1/{unit_id}/telemetry")  # the first one, at connect
    assert BACKLOG_ALARM not in unit.alarms
    clock.advance(601)
    reporter.wake()
    wait_for(lambda: BACKLOG_ALARM in unit.alarms, what="the age alarm")
    clock.advance(3600)  # telemetry is due: it carries the outbox age
    reporter.wake()
    telemetry = Telemetry.model_validate_json(watcher.next(f"nalox/v1/{unit_id}/telemetry").payload)
    assert telemetry.outbox_depth == 1 and telemetry.outbox_oldest_age_s is not None
    assert telemetry.outbox_oldest_age_s >= 4201


def _cmd(command_id: str, issued_at: str | None = None, **fields: object) -> str:
    issued = issued_at or RealClock().now().isoformat()
    return json.dumps({"command_id": command_id, "issued_at": issued, **fields})


@contextmanager
def commanding(make_reporter: Callable[..., Reporter], broker: Broker, unit_id: str, responses: str,
               **overrides: object) -> Iterator[tuple[StandInUnit, Reporter, Watcher]]:
    """A connected reporter for a stand-in unit, and an operator's client watching `responses`."""
    unit = StandInUnit(unit_id, RealClock())
    reporter = make_reporter(unit=unit, **overrides).start()
    assert reporter.client is not None and reporter.client.wait_connected(5)
    ops = Watcher(broker.port, [f"nalox/v1/{unit_id}/{responses}"])
    try:
        yield unit, reporter, ops
    finally:
        ops.close()


def test_each_command_is_answered_on_its_response_topic(
    make_reporter: Callable[..., Reporter], broker: Broker, unit_id: str
) -> None:
    expiry = (RealClock().now() + timedelta(days=300)).date().isoformat()
    cases = {
        "restock": ({"column": 1, "count": 20, "counted_before": 3}, "ok"),
        "set_lot": ({"column": 1, "lot": "LOT-7", "expiry": expiry}, "ok"),
        "lock": ({"reason": "maintenance"}, "ok"),
        "unlock": ({}, "ok"),
        "rebirth": ({}, "ok"),
        "replay": ({"from_seq": 1}, "error"),  # the stand-in ledger is empty: nothing to replay, said so
        "diag": ({}, "ok"),
        "test_vend": ({"column": 1}, "error"),  # the stand-in is not in service mode
    }
    with commanding(make_reporter, broker, unit_id, "cmd_response/#") as (unit, _, ops):
        for i, (name, (fields, expected)) in enumerate(cases.items()):
            reply_to = f"nalox/v1/{unit_id}/cmd_response/ops-{i}"
            ops.publish(
                f"nalox/v1/{unit_id}/cmd/{name}",
                _cmd(f"c-{name}", **fields),
                ResponseTopic=reply_to,
                CorrelationData=f"corr-{i}".encode(),
                MessageExpiryInterval=60,
            ).wait_for_publish(5)
            msg = ops.next(reply_to)
            answer = CommandResponse.model_validate_json(msg.payload)
            assert msg.properties.CorrelationData == f"corr-{i}".encode()
            assert (answer.command_id, answer.status) == (f"c-{name}", expected), answer
        assert [n for n, _ in unit.commands] == ["restock", "set_lot", "lock", "unlock", "diag", "test_vend"]
        assert "service mode" in (answer.reason or "")


def test_repeated_command_is_answered_again_without_acting(
    make_reporter: Callable[..., Reporter], broker: Broker, unit_id: str
) -> None:
    with commanding(make_reporter, broker, unit_id, "cmd_response/#") as (unit, _, ops):
        answers = []
        for _ in range(3):
            ops.publish(
                f"nalox/v1/{unit_id}/cmd/lock",
                _cmd("same-id"),
                ResponseTopic=f"nalox/v1/{unit_id}/cmd_response/x",
            ).wait_for_publish(5)
            answers.append(ops.next(f"nalox/v1/{unit_id}/cmd_response/x").payload)
        assert len(set(answers)) == 1 and json.loads(answers[0])["status"] == "ok"
        assert [n for n, _ in unit.commands] == ["lock"]


@pytest.mark.parametrize(
    "case", ["retained", "expired", "future", "unknown", "oversized", "not-json", "bad-field"]
)
def test_bad_commands_are_refused_with_a_reason(
    make_reporter: Callable[..., Reporter], broker: Broker, unit_id: str, case: str
) -> None:
    now = RealClock().now()
    name, payload, retain, expected = {
        "retained": ("lock", _cmd("r1"), True, "retained"),
        "expired": ("lock", _cmd("e1", (now - timedelta(seconds=120)).isoformat()), False, "expired"),
        "future": ("lock", _cmd("f1", (now + timedelta(seconds=120)).isoformat()), False, "future"),
        "unknown": ("self_destruct", _cmd("u1"), False, "unknown command"),
        "oversized": ("lock", _cmd("o1", reason="x" * 5000), False, "too large"),
        "not-json": ("lock", "lock it", False, "JSON"),
        "bad-field": ("restock", _cmd("b1", column=0, count=5), False, "column"),
    }[case]
    refusals = commanding(make_reporter, broker, unit_id, "cmd_response", command_max_age_s=60)
    with refusals as (unit, reporter, ops):
        try:
            ops.publish(f"nalox/v1/{unit_id}/cmd/{name}", payload, retain=retain).wait_for_publish(5)
            answer = CommandResponse.model_validate_json(ops.next(f"nalox/v1/{unit_id}/cmd_response").payload)
            assert answer.status == "error" and expected in (answer.reason or ""), answer
            assert unit.commands == [] and reporter.connected
        finally:
            if retain:
                ops.publish(f"nalox/v1/{unit_id}/cmd/{name}", b"", retain=True).wait_for_publish(5)


def test_response_topic_outside_the_unit_goes_to_the_default(
    make_reporter: Callable[..., Reporter], broker: Broker, unit_id: str
) -> None:
    reporter = make_reporter().start()
    assert reporter.client is not None and reporter.client.wait_connected(5)
    ops = Watcher(broker.port, [f"nalox/v1/{unit_id}/cmd_response", "elsewhere/#"])
    try:
        ops.publish(
            f"nalox/v1/{unit_id}/cmd/unlock", _cmd("d1"), ResponseTopic="elsewhere/x", CorrelationData=b"k"
        ).wait_for_publish(5)
        msg = ops.next()
        assert msg.topic == f"nalox/v1/{unit_id}/cmd_response"
        assert msg.properties.CorrelationData == b"k"
    finally:
        ops.close()


def test_rebirth_republishes_state_and_replay_resends(
    make_reporter: Callable[..., Reporter], watcher: Watcher, unit_id: str, tmp_path: Path
) -> None:
    clock = RealClock()
    ledger = real_ledger(tmp_path, unit_id, clock)
    events = [ledger.append_door() for _ in range(5)]
    reporter = make_reporter(clock=clock, ledger=ledger).start()
    for _ in events:
        watcher.next(f"nalox/v1/{unit_id}/event/door")
    watcher.next(f"nalox/v1/{unit_id}/state")  # the one on connect
    states = reporter.states
    watcher.publish(f"nalox/v1/{unit_id}/cmd/rebirth", _cmd("rb")).wait_for_publish(5)
    assert json.loads(watcher.next(f"nalox/v1/{unit_id}/cmd_response").payload)["status"] == "ok"
    watcher.next(f"nalox/v1/{unit_id}/state")
    assert reporter.states > states
    watcher.publish(f"nalox/v1/{unit_id}/cmd/replay", _cmd("rp", from_seq=3)).wait_for_publish(5)
    again = [parse_event(watcher.next(f"nalox/v1/{unit_id}/event/door").payload).seq for _ in range(3)]
    assert again == [3, 4, 5]


def test_replay_sends_only_the_range_asked_and_clips_an_open_or_long_one(
    make_reporter: Callable[..., Reporter], watcher: Watcher, unit_id: str, tmp_path: Path
) -> None:
    clock = RealClock()
    ledger = real_ledger(tmp_path, unit_id, clock)
    for _ in range(6):
        ledger.append_door()
    make_reporter(clock=clock, ledger=ledger, replay_max_seqs=3).start()
    doors, answers = f"nalox/v1/{unit_id}/event/door", f"nalox/v1/{unit_id}/cmd_response"
    assert [parse_event(watcher.next(doors).payload).seq for _ in range(6)] == [1, 2, 3, 4, 5, 6]

    def replay(command_id: str, **fields: int) -> tuple[dict[str, object], list[int]]:
        watcher.publish(f"nalox/v1/{unit_id}/cmd/replay", _cmd(command_id, **fields)).wait_for_publish(5)
        answer = json.loads(watcher.next(answers).payload)
        sent = answer["result"]["rows"] if answer["status"] == "ok" else 0
        return answer, [parse_event(watcher.next(doors).payload).seq for _ in range(sent)]

    answer, seqs = replay("r1", from_seq=2, to_seq=3)
    assert seqs == [2, 3] and answer["result"] | {"outbox_depth": 0} == {
        "from_seq": 2, "to_seq": 3, "rows": 2, "clipped": False, "limit": 3, "outbox_depth": 0, "last_seq": 6}
    answer, seqs = replay("r2", from_seq=1)  # no to_seq (an older central): at most the unit's cap
    assert seqs == [1, 2, 3] and (answer["result"]["to_seq"], answer["result"]["clipped"]) == (3, True)
    answer, seqs = replay("r3", from_seq=4, to_seq=10**6)  # far too long: clipped, told so
    assert seqs == [4, 5, 6] and (answer["result"]["to_seq"], answer["result"]["clipped"]) == (6, True)
    answer, seqs = replay("r4", from_seq=7)
    assert answer["status"] == "error" and "last seq 6, got 7" in answer["reason"], answer
    answer, seqs = replay("r5", from_seq=5, to_seq=4)
    assert answer["status"] == "error" and "to_seq >= from_seq" in answer["reason"], answer
    assert watcher.messages.empty() or all(  # nothing beyond the ranges answered was sent again
        m.topic != doors for m in list(watcher.messages.queue))


def test_fuzzed_commands_through_the_broker_each_get_one_answer(
    make_reporter: Callable[..., Reporter], broker: Broker, unit_id: str
) -> None:
    from hypothesis import given, settings

    from tests.controller.mqtt.test_commands import names, payloads

    unit = StandInUnit(unit_id, RealClock())
    reporter = make_reporter(unit=unit).start()
    assert reporter.client is not None and reporter.client.wait_connected(5)
    ops = Watcher(broker.port, [f"nalox/v1/{unit_id}/cmd_response/#"])
    counter = iter(range(1_000_000))

    @settings(max_examples=40, deadline=None)
    # topic names the broker accepts (no wildcards, separators or control characters)
    @given(name=names.filter(lambda n: n.isprintable() and n and not set(n) & set("/+#")), payload=payloads)
    def one(name: str, payload: bytes) -> None:
        corr = f"fz-{next(counter)}".encode()
        reply_to = f"nalox/v1/{unit_id}/cmd_response/fuzz"
        ops.publish(
            f"nalox/v1/{unit_id}/cmd/{name}", payload, ResponseTopic=reply_to, CorrelationData=corr
        ).wait_for_publish(5)
        answer = ops.next(reply_to)
        assert answer.properties.CorrelationData == corr
        response = CommandResponse.model_validate_json(answer.payload)
        assert response.status == "ok" or (response.reason and len(response.reason) > 5)

    try:
        one()
        assert reporter.connected and reporter.client.connects == 1
    finally:
        ops.close()


def test_a_cut_off_unit_with_a_state_change_waiting_does_not_spin(
    broker: Broker, make_reporter: Callable[..., Reporter], unit_id: str
) -> None:
    reporter = make_reporter().start()
    wait_for(lambda: reporter.connected, what="the reporter connected")
    broker.stop()  # cut off: the state change below cannot go out until the broker is back
    wait_for(lambda: not reporter.connected, what="the reporter to notice the broker is gone")
    looks = [0]
    poll = reporter._poll_timeout

    def counted() -> float:
        looks[0] += 1
        return poll()

    reporter._poll_timeout = counted  # type: ignore[method-assign]
    reporter.state_changed()
    pause = threading.Event()
    pause.wait(1.0)  # the measured interval itself: how often the worker looked in one second
    assert looks[0] <= 10, f"the worker looked {looks[0]} times in 1 s while cut off: it spins"
    broker.start()
    wait_for(lambda: reporter.connected, 30, what="the reporter back on the broker")
