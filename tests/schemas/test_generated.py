"""The published contract: generated files are fresh, references resolve, every topic is documented."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas import generate
from schemas.models import COMMANDS, EVENT_TYPES, DispenseEvent, DoorEvent, RestockEvent, parse_event
from schemas.topics import EVENT_MODELS, TOPICS, by_name


def test_committed_files_match_the_models() -> None:
    for path, text in generate.render().items():
        assert path.read_text() == text, (
            f"{path.name} is stale: run `python -m schemas.generate` and commit it"
        )


def test_check_mode_reports_stale_files(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(generate, "EVENTS_FILE", tmp_path / "nalox-events.schema.json")
    monkeypatch.setattr(generate, "ASYNCAPI_FILE", tmp_path / "asyncapi.json")
    assert generate.main(["--check"]) == 1
    assert "stale" in capsys.readouterr().err
    assert generate.main([]) == 0 and generate.main(["--check"]) == 0


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"expected a local reference, got {ref}"
    node: Any = doc
    for part in ref[2:].split("/"):
        assert part in node, f"reference {ref} does not resolve at {part!r}"
        node = node[part]
    return node


@pytest.mark.parametrize("path", [generate.ASYNCAPI_FILE, generate.EVENTS_FILE], ids=lambda p: p.name)
def test_every_reference_resolves(path: Any) -> None:
    doc = json.loads(path.read_text())
    found = refs(doc)
    assert found
    for ref in found:
        resolve(doc, ref)


def test_asyncapi_documents_every_topic_with_qos_and_retain() -> None:
    doc = json.loads(generate.ASYNCAPI_FILE.read_text())
    assert doc["asyncapi"] == "3.0.0"
    assert set(doc["channels"]) == {t.name for t in TOPICS}
    expected = {
        "status": (1, True),
        "state": (1, True),
        "event": (1, False),
        "telemetry": (0, False),
        "cmd": (1, False),
        "cmd_response": (1, False),
        "ack": (1, False),
        "alert": (1, False),
    }
    got = {
        name: (op["bindings"]["mqtt"]["qos"], op["bindings"]["mqtt"]["retain"])
        for name, op in doc["operations"].items()
    }
    assert got == expected
    assert doc["channels"]["event"]["parameters"]["type"]["enum"] == list(EVENT_TYPES)
    assert doc["channels"]["cmd"]["parameters"]["name"]["enum"] == list(COMMANDS)
    assert doc["operations"]["cmd"]["reply"]["channel"] == {"$ref": "#/channels/cmd_response"}


def test_schemas_require_what_the_models_require() -> None:
    doc = json.loads(generate.ASYNCAPI_FILE.read_text())
    for spec in TOPICS:
        for model in spec.payloads:
            schema = doc["components"]["schemas"][model.__name__]
            required = {n for n, f in model.model_fields.items() if f.is_required()}
            assert set(schema.get("required", [])) == required, model.__name__
            assert schema["additionalProperties"] is False


def test_events_schema_is_a_discriminated_union_of_every_event_type() -> None:
    doc = json.loads(generate.EVENTS_FILE.read_text())
    assert doc["discriminator"]["propertyName"] == "type"
    assert set(doc["discriminator"]["mapping"]) == set(EVENT_TYPES) == set(EVENT_MODELS)
    assert by_name("event").payloads == tuple(EVENT_MODELS.values())


stamps = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


@given(
    seq=st.integers(1, 2**53),
    ts=stamps,
    column=st.integers(1, 64),
    stock=st.integers(0, 100_000),
    lot=st.none() | st.text(max_size=20),
    expiry=st.none() | st.dates(date(2020, 1, 1), date(2100, 1, 1)),
    via=st.sampled_from(["video", "window", "fallback", "test"]),
    command_id=st.integers(0, 2**32 - 1),
)
def test_dispense_events_round_trip_exactly(
    seq: int,
    ts: datetime,
    column: int,
    stock: int,
    lot: str | None,
    expiry: date | None,
    via: str,
    command_id: int,
) -> None:
    event = DispenseEvent(
        event_id="e" * 32,
        seq=seq,
        ts=ts,
        unit="unit-1",
        column=column,
        product="nx-4mg",
        doses=2,
        lot=lot,
        expiry=expiry,
        command_id=command_id,
        via=via,  # type: ignore[arg-type]
        stock_after=stock,
    )
    assert parse_event(event.model_dump_json()) == event


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_garbage_never_parses_as_an_event(raw: bytes) -> None:
    with pytest.raises(ValidationError):
        parse_event(raw)


def test_unknown_fields_and_wrong_types_are_refused_with_the_field_named() -> None:
    good = json.loads(
        DoorEvent(
            event_id="x" * 16, seq=1, ts=datetime(2026, 1, 1, tzinfo=UTC), unit="u1", open=True
        ).model_dump_json()
    )
    for bad, field in (
        ({**good, "name": "someone"}, "name"),
        ({**good, "seq": 0}, "seq"),
        ({**good, "type": "teleport"}, "type"),
    ):
        with pytest.raises(ValidationError) as info:
            parse_event(json.dumps(bad))
        assert field in str(info.value)
    assert isinstance(parse_event(json.dumps(good)), DoorEvent)
    assert RestockEvent.model_fields["source"].default == "local"
