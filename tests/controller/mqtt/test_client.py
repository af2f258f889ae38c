"""The MQTT wrapper against a real mosquitto: typed results, PUBACK codes, reconnect, resend."""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Iterator

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from controller.mqtt.client import CONNECTION_LOST, NOT_CONNECTED, InboundMessage, MqttClient, MqttSettings
from nalox.broker import Broker


def settings(port: int) -> MqttSettings:
    return MqttSettings(port=port, reconnect_min_s=0.05, reconnect_max_s=0.5, connect_timeout_s=5)


class Sink:
    """A plain paho subscriber collecting what arrives on a filter."""

    def __init__(self, port: int, topic_filter: str) -> None:
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"sink-{uuid.uuid4().hex[:8]}", protocol=paho.MQTTv5
        )
        subscribed = threading.Event()
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic_filter, qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(5), "expected a SUBACK for the sink within 5 s"

    def get(self, timeout: float = 5.0) -> paho.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def client(broker: Broker) -> Iterator[MqttClient]:
    inbound: queue.Queue[InboundMessage] = queue.Queue()
    c = MqttClient(
        settings(broker.port),
        f"t-{uuid.uuid4().hex[:8]}",
        on_message=inbound.put,
        subscriptions=[("test/in/#", 1)],
    )
    c.inbound = inbound  # type: ignore[attr-defined]
    c.start()
    assert c.wait_connected(5)
    yield c
    c.close()


def test_publish_reports_no_matching_subscribers_as_delivered(client: MqttClient) -> None:
    result = client.publish(f"test/nobody/{uuid.uuid4().hex}", b"x", qos=1).wait(5)
    assert result.reason_code == 0x10
    assert result.delivered


def test_publish_with_subscriber_is_success_and_arrives(broker: Broker, client: MqttClient) -> None:
    sink = Sink(broker.port, "test/out")
    try:
        result = client.publish("test/out", b"hello", qos=1).wait(5)
        assert (result.reason_code, result.delivered) == (0, True)
        assert sink.get().payload == b"hello"
    finally:
        sink.close()


def test_inbound_message_is_converted_with_v5_properties(broker: Broker, client: MqttClient) -> None:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    pub = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic, props.CorrelationData, props.MessageExpiryInterval = "test/reply", b"\x01\x02", 30
    pub.publish("test/in/cmd", b"{}", qos=1, properties=props).wait_for_publish(5)
    pub.disconnect()
    pub.loop_stop()
    msg = client.inbound.get(timeout=5)  # type: ignore[attr-defined]
    assert msg == InboundMessage(
        topic="test/in/cmd",
        payload=b"{}",
        qos=1,
        retain=False,
        correlation_data=b"\x01\x02",
        response_topic="test/reply",
        message_expiry=msg.message_expiry,
        content_type=None,
    )
    assert msg.message_expiry is not None and 0 < msg.message_expiry <= 30


def test_publish_while_disconnected_waits_then_is_sent_once(broker: Broker) -> None:
    """The network to the broker is cut (E7's TCP proxy); the broker and a subscriber stay up."""
    from nalox.chaos import TcpProxy

    proxy = TcpProxy(broker.port).start()
    sink = Sink(broker.port, "test/queued")
    client = MqttClient(settings(proxy.port), f"t-{uuid.uuid4().hex[:8]}").start()
    try:
        assert client.wait_connected(5)
        proxy.cut()
        assert _wait(lambda: not client.connected)
        queued = client.publish("test/queued", b"q1", qos=1)
        no_resend = client.publish("test/queued", b"q2", qos=1, resend=False)
        assert no_resend.wait(1).reason_code == NOT_CONNECTED
        assert not queued.done()
        proxy.restore()
        assert queued.wait(10).reason_code == 0x00  # the subscriber was there: a real delivery
        assert sink.get().payload == b"q1"
        marker = client.publish("test/queued", b"marker", qos=1).wait(5)
        assert marker.delivered and sink.get().payload == b"marker"  # nothing else came in between
        assert sink.messages.empty()
    finally:
        client.close()
        sink.close()
        proxy.close()


def test_inflight_without_resend_fails_on_connection_loss(broker: Broker, client: MqttClient) -> None:
    broker.proc.send_signal(19)  # SIGSTOP: the PUBACK can never come  # type: ignore[union-attr]
    handle = client.publish("test/stalled", b"x", qos=1, resend=False)
    broker.kill()
    assert handle.wait(client.settings.keepalive * 2).reason_code == CONNECTION_LOST
    assert not handle.result.delivered  # type: ignore[union-attr]


def _wait(cond, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    done = threading.Event()
    deadline = 0.0
    while deadline < timeout:
        if cond():
            return True
        done.wait(0.02)
        deadline += 0.02
    return bool(cond())


def test_publish_the_client_refuses_resolves_the_handle_instead_of_raising(client: MqttClient) -> None:
    from controller.mqtt.client import INVALID_PUBLISH

    result = client.publish("test/+/wild", b"x", qos=1).wait(1)
    assert result.reason_code == INVALID_PUBLISH and not result.delivered
    assert "wildcard" in result.reason
    assert client.publish("test/after", b"x", qos=1).wait(5).delivered  # still usable
