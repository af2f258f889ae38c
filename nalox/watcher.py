"""The demo's MQTT watcher: a plain subscriber on nalox/v1/# that follows each unit's status, state and
events as they pass the broker, as anyone with mosquitto_sub could."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from nalox.census import TERMINAL_EVENTS


@dataclass
class UnitView:
    """What the MQTT tree says about one unit."""

    online: bool = False
    state: dict[str, Any] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)  # event type -> distinct events seen
    event_ids: set[str] = field(default_factory=set)


class Watcher:
    def __init__(self, port: int, tls: dict[str, str] | None = None) -> None:
        self.port = port
        self.units: dict[str, UnitView] = {}
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"nalox-demo-watch-{os.getpid()}", protocol=mqtt.MQTTv5
        )
        if tls:  # the production broker: an operations certificate (status, state, answers)
            self.client.tls_set(ca_certs=tls["ca"], certfile=tls["cert"], keyfile=tls["key"])
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("nalox/v1/#", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)

    def start(self) -> Watcher:
        self.client.connect_async("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        if len(parts) < 4:
            return
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            return
        if not isinstance(payload, dict):
            return
        with self.changed:
            view = self.units.setdefault(parts[2], UnitView())
            _apply(view, parts[3:], payload)
            self.changed.notify_all()

    def online(self, unit: str) -> bool:
        with self.lock:
            return self.units.get(unit, UnitView()).online

    def terminal_count(self, unit: str) -> int:
        """Vends of this unit that have ended (dispensed, failed, out of stock)."""
        with self.lock:
            events = self.units.get(unit, UnitView()).events
            return sum(events.get(t, 0) for t in TERMINAL_EVENTS)

    def wait_for(self, check: Callable[[], bool], timeout: float) -> bool:
        """Until `check()` (called under the lock, after each message) holds; False after `timeout`."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not check():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 0.5))
        return True


def _apply(view: UnitView, rest: list[str], payload: dict[str, Any]) -> None:
    if rest == ["status"]:
        view.online = payload.get("state") == "online"
    elif rest == ["state"]:
        view.state = payload
    elif rest[0] == "event" and len(rest) == 2:
        event_id = str(payload.get("event_id"))
        if event_id not in view.event_ids:
            view.event_ids.add(event_id)
            view.events[rest[1]] = view.events.get(rest[1], 0) + 1
