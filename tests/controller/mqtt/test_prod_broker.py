"""The production broker config with generated certificates: TLS client auth, ACL, CRL, refused PUBACKs."""

from __future__ import annotations

import json
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from controller.clock import RealClock
from controller.mqtt.client import MqttClient
from controller.mqtt.reporter import REFUSED_ALARM, Reporter
from nalox.broker import Broker
from tests.controller.mqtt.certs import Pki, make_certs, prod_config
from tests.controller.mqtt.standins import StandInUnit, Watcher, real_ledger

NOT_AUTHORIZED = 0x87


@pytest.fixture(scope="module")
def prod_broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with prod_config(pki, tmp_path_factory.mktemp("prod-broker")) as broker:
        yield broker


SERVICES = ("inventory", "dashboard", "operations")


def tls_watcher(broker: Broker, pki: Pki, name: str, filters: list[str]) -> Watcher:
    return Watcher(
        broker.port,
        filters,
        client_id=f"{name}-{uuid.uuid4().hex[:6]}" if name in SERVICES else name,
        tls=pki.tls(name),
    )


def try_connect(broker: Broker, tls: dict[str, str] | None, client_id: str) -> str:
    """'connected' or what went wrong, within 5 s."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    if tls:
        client.tls_set(ca_certs=tls["ca"], certfile=tls.get("cert"), keyfile=tls.get("key"))
    outcome: list[str] = []
    done = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: (
        outcome.append("connected" if not rc.is_failure else str(rc)),
        done.set(),
    )
    client.on_disconnect = lambda c, u, f, rc, p: (outcome.append(f"disconnected: {rc}"), done.set())
    try:
        client.connect("127.0.0.1", broker.port)
    except (OSError, ssl.SSLError) as exc:
        return f"refused: {exc}"
    client.loop_start()
    try:
        done.wait(5)
        return outcome[0] if outcome else "no answer"
    finally:
        client.disconnect()
        client.loop_stop()


def test_valid_unit_certificate_connects(prod_broker: Broker, pki: Pki) -> None:
    assert try_connect(prod_broker, pki.tls("unit-a"), "unit-a") == "connected"


def test_revoked_certificate_cannot_connect(prod_broker: Broker, pki: Pki) -> None:
    outcome = try_connect(prod_broker, pki.tls("unit-c", revoked=True), "unit-c")
    assert outcome != "connected", outcome


def test_certificate_that_worked_is_refused_once_revoked(pki: Pki, tmp_path: Path) -> None:
    make_certs(pki.root, "unit", "unit-d")
    broker = prod_config(pki, tmp_path)
    try:
        broker.start()
        assert try_connect(broker, pki.tls("unit-d"), "unit-d") == "connected"
        broker.stop()
        make_certs(pki.root, "revoke", "unit-d")
        broker.start()  # mosquitto reads the CRL at start; SIGHUP also reloads it (checked on 2.0.11)
        outcome = try_connect(broker, pki.tls("unit-d", revoked=True), "unit-d")
        assert outcome != "connected", outcome
        assert try_connect(broker, pki.tls("unit-a"), "unit-a") == "connected"
    finally:
        broker.stop()
        broker.cleanup()


def test_no_certificate_or_foreign_ca_cannot_connect(prod_broker: Broker, pki: Pki, tmp_path: Path) -> None:
    ca = pki.tls("unit-a")["ca"]
    assert try_connect(prod_broker, {"ca": ca}, "nobody") != "connected"
    foreign = tmp_path / "foreign"
    make_certs(foreign, "init")
    make_certs(foreign, "unit", "unit-a")  # same CN, signed by another device CA
    impostor = {
        "ca": ca,
        "cert": str(foreign / "clients/unit-a/unit-a.crt"),
        "key": str(foreign / "clients/unit-a/unit-a.key"),
    }
    assert try_connect(prod_broker, impostor, "unit-a") != "connected"


def test_plain_tcp_is_not_served(prod_broker: Broker) -> None:
    assert try_connect(prod_broker, None, "plain") != "connected"


@pytest.fixture
def unit_a(prod_broker: Broker, pki: Pki, tmp_path: Path) -> Iterator[MqttClient]:
    client = MqttClient(pki.settings(prod_broker.port, "unit-a", tmp_path), "unit-a").start()
    assert client.wait_connected(5), "expected unit-a to connect with its certificate"
    yield client
    client.close()


OWN_REPORT_TOPICS = [
    "nalox/v1/unit-a/status",
    "nalox/v1/unit-a/state",
    "nalox/v1/unit-a/event/door",
    "nalox/v1/unit-a/telemetry",
    "nalox/v1/unit-a/cmd_response/ops-1",
]
NOT_ITS_OWN = [
    "nalox/v1/unit-b/status",
    "nalox/v1/unit-b/state",
    "nalox/v1/unit-b/event/dispense",
    "nalox/v1/unit-b/telemetry",
    "nalox/v1/unit-b/cmd_response",
    "nalox/v1/unit-b/cmd/lock",
    "nalox/v1/unit-a/cmd/lock",
    "nalox/v1/unit-a/ack",
    "nalox/v1/unit-b/ack",
    "nalox/v1/_central/alert",
    "elsewhere",
]


@pytest.mark.parametrize(
    ("topic", "own"), [(t, False) for t in NOT_ITS_OWN] + [(t, True) for t in OWN_REPORT_TOPICS]
)
def test_unit_publishes_only_under_its_own_report_topics(unit_a: MqttClient, topic: str, own: bool) -> None:
    result = unit_a.publish(topic, b"{}", qos=1).wait(5)
    if own:
        assert result.delivered and result.reason_code in (0x00, 0x10), result
    else:
        assert (result.reason_code, result.delivered) == (NOT_AUTHORIZED, False), result


def test_unit_subscribed_to_everything_receives_only_its_own_commands_and_acks(
    prod_broker: Broker, pki: Pki
) -> None:
    spy = tls_watcher(prod_broker, pki, "unit-a", ["#", "nalox/v1/unit-a/cmd/+", "nalox/v1/unit-a/ack"])
    assert spy.suback == [NOT_AUTHORIZED, 1, 1], "expected `#` refused (nalox_guard), its own topics granted"
    unit_b = tls_watcher(prod_broker, pki, "unit-b", [])
    inventory = tls_watcher(prod_broker, pki, "inventory", [])
    operations = tls_watcher(prod_broker, pki, "operations", [])
    try:
        for sub in ("status", "state", "telemetry", "event/dispense", "cmd_response"):
            assert unit_b.publish(f"nalox/v1/unit-b/{sub}", b"{}").wait_for_publish(5) is None
        inventory.publish("nalox/v1/unit-b/ack", json.dumps({"acked_seq": 3})).wait_for_publish(5)
        operations.publish("nalox/v1/unit-b/cmd/lock", b"{}").wait_for_publish(5)
        inventory.publish("nalox/v1/_central/alert", b"{}").wait_for_publish(5)
        inventory.publish("nalox/v1/unit-a/ack", json.dumps({"acked_seq": 1})).wait_for_publish(5)
        operations.publish("nalox/v1/unit-a/cmd/unlock", b"marker").wait_for_publish(5)
        got = [spy.next("nalox/v1/unit-a/ack"), spy.next("nalox/v1/unit-a/cmd/unlock")]
        assert [m.payload for m in got] == [b'{"acked_seq": 1}', b"marker"]
        with pytest.raises(AssertionError):
            spy.next(timeout=0.5)  # nothing else arrived: none of unit-b's topics, no alerts
        assert spy.stash == []
    finally:
        for w in (spy, unit_b, inventory, operations):
            w.close()


def test_services_have_their_own_rights(prod_broker: Broker, pki: Pki) -> None:
    inventory = tls_watcher(prod_broker, pki, "inventory", [])
    operations = tls_watcher(prod_broker, pki, "operations", [])
    dashboard = tls_watcher(prod_broker, pki, "dashboard", [])
    codes = {}

    def code(w: Watcher, topic: str) -> int:
        refused = threading.Event()
        rc: list[int] = []
        w.client.on_publish = lambda c, u, mid, r, p: (rc.append(r.value), refused.set())
        w.publish(topic, b"{}")
        assert refused.wait(5)
        return rc[0]

    try:
        codes["inventory ack"] = code(inventory, "nalox/v1/unit-a/ack")
        codes["inventory replay"] = code(inventory, "nalox/v1/unit-a/cmd/replay")
        codes["inventory lock"] = code(inventory, "nalox/v1/unit-a/cmd/lock")
        codes["inventory lot_hold"] = code(inventory, "nalox/v1/unit-a/cmd/lot_hold")
        codes["inventory state"] = code(inventory, "nalox/v1/unit-a/state")
        codes["operations lock"] = code(operations, "nalox/v1/unit-a/cmd/lock")
        codes["operations ack"] = code(operations, "nalox/v1/unit-a/ack")
        codes["operations event"] = code(operations, "nalox/v1/unit-a/event/dispense")
        codes["dashboard lock"] = code(dashboard, "nalox/v1/unit-a/cmd/lock")
        codes["dashboard ack"] = code(dashboard, "nalox/v1/unit-a/ack")
        codes["dashboard state"] = code(dashboard, "nalox/v1/unit-a/state")
    finally:
        inventory.close()
        operations.close()
        dashboard.close()
    allowed = {k: v < 0x80 for k, v in codes.items()}
    assert allowed == {
        "inventory ack": True,
        "inventory replay": True,
        "inventory lock": False,
        "inventory lot_hold": True,
        "inventory state": False,
        "operations lock": True,
        "operations ack": False,
        "operations event": False,
        "dashboard lock": True,
        "dashboard ack": False,
        "dashboard state": False,
    }, codes


def test_reporter_speaking_for_another_unit_keeps_rows_and_raises_alarm(
    prod_broker: Broker, pki: Pki, tmp_path: Path
) -> None:
    clock = RealClock()
    unit = StandInUnit("unit-b", clock)  # configured as unit-b, holding unit-a's certificate
    ledger = real_ledger(tmp_path, "unit-b", clock)
    events = [ledger.append_door() for _ in range(3)]
    reporter = Reporter(
        pki.settings(prod_broker.port, "unit-a", tmp_path, refused_retry_s=0.2), unit, ledger, clock
    ).start()
    inventory = tls_watcher(prod_broker, pki, "inventory", ["nalox/v1/#"])
    try:
        assert unit.alarm_raised.wait(10), "expected the reporter to raise an alarm on a refused PUBACK"
        assert REFUSED_ALARM in unit.alarms and "0x87" in unit.alarms[REFUSED_ALARM].message
        deadline = time.monotonic() + 10
        while reporter.refusals < 2 * len(events) and time.monotonic() < deadline:
            reporter.wake()
            unit.alarm_raised.wait(0.05)  # the alarm is set already: this only paces the polling
        assert reporter.refusals >= 2 * len(events), "expected refused rows to be retried"
        assert ledger.depth() == 3 and reporter.delivered == 0
        assert ledger.pending(0, 10)[0].seq == events[0].seq
        with pytest.raises(AssertionError):
            inventory.next(timeout=0.3)  # nothing of it reached anyone
        assert unit.alarm_log.count(("raised", REFUSED_ALARM)) == 1
    finally:
        reporter.stop()
        inventory.close()
