"""schemathesis against the inventory's own OpenAPI document: every operation, with an admin token,
inputs generated from the schema (and ones it forbids): no answer may be a server error (5xx).

A short run here (NALOX_OPENAPI_EXAMPLES, default 10 per operation); `make fuzz` runs 100 each.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from inventory.clock import FakeClock
from inventory.ingest import Incoming
from inventory.store import open_store
from inventory.web import create_app
from tests.inventory.conftest import make_config
from tests.inventory.staff import make_token
from tests.inventory.test_ingest import good_event, ingestor, stream

EXAMPLES = int(os.environ.get("NALOX_OPENAPI_EXAMPLES", "10"))
TOKEN: dict[str, str] = {}


@pytest.fixture(scope="module")
def api_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The service's web app over a SQLite store holding events, a quarantined message and a token."""
    store = open_store(str(tmp_path_factory.mktemp("openapi") / "central.sqlite"))
    clock = FakeClock()
    config = make_config()
    ing, _ = ingestor(store, config, clock)
    ing.process([Incoming(t, p) for t, p in stream(vends=5).messages()])
    t, good = good_event(seq=40)
    ing.process([Incoming(t, json.dumps({**json.loads(good), "new_field": 1}).encode())])
    TOKEN["Authorization"] = f"Bearer {make_token(store, 'admin', 'schemathesis')}"
    commands: list[tuple[str, str, bytes]] = []
    yield create_app(store, config, clock, send_command=lambda u, n, b: commands.append((u, n, b)))
    store.close()


@pytest.fixture(scope="module")
def api_schema(api_app: Any) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", api_app, headers=TOKEN)


def operations(schema: Any) -> list[Any]:
    return [r.ok() for r in schema.get_all_operations()]


def test_no_operation_answers_a_server_error(api_schema: Any) -> None:
    """Each operation of the document in turn, `EXAMPLES` generated cases each."""
    failures: list[str] = []
    calls: list[int] = []
    ops = operations(api_schema)
    assert len(ops) >= 20, [f"{o.method} {o.path}" for o in ops]
    for op in ops:

        @given(case=op.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck), derandomize=EXAMPLES <= 10)
        def one(case: Any) -> None:
            response = case.call(headers=TOKEN)
            calls.append(response.status_code)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code} "
                                f"{response.text[:200]}")

        one()
    print(f"schemathesis: {len(ops)} operations, {len(calls)} requests, "
          f"{sum(c >= 500 for c in calls)} server errors, {sum(c < 300 for c in calls)} answered 2xx")
    assert failures == [], failures[:10]


def test_the_document_lists_the_quarantine_and_accept_gap(api_app: Any) -> None:
    paths = api_app.openapi()["paths"]
    assert {"/api/quarantine", "/api/quarantine/{qid}/release", "/api/units/{unit}/accept-gap"} <= set(paths)
    assert Path(__file__).name  # (the parametrised test above covers every path listed here)
