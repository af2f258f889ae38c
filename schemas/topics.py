"""The MQTT topic tree of DESIGN.md as data: address, direction, QoS, retain and payload model of each topic.

Used by the AsyncAPI generator and the tests; the unit and the central service build topic strings
with `schemas.models.topic()`.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from schemas.models import (
    COMMANDS,
    EVENT_TYPES,
    Ack,
    AlarmEvent,
    Alert,
    CommandResponse,
    DispenseEvent,
    DoorEvent,
    OutOfStockEvent,
    RestockEvent,
    Status,
    Telemetry,
    TemperatureEvent,
    UnitState,
    VendFailedEvent,
    VideoEvent,
)

EVENT_MODELS: dict[str, type[BaseModel]] = {
    "dispense": DispenseEvent,
    "vend_failed": VendFailedEvent,
    "video": VideoEvent,
    "out_of_stock": OutOfStockEvent,
    "restock": RestockEvent,
    "door": DoorEvent,
    "alarm": AlarmEvent,
    "temperature": TemperatureEvent,
}
assert tuple(EVENT_MODELS) == EVENT_TYPES, "EVENT_MODELS must list every event type, in order"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    address: str  # AsyncAPI address with {parameters}
    sender: str  # "unit", "central" or "operations"
    qos: int
    retain: bool
    payloads: tuple[type[BaseModel], ...]
    description: str


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        "status",
        "nalox/v1/{unit}/status",
        "unit",
        1,
        True,
        (Status,),
        "online on connect, offline before a clean shutdown and as the Last Will; `session` increases "
        "on every connection, so a late Will of an old session can be told apart",
    ),
    TopicSpec(
        "state",
        "nalox/v1/{unit}/state",
        "unit",
        1,
        True,
        (UnitState,),
        "the full state of the unit, on connect, on every change and on a rebirth command",
    ),
    TopicSpec(
        "event",
        "nalox/v1/{unit}/event/{type}",
        "unit",
        1,
        False,
        tuple(EVENT_MODELS.values()),
        "one event from the unit's ledger; `event_id` unique, `seq` strictly increasing per unit; "
        "sent at least once (deduplicate by event_id) until the central ack covers its seq",
    ),
    TopicSpec(
        "telemetry",
        "nalox/v1/{unit}/telemetry",
        "unit",
        0,
        False,
        (Telemetry,),
        "periodic temperature, uptime, serial link counters and outbox figures",
    ),
    TopicSpec(
        "cmd",
        "nalox/v1/{unit}/cmd/{name}",
        "operations",
        1,
        False,
        tuple(COMMANDS.values()),
        "a command to one unit, never retained (a retained command is refused); set the v5 response "
        "topic under nalox/v1/{unit}/cmd_response and correlation data, and a message expiry",
    ),
    TopicSpec(
        "cmd_response",
        "nalox/v1/{unit}/cmd_response",
        "unit",
        1,
        False,
        (CommandResponse,),
        "the answer to a command, with the command's correlation data; the unit answers on the "
        "command's response topic when it lies under this one, else here",
    ),
    TopicSpec(
        "ack",
        "nalox/v1/{unit}/ack",
        "central",
        1,
        False,
        (Ack,),
        "the highest seq the central store committed without gaps: the unit prunes its outbox up to it",
    ),
    TopicSpec(
        "alert",
        "nalox/v1/_central/alert",
        "central",
        1,
        False,
        (Alert,),
        "an alert raised or cleared by the central inventory service",
    ),
)


def by_name(name: str) -> TopicSpec:
    for spec in TOPICS:
        if spec.name == name:
            return spec
    raise KeyError(f"expected one of {[t.name for t in TOPICS]}, got {name!r}")
