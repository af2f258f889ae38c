"""Command validation and memory without a broker (injected clock), and hypothesis fuzzing of payloads."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.clock import FakeClock
from controller.ledger import CommandMemory, Ledger
from controller.mqtt.client import InboundMessage
from controller.mqtt.commands import CommandProcessor, CommandRefused, CommandResult, command_name
from schemas.models import COMMANDS, MAX_COMMAND_BYTES, CommandBase

UNIT = "unit-1"


class Ok(CommandResult):
    ok: bool


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, CommandBase]] = []

    def __call__(self, cmd: CommandBase) -> Ok:
        name = command_name(cmd)
        self.calls.append((name, cmd))
        if name == "test_vend":
            raise CommandRefused("test_vend needs service mode")
        if name == "diag":
            raise RuntimeError("serial port vanished")
        return Ok(ok=True)


def processor(
    memory: CommandMemory | None = None, clock: FakeClock | None = None, handler: Recorder | None = None
) -> tuple[CommandProcessor, Recorder, FakeClock]:
    clock = clock or FakeClock()
    handler = handler or Recorder()
    memory = memory or CommandMemory(Ledger(":memory:", clock, unit_id=UNIT))
    return CommandProcessor(UNIT, handler, memory, clock, 300), handler, clock


def msg(
    name: str,
    payload: bytes | str,
    retain: bool = False,
    response_topic: str | None = None,
    corr: bytes | None = b"c",
) -> InboundMessage:
    data = payload.encode() if isinstance(payload, str) else payload
    return InboundMessage(
        topic=f"nalox/v1/{UNIT}/cmd/{name}",
        payload=data,
        qos=1,
        retain=retain,
        correlation_data=corr,
        response_topic=response_topic,
    )


def body(clock: FakeClock, command_id: str = "c1", age_s: float = 0, **fields: Any) -> str:
    return json.dumps(
        {
            "command_id": command_id,
            "issued_at": (clock.now() - timedelta(seconds=age_s)).isoformat(),
            **fields,
        }
    )


def test_valid_command_acts_once_and_answers_ok() -> None:
    p, handler, clock = processor()
    reply = p.process(
        msg("lock", body(clock, reason="service"), response_topic=f"nalox/v1/{UNIT}/cmd_response/a")
    )
    assert (reply.response.status, reply.response.result) == ("ok", {"ok": True})
    assert (reply.topic, reply.correlation_data) == (f"nalox/v1/{UNIT}/cmd_response/a", b"c")
    assert [n for n, _ in handler.calls] == ["lock"]


def test_repeat_answers_the_stored_answer_even_after_restart(tmp_path: Path) -> None:
    db, clock = tmp_path / "ledger.sqlite", FakeClock()
    p, handler, clock = processor(CommandMemory(Ledger(db, clock, unit_id=UNIT)), clock)
    first = p.process(msg("unlock", body(clock, "same")))
    p.memory.ledger.close()
    p2, handler2, _ = processor(CommandMemory(Ledger(db, clock, unit_id=UNIT)), clock)
    clock.advance(3600)  # past max age: a repeat still gets the first answer, not an expiry
    again = p2.process(msg("unlock", body(clock, "same", age_s=3600)))
    assert again.response == first.response and again.response.status == "ok"
    assert handler2.calls == [] and len(handler.calls) == 1


def test_refusals_by_the_handler_are_remembered_too() -> None:
    p, handler, clock = processor()
    a = p.process(msg("test_vend", body(clock, "tv", column=1)))
    b = p.process(msg("test_vend", body(clock, "tv", column=1)))
    assert a.response == b.response and a.response.reason == "test_vend needs service mode"
    assert len(handler.calls) == 1


def test_handler_crash_is_an_error_answer_not_a_crash() -> None:
    p, _, clock = processor()
    reply = p.process(msg("diag", body(clock, "d1")))
    assert reply.response.status == "error" and "RuntimeError: serial port vanished" in (
        reply.response.reason or ""
    )


def test_dedup_covers_the_whole_age_window_whatever_the_rate() -> None:
    """2,000 commands in 100 s (the old memory kept 1,000): the first, captured and sent again with its
    own issued_at while that is still inside the 300 s window, is answered from memory, not run."""
    p, handler, clock = processor()
    first = p.process(msg("unlock", body(clock, "id-0")))
    issued = json.loads(body(clock, "id-0"))["issued_at"]
    for i in range(1, 2000):
        clock.advance(0.05)
        p.process(msg("unlock", body(clock, f"id-{i}")))
    assert len(handler.calls) == 2000
    again = p.process(msg("unlock", json.dumps({"command_id": "id-0", "issued_at": issued})))
    assert again.response == first.response and len(handler.calls) == 2000, "a captured command ran again"


def test_memory_forgets_only_what_the_age_check_refuses_anyway() -> None:
    p, handler, clock = processor()
    for i in range(50):
        p.process(msg("unlock", body(clock, f"old-{i}")))
    clock.advance(301)
    p.process(msg("unlock", body(clock, "new")))
    assert p.memory.count() == 1
    replay = p.process(msg("unlock", body(clock, "old-0", age_s=301)))
    assert replay.response.status == "error" and "expired" in (replay.response.reason or "")
    assert len(handler.calls) == 51


def test_memory_full_refuses_new_commands_and_forgets_nothing() -> None:
    memory = CommandMemory(Ledger(":memory:", FakeClock(), unit_id=UNIT), limit=10)
    p, handler, clock = processor(memory)
    for i in range(10):
        assert p.process(msg("unlock", body(clock, f"id-{i}"))).response.status == "ok"
    over = p.process(msg("unlock", body(clock, "id-10")))
    assert over.response.status == "error" and "too many commands" in (over.response.reason or "")
    assert all(memory.get(f"id-{i}") is not None for i in range(10)) and len(handler.calls) == 10


def test_a_refusal_for_age_can_be_retried_with_a_fresh_issued_at() -> None:
    p, handler, clock = processor()
    skewed = p.process(msg("lock", body(clock, "skew", age_s=-400)))  # central's clock ran ahead
    assert skewed.response.status == "error" and "future" in (skewed.response.reason or "")
    fresh = p.process(msg("lock", body(clock, "skew")))
    assert fresh.response.status == "ok" and len(handler.calls) == 1
    assert p.process(msg("lock", body(clock, "skew"))).response == fresh.response
    assert len(handler.calls) == 1


@pytest.mark.parametrize(("age_s", "ok"), [(0, True), (299, True), (301, False), (-299, True), (-301, False)])
def test_issued_at_must_be_recent(age_s: float, ok: bool) -> None:
    p, handler, clock = processor()
    reply = p.process(msg("lock", body(clock, f"age{age_s}", age_s=age_s)))
    assert (reply.response.status == "ok") is ok, reply.response
    assert len(handler.calls) == int(ok)


def test_naive_issued_at_is_taken_as_utc() -> None:
    p, _, clock = processor()
    naive = clock.now().replace(tzinfo=None).isoformat()
    reply = p.process(msg("lock", json.dumps({"command_id": "n", "issued_at": naive})))
    assert reply.response.status == "ok", reply.response


def test_no_response_topic_answers_on_the_default() -> None:
    p, _, clock = processor()
    reply = p.process(msg("lock", body(clock), response_topic=None, corr=None))
    assert (reply.topic, reply.correlation_data) == (f"nalox/v1/{UNIT}/cmd_response", None)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
command_like = st.fixed_dictionaries(
    {},
    optional={
        "command_id": st.one_of(st.text(max_size=80), st.integers(), st.none()),
        "issued_at": st.one_of(st.just("2026-11-01T12:00:00Z"), st.text(max_size=30), st.integers()),
        "column": st.one_of(st.integers(-5, 70), st.text(max_size=3)),
        "count": st.one_of(st.integers(-10, 200_000), st.floats()),
        "from_seq": st.integers(-3, 10),
        "lot": st.text(max_size=80),
        "expiry": st.one_of(st.just("2027-01-01"), st.text(max_size=12)),
        "extra": json_values,
    },
)
names = st.sampled_from(sorted(COMMANDS)) | st.text(max_size=30)
payloads = st.one_of(
    st.binary(max_size=600),
    json_values.map(lambda v: json.dumps(v).encode()),
    command_like.map(lambda v: json.dumps(v).encode()),
    st.binary(min_size=MAX_COMMAND_BYTES + 1, max_size=MAX_COMMAND_BYTES + 40),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=names, payload=payloads, retain=st.booleans())
def test_fuzzed_commands_never_crash_and_refusals_say_why(name: str, payload: bytes, retain: bool) -> None:
    p, handler, _ = processor()
    reply = p.process(
        InboundMessage(topic=f"nalox/v1/{UNIT}/cmd/{name}", payload=payload, qos=1, retain=retain)
    )
    assert reply.topic == f"nalox/v1/{UNIT}/cmd_response"
    json.loads(reply.payload)  # always a JSON answer
    if reply.response.status == "error":
        assert reply.response.reason and len(reply.response.reason) > 5
        assert handler.calls == [] or name in ("test_vend", "diag")
    else:
        assert not retain and name in COMMANDS and len(handler.calls) == 1
        assert len(payload) <= MAX_COMMAND_BYTES


@pytest.mark.parametrize(
    "wanted",
    [
        f"nalox/v1/{UNIT}/cmd_response/#",
        f"nalox/v1/{UNIT}/cmd_response/+/x",
        f"nalox/v1/{UNIT}/cmd_responses",
        "x",
    ],
)
def test_response_topic_with_wildcards_or_elsewhere_falls_back_to_the_default(wanted: str) -> None:
    p, _, clock = processor()
    reply = p.process(msg("lock", body(clock), response_topic=wanted))
    assert reply.topic == f"nalox/v1/{UNIT}/cmd_response"


def test_the_unit_keeps_who_sent_a_command_next_to_it_and_its_answer(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    legacy = tmp_path / "ledger.sqlite3.mqtt.sqlite"
    old = sqlite3.connect(legacy)  # the reporter's own file from before issued_by existed
    old.execute("CREATE TABLE command_answers (n INTEGER PRIMARY KEY AUTOINCREMENT, "
                "command_id TEXT UNIQUE NOT NULL, name TEXT NOT NULL, answer TEXT NOT NULL)")
    old.commit()
    old.close()
    ledger = Ledger(db, FakeClock(), unit_id=UNIT)
    assert ledger.import_reporter_file(legacy)
    p, handler, clock = processor(CommandMemory(ledger))
    body = {"command_id": "staff-1", "issued_at": clock.now().isoformat(), "issued_by": "olivia",
            "reason": "restock"}
    assert p.process(msg("lock", json.dumps(body))).response.status == "ok"
    assert handler.calls[0][1].issued_by == "olivia"
    remembered = CommandMemory(ledger).history()
    assert [(c.command_id, c.name, c.issued_by) for c in remembered] == [("staff-1", "lock", "olivia")]
    assert remembered[0].command is not None and remembered[0].command["reason"] == "restock"
    assert remembered[0].answer.status == "ok" and remembered[0].answered_at is not None
    too_long = dict(body, command_id="staff-2", issued_by="x" * 65)
    assert p.process(msg("lock", json.dumps(too_long))).response.status == "error"
