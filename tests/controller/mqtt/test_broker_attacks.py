"""Issue 11's broker attacks, made with a stolen unit certificate (unit-b) against deploy/mosquitto/prod.conf,
its acl and the nalox_guard plugin, certificates from deploy/pki/make-certs.sh. Each attack gets the
broker's clear refusal, and the honest unit (unit-a) and central keep working with nothing lost."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from nalox.broker import Broker
from tests.controller.mqtt.certs import Pki, prod_config
from tests.controller.mqtt.standins import Watcher
from tests.waiting import wait_for

NOT_AUTHORIZED = 0x87
EVENTS = "nalox/v1/+/event/+"


@pytest.fixture(scope="module")
def broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with prod_config(pki, tmp_path_factory.mktemp("attack-broker")) as b:
        yield b


def as_(broker: Broker, pki: Pki, cert: str, filters: list[str], client_id: str | None = None) -> Watcher:
    return Watcher(broker.port, filters, client_id=client_id or cert, tls=pki.tls(cert))


def puback(w: Watcher, topic: str, payload: bytes, retain: bool = False) -> int:
    """The PUBACK reason code of one QoS 1 publish (0x87: refused by the broker)."""
    answered = threading.Event()
    codes: list[int] = []
    w.client.on_publish = lambda c, u, mid, rc, p: (codes.append(rc.value), answered.set())
    w.publish(topic, payload, qos=1, retain=retain)
    assert answered.wait(5), f"expected a PUBACK for {topic} within 5 s"
    return codes[0]


def event(n: int) -> bytes:
    return json.dumps({"n": n}).encode()


def test_takeover_of_a_unit_client_id_leaves_the_unit_connected(broker: Broker, pki: Pki) -> None:
    honest = as_(broker, pki, "unit-a", ["nalox/v1/unit-a/cmd/+"])
    operations = as_(broker, pki, "operations", [])
    thief = as_(broker, pki, "unit-b", [], client_id="unit-a")
    try:
        assert thief.connected.wait(5), "the thief connects, but as its own identity (unit-b)"
        assert puback(operations, "nalox/v1/unit-a/cmd/lock", b"after-theft") < 0x80
        assert honest.next("nalox/v1/unit-a/cmd/lock").payload == b"after-theft"
        assert not honest.disconnected.is_set(), "expected the honest unit's connection untouched"
    finally:
        for w in (honest, operations, thief):
            w.close()


def test_takeover_of_the_central_persistent_session_fails(broker: Broker, pki: Pki) -> None:
    """A unit certificate asking for central's client id with clean start off gets its own session: the
    event queued for central while central was away is delivered to central."""
    central = _persistent(broker, pki, "inventory", "nalox-inventory")
    central.disconnect()
    central.loop_stop()
    unit = as_(broker, pki, "unit-a", [])
    thief_got: list[bytes] = []
    thief = _persistent(broker, pki, "unit-b", "nalox-inventory", thief_got)
    try:
        assert puback(unit, "nalox/v1/unit-a/event/door", b"queued-for-central") < 0x80
        got: list[bytes] = []
        back = _persistent(broker, pki, "inventory", "nalox-inventory", got)
        wait_for(lambda: b"queued-for-central" in got, 5, "central's session to deliver the queued event")
        back.disconnect()
        back.loop_stop()
        assert thief_got == []
    finally:
        unit.close()
        thief.disconnect()
        thief.loop_stop()


def _persistent(
    broker: Broker, pki: Pki, cert: str, client_id: str, got: list[bytes] | None = None
) -> paho.Client:
    got = [] if got is None else got
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    tls = pki.tls(cert)
    c.tls_set(ca_certs=tls["ca"], certfile=tls["cert"], keyfile=tls["key"])
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    subscribed = threading.Event()
    c.on_subscribe = lambda *a: subscribed.set()
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe([(EVENTS, 1)])
    c.on_message = lambda cl, u, m: got.append(m.payload)
    c.connect("127.0.0.1", broker.port, clean_start=False, properties=props)
    c.loop_start()
    assert subscribed.wait(5), f"expected {cert} to subscribe"
    return c


def test_unit_cannot_join_a_shared_group_and_central_gets_every_event(broker: Broker, pki: Pki) -> None:
    central = as_(broker, pki, "inventory", [f"$share/inventory/{EVENTS}"])
    thief = as_(broker, pki, "unit-b", [f"$share/inventory/{EVENTS}", "$share/x/#"])
    unit = as_(broker, pki, "unit-a", [])
    try:
        assert central.suback == [1]
        assert thief.suback == [NOT_AUTHORIZED, NOT_AUTHORIZED]
        for n in range(10):
            assert puback(unit, "nalox/v1/unit-a/event/door", event(n)) < 0x80
        got = sorted(json.loads(central.next(timeout=5).payload)["n"] for _ in range(10))
        assert got == list(range(10)), "expected central to receive all 10 events"
    finally:
        for w in (central, thief, unit):
            w.close()


@pytest.mark.parametrize(
    "filters",
    [["#"], ["nalox/#"], ["nalox/v1/+/cmd/#"], ["nalox/v1/unit-a/ack"], ["nalox/v1/unit-b/event/+"],
     ["$SYS/#"]],
)
def test_unit_wide_or_foreign_subscriptions_are_refused(broker: Broker, pki: Pki, filters: list[str]) -> None:
    thief = as_(broker, pki, "unit-b", filters)
    try:
        assert thief.suback == [NOT_AUTHORIZED]
    finally:
        thief.close()


@pytest.mark.parametrize(
    ("topic", "retain", "size", "allowed"),
    [
        ("nalox/v1/unit-b/event/dispense", False, 100, True),
        ("nalox/v1/unit-b/event/a/b", False, 100, False),
        ("nalox/v1/unit-b/event/", False, 100, False),
        ("nalox/v1/unit-b/cmd_response/x/y", False, 100, False),
        ("nalox/v1/unit-b/cmd_response/ops-1", False, 100, True),
        ("nalox/v1/unit-b/statusx", False, 100, False),
        ("nalox/v1/unit-b/event/dispense", True, 100, False),
        ("nalox/v1/unit-b/cmd_response/x", True, 100, False),
        ("nalox/v1/unit-b/telemetry", True, 100, False),
        ("nalox/v1/unit-b/state", True, 100, True),
        ("nalox/v1/unit-b/status", True, 100, True),
        ("nalox/v1/unit-b/event/dispense", False, 8192, True),
        ("nalox/v1/unit-b/event/dispense", False, 8193, False),
        ("nalox/v1/unit-b/state", True, 65536, True),
        ("nalox/v1/unit-b/telemetry", False, 16385, False),
    ],
)
def test_unit_publishes_only_exact_topics_retained_only_status_and_state(
    broker: Broker, pki: Pki, topic: str, retain: bool, size: int, allowed: bool
) -> None:
    thief = as_(broker, pki, "unit-b", [])
    try:
        code = puback(thief, topic, b"x" * size, retain=retain)
        assert (code < 0x80) == allowed, f"{topic} retain={retain} size={size}: PUBACK {code:#x}"
    finally:
        thief.close()


def test_packet_over_the_broker_limit_disconnects_the_sender(broker: Broker, pki: Pki) -> None:
    thief = as_(broker, pki, "unit-b", [])
    honest = as_(broker, pki, "unit-a", [])
    try:
        thief.publish("nalox/v1/unit-b/state", b"x" * 80_000, retain=True)
        assert thief.disconnected.wait(5), "expected the broker to drop a packet over max_packet_size"
        assert puback(honest, "nalox/v1/unit-a/event/door", b"{}") < 0x80
    finally:
        thief.close()
        honest.close()


@pytest.mark.parametrize("central", ["inventory", "inventory-0"])
def test_central_and_its_ingest_workers_have_the_same_rights_defined_once(
    broker: Broker, pki: Pki, central: str
) -> None:
    """The central role lives in nalox_guard (the acl file names users exactly): `inventory` and each
    ingest worker's certificate (`inventory-<n>`) get the same answers; a unit's certificate does not."""
    me = as_(broker, pki, central, [f"$share/inventory/{EVENTS}", "nalox/v1/+/state", "$SYS/#", "#"])
    try:
        assert me.suback == [1, 1, NOT_AUTHORIZED, NOT_AUTHORIZED]
        codes = {t: puback(me, t, b"{}") < 0x80 for t in (
            "nalox/v1/unit-a/ack", "nalox/v1/unit-a/cmd/replay", "nalox/v1/unit-a/cmd/lot_hold",
            "nalox/v1/_central/alert", "nalox/v1/unit-a/cmd/lock", "nalox/v1/unit-a/state",
            "nalox/v1/unit-a/event/dispense", "other/topic")}
        assert codes == {
            "nalox/v1/unit-a/ack": True, "nalox/v1/unit-a/cmd/replay": True,
            "nalox/v1/unit-a/cmd/lot_hold": True, "nalox/v1/_central/alert": True,
            "nalox/v1/unit-a/cmd/lock": False, "nalox/v1/unit-a/state": False,
            "nalox/v1/unit-a/event/dispense": False, "other/topic": False,
        }
        assert puback(me, "nalox/v1/_central/alert", b"{}", retain=True) == NOT_AUTHORIZED
    finally:
        me.close()
