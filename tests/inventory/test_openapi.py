"""The OpenAPI document describes every answer: each JSON endpoint names a schema, each CSV one says so."""

from __future__ import annotations

from inventory.clock import FakeClock
from inventory.config import CentralConfig
from inventory.store import Store
from inventory.web import create_app


def test_every_endpoint_in_the_openapi_document_describes_its_answer(store: Store, clock: FakeClock) -> None:
    spec = create_app(store, CentralConfig(), clock).openapi()
    empty, untyped = [], []
    files = {"/reports/export.json"}  # a download: the file's layout is described in its own docs
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            ok = next(code for code in op["responses"] if code.startswith("2"))
            content = op["responses"][ok].get("content", {})
            schema = next(iter(content.values()), {}).get("schema", {})
            if not schema or schema == {}:
                empty.append(f"{method.upper()} {path}")
            if "application/json" in content and "$ref" not in str(schema) and path not in files:
                untyped.append(f"{method.upper()} {path}")
    assert not empty, f"endpoints with no response schema: {empty}"
    assert not untyped, f"JSON endpoints answering an untyped dict instead of a model: {untyped}"
    assert "text/csv" in spec["paths"]["/reports/monthly.csv"]["get"]["responses"]["200"]["content"]
    assert spec["paths"]["/api/units"]["get"]["responses"]["200"]["content"]["application/json"]["schema"][
        "items"
    ] == {"$ref": "#/components/schemas/UnitOut"}
    assert {"MonthlyRow", "AlertsOut", "IngestOut", "Health", "AuditOut", "CommandOut"} <= set(
        spec["components"]["schemas"]
    )
