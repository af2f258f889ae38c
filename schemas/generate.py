"""Generate the published contract from the pydantic models: JSON Schema of events, AsyncAPI 3.0 document.

python -m schemas.generate          write schemas/nalox-events.schema.json and schemas/asyncapi.json
python -m schemas.generate --check  exit 1 (naming the stale files) if they differ from the models
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from schemas.models import COMMANDS, SCHEMA_VERSION, Event
from schemas.topics import EVENT_MODELS, TOPICS, TopicSpec

HERE = Path(__file__).resolve().parent
EVENTS_FILE = HERE / "nalox-events.schema.json"
ASYNCAPI_FILE = HERE / "asyncapi.json"
REF = "#/components/schemas/{model}"
BINDING_VERSION = "0.2.0"


def events_schema() -> dict[str, Any]:
    schema = TypeAdapter(Event).json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://nalox.example/schemas/v{SCHEMA_VERSION}/nalox-events.schema.json",
        "title": "nalox unit event",
        "description": "One event on nalox/v1/<unit>/event/<type>; `type` tells which.",
        **schema,
    }


def all_models() -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []
    for spec in TOPICS:
        for model in spec.payloads:
            if model not in seen:
                seen.append(model)
    return seen


def component_schemas() -> dict[str, Any]:
    _, top = models_json_schema([(m, "validation") for m in all_models()], ref_template=REF)
    return dict(sorted(top.get("$defs", {}).items()))


def message_name(spec: TopicSpec, model: type[BaseModel]) -> str:
    if spec.name == "event":
        return next(k for k, v in EVENT_MODELS.items() if v is model)
    if spec.name == "cmd":
        return next(k for k, v in COMMANDS.items() if v is model)
    return spec.name


def channel(spec: TopicSpec) -> dict[str, Any]:
    params: dict[str, Any] = (
        {"unit": {"$ref": "#/components/parameters/unit"}} if "{unit}" in spec.address else {}
    )
    if spec.name == "event":
        params["type"] = {"enum": list(EVENT_MODELS), "description": "the event's `type` field"}
    if spec.name == "cmd":
        params["name"] = {"enum": list(COMMANDS), "description": "the command name"}
    ch: dict[str, Any] = {
        "address": spec.address,
        "description": spec.description,
        "messages": {
            message_name(spec, m): {"$ref": f"#/components/messages/{m.__name__}"} for m in spec.payloads
        },
    }
    if params:
        ch["parameters"] = params
    return ch


def operation(spec: TopicSpec) -> dict[str, Any]:
    op: dict[str, Any] = {
        "action": "send" if spec.sender == "unit" else "receive",
        "channel": {"$ref": f"#/channels/{spec.name}"},
        "summary": {
            "unit": "published by the unit",
            "central": "published by the central inventory service",
            "operations": "published by operations staff tools",
        }[spec.sender],
        "messages": [
            {"$ref": f"#/channels/{spec.name}/messages/{message_name(spec, m)}"} for m in spec.payloads
        ],
        "bindings": {"mqtt": {"qos": spec.qos, "retain": spec.retain, "bindingVersion": BINDING_VERSION}},
    }
    if spec.name == "cmd":
        op["reply"] = {
            "channel": {"$ref": "#/channels/cmd_response"},
            "messages": [{"$ref": "#/channels/cmd_response/messages/cmd_response"}],
        }
    return op


def message(model: type[BaseModel]) -> dict[str, Any]:
    doc = (model.__doc__ or model.__name__).strip().splitlines()[0]
    return {
        "name": model.__name__,
        "title": model.__name__,
        "summary": doc,
        "contentType": "application/json",
        "payload": {"$ref": REF.format(model=model.__name__)},
    }


def asyncapi() -> dict[str, Any]:
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "nalox unit MQTT API",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": "MQTT v5 topics of nalox naloxone vending units, seen from a unit: `send` "
            "operations are what a unit publishes, `receive` what it takes in (acks and "
            "central alerts are sent by the central inventory service). No payload "
            "identifies a person. Generated from schemas/models.py by "
            "`python -m schemas.generate`.",
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "production": {
                "host": "broker.example.org:8883",
                "protocol": "mqtts",
                "protocolVersion": "5",
                "description": "TLS with client certificates; the certificate CN is the unit id",
                "security": [{"$ref": "#/components/securitySchemes/clientCertificate"}],
            },
            "development": {
                "host": "127.0.0.1:1883",
                "protocol": "mqtt",
                "protocolVersion": "5",
                "description": "deploy/mosquitto/dev.conf: loopback, no TLS",
            },
        },
        "channels": {spec.name: channel(spec) for spec in TOPICS},
        "operations": {f"{spec.name}": operation(spec) for spec in TOPICS},
        "components": {
            "schemas": component_schemas(),
            "messages": {m.__name__: message(m) for m in all_models()},
            "parameters": {"unit": {"description": "the unit id, which is the CN of its client certificate"}},
            "securitySchemes": {
                "clientCertificate": {"type": "X509", "description": "a certificate signed by the device CA"}
            },
        },
    }


def render() -> dict[Path, str]:
    return {
        EVENTS_FILE: json.dumps(events_schema(), indent=2) + "\n",
        ASYNCAPI_FILE: json.dumps(asyncapi(), indent=2) + "\n",
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    stale = []
    for path, text in render().items():
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(path.name)
        if not check:
            path.write_text(text)
    if check and stale:
        print(f"stale: {', '.join(stale)}; run: python -m schemas.generate", file=sys.stderr)
        return 1
    print(("wrote " if stale else "up to date: ") + ", ".join(stale or [p.name for p in render()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
