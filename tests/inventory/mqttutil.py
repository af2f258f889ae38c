"""Test helper: a paho v5 publisher/subscriber playing the unit side."""

from __future__ import annotations

import threading

import paho.mqtt.client as paho


class UnitSide:
    """Publishes like a unit and records what the central service sends back."""

    def __init__(
        self, port: int, client_id: str, subscribe: tuple[str, ...] = (), tls: dict[str, str] | None = None
    ) -> None:
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        if tls:  # the production broker: a unit's certificate (tests/controller/mqtt/certs.py Pki.tls)
            self.client.tls_set(ca_certs=tls["ca"], certfile=tls["cert"], keyfile=tls["key"])
        self.received: list[paho.MQTTMessage] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if subscribe:
            self.client.subscribe([(t, 1) for t in subscribe])
            assert self._subscribed.wait(10), "subscription not granted"

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.received.append(msg)

    def messages(self, topic: str) -> list[paho.MQTTMessage]:
        with self._lock:
            return [m for m in self.received if m.topic == topic]

    def publish_all(self, msgs: list[tuple[str, bytes]], retain: bool = False, window: int = 500) -> None:
        """QoS 1, a bounded window of unacknowledged publishes, every one confirmed."""
        infos: list[paho.MQTTMessageInfo] = []
        for t, p in msgs:
            infos.append(self.client.publish(t, p, qos=1, retain=retain))
            if len(infos) >= window:
                infos.pop(0).wait_for_publish(10)
        for i in infos:
            i.wait_for_publish(10)
            assert i.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
