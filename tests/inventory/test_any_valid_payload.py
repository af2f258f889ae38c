"""Every page and API answers for any payload the published schema accepts (issue 11).

Hypothesis generates events, states, statuses and telemetry from the JSON Schema that schemas/
publishes (the same `model_json_schema()` the generator writes): edge values, unicode text, extreme
numbers, any time zone. They are ingested (valid ones counted, the rest refused and quarantined) and
every GET route of the dashboard and the API is asked for them: none may answer 5xx.
"""

from __future__ import annotations

import json
import re
import typing
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inventory.clock import FakeClock
from inventory.config import CentralConfig
from inventory.ingest import Incoming
from inventory.store import Store
from inventory.web import alerts, create_app, ingest, lots, reports, units
from schemas.models import Event, Status, Telemetry, UnitState
from tests.inventory.conftest import make_config
from tests.inventory.staff import make_token
from tests.inventory.test_ingest import ingestor

UNIT = "unit-001"
EVENT_MODELS = {m.model_fields["type"].default: m for m in typing.get_args(typing.get_args(Event)[0])}
ROUTERS = (units.pages, units.api, alerts.pages, alerts.api, reports.pages, reports.csv, reports.api,
           ingest.router, lots.pages, lots.api, lots.exports)


def from_schema(s: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A hypothesis strategy for the JSON values a (pydantic-generated) JSON Schema accepts."""
    if "$ref" in s:
        return st.deferred(lambda: from_schema(defs[s["$ref"].split("/")[-1]], defs))
    if "const" in s:
        return st.just(s["const"])
    if "enum" in s:
        return st.sampled_from(s["enum"])
    for key in ("anyOf", "oneOf"):
        if key in s:
            return st.one_of([from_schema(x, defs) for x in s[key]])
    t = s.get("type")
    if t == "object":
        props = s.get("properties", {})
        if not props and isinstance(s.get("additionalProperties"), dict):
            return st.dictionaries(st.text(max_size=12), from_schema(s["additionalProperties"], defs),
                                   max_size=3)
        required = set(s.get("required", []))
        return st.fixed_dictionaries(
            {k: from_schema(v, defs) for k, v in props.items() if k in required},
            optional={k: from_schema(v, defs) for k, v in props.items() if k not in required},
        )
    if t == "array":
        return st.lists(from_schema(s.get("items", {}), defs), min_size=s.get("minItems", 0),
                        max_size=min(s.get("maxItems", 4), 4))
    if t == "string":
        if s.get("format") == "date-time":
            return timestamps()
        if s.get("format") == "date":
            return st.dates(date(1, 1, 1), date(9999, 12, 31)).map(date.isoformat)
        lo, hi = s.get("minLength", 0), s.get("maxLength", 80)
        if "pattern" in s:
            return st.from_regex(s["pattern"], fullmatch=True).filter(lambda x: lo <= len(x) <= hi)
        return st.text(min_size=lo, max_size=min(hi, 80))
    if t == "integer":
        lo = s.get("minimum", s.get("exclusiveMinimum", -(2**63)) + ("exclusiveMinimum" in s))
        hi = s.get("maximum", s.get("exclusiveMaximum", 2**63) - ("exclusiveMaximum" in s))
        return st.integers(lo, hi)
    if t == "number":
        return st.floats(s.get("minimum"), s.get("maximum"), allow_nan=False, allow_infinity=False)
    if t == "boolean":
        return st.booleans()
    if t == "null":
        return st.none()
    return st.none()


NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def timestamps() -> st.SearchStrategy[str]:
    """Mostly near the clock (stored), sometimes anywhere in years 1-9999 (refused), any zone."""
    zones = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
    near = st.integers(-30 * 86400, 600).map(lambda s: NOW + timedelta(seconds=s))
    anywhere = st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59), timezones=st.just(UTC))
    def shown(p: tuple[datetime, timezone]) -> str:
        try:
            return p[0].astimezone(p[1]).isoformat()
        except OverflowError:  # 0001-01-01 west of UTC: write it with its zone by hand
            minutes = int(p[1].utcoffset(None).total_seconds() // 60)
            sign, m = ("-" if minutes < 0 else "+"), abs(minutes)
            return p[0].replace(tzinfo=None).isoformat() + f"{sign}{m // 60:02d}:{m % 60:02d}"

    return st.tuples(st.one_of(near, near, anywhere), zones).map(shown)


def schema_of(adapter_schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    return from_schema(adapter_schema, adapter_schema.get("$defs", {}))


EVENTS = st.one_of([  # one strategy per event type of the published union, its `type` always set
    schema_of(model.model_json_schema()).map(lambda b, name=name: {**b, "type": name})
    for name, model in EVENT_MODELS.items()
])
STATES = schema_of(UnitState.model_json_schema())
OTHERS = {
    "status": schema_of(Status.model_json_schema()),
    "telemetry": schema_of(Telemetry.model_json_schema()),
}


@st.composite
def messages(draw: st.DrawFn) -> Incoming:
    kind = draw(st.sampled_from(["event", "event", "event", "state", "status", "telemetry"]))
    if kind == "event":
        body = draw(EVENTS)
        body["unit"] = UNIT
        if draw(st.integers(0, 9)):  # mostly the version we speak; sometimes whatever was drawn
            body["schema_version"] = 1
        return Incoming(f"nalox/v1/{UNIT}/event/{body.get('type', 'dispense')}", json.dumps(body).encode())
    body = draw(STATES if kind == "state" else OTHERS[kind])
    if "unit" in body or kind == "state":
        body["unit"] = UNIT
    if kind == "state" and draw(st.integers(0, 9)):
        body["schema_version"] = 1
    return Incoming(f"nalox/v1/{UNIT}/{kind}", json.dumps(body).encode())


def get_paths(store: Store) -> list[str]:
    """Every GET route, its path parameters filled with what the store holds."""
    sites = {"site": "Site B"}
    lot = store.quarantined(None)  # touch the quarantine too
    assert isinstance(lot, list)
    out = []
    for router in ROUTERS:
        for r in router.routes:
            if "GET" not in getattr(r, "methods", set()):
                continue
            path = r.path.replace("{unit}", UNIT).replace("{year}", "2026")
            path = re.sub(r"\{site\}", sites["site"], path)
            out.append(path)
    return [*out, "/api/units/unit-001/events?limit=1000", "/api/quarantine?state=all",
            "/api/reports/period?start=2026-01-01&end=2026-12-31"]


@pytest.fixture
def web(store: Store, clock: FakeClock) -> tuple[TestClient, Any, CentralConfig]:
    config = make_config(ingest={"gap_timeout_s": 30})  # the production window
    ing, _ = ingestor(store, config, clock)
    client = TestClient(create_app(store, config, clock), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {make_token(store, 'admin', 'any payload')}"
    return client, ing, config


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(batch=st.lists(messages(), min_size=1, max_size=6))
def test_every_page_answers_for_any_schema_valid_payload(
    web: tuple[TestClient, Any, CentralConfig], store: Store, batch: list[Incoming]
) -> None:
    client, ing, _ = web
    ing.process(batch)
    for path in get_paths(store):
        r = client.get(path)
        assert r.status_code < 500, f"GET {path} answered {r.status_code}: {r.text[:300]}"
        assert r.status_code not in (401, 403), f"GET {path}: the test's token was refused"
