"""The daemon wired to E4's Reporter against a real mosquitto: events leave the ledger in seq order, the
retained state shows the unit, and a command with a v5 response topic is carried out by the daemon."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from controller.clock import RealClock
from controller.daemon import UnitDaemon
from controller.fakes import FakeBoard, FakePlayer
from nalox.broker import Broker
from tests.controller.conftest import make_config


def wait_for(what: str, predicate: Any, timeout: float) -> Any:
    deadline, pause = time.monotonic() + timeout, threading.Event()
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        pause.wait(0.02)
    raise AssertionError(f"expected {what} within {timeout}s")


def test_daemon_reports_events_state_and_answers_commands(tmp_path: Path, broker: Broker) -> None:
    config = make_config(
        tmp_path,
        mqtt={
            "host": "127.0.0.1",
            "port": broker.port,
            "keepalive": 10,
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 1.0,
        },
    )
    clock = RealClock()
    board = FakeBoard(columns=6, stock=20)
    daemon = UnitDaemon(config, board, FakePlayer(clock, auto="complete"), clock)
    got: queue.Queue[paho.MQTTMessage] = queue.Queue()
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}", protocol=paho.MQTTv5
    )
    client.on_message = lambda c, u, m: got.put(m)
    client.connect("127.0.0.1", broker.port)
    client.subscribe("nalox/v1/test-unit-1/#", qos=1)
    client.loop_start()
    messages: list[paho.MQTTMessage] = []

    def drain() -> list[paho.MQTTMessage]:
        while not got.empty():
            messages.append(got.get())
        return messages

    try:
        daemon.start()
        board.press("en")
        wait_for(
            "the dispense event on MQTT",
            lambda: any(m.topic.endswith("/event/dispense") for m in drain()),
            20,
        )
        ledger_ids = [e.event_id for e in daemon.ledger.events()]
        published = [json.loads(m.payload)["event_id"] for m in messages if "/event/" in m.topic]
        assert set(ledger_ids[:7]) <= set(published)
        states = [json.loads(m.payload) for m in messages if m.topic.endswith("/state")]
        assert states and states[-1]["unit"] == "test-unit-1" and states[-1]["mode"] == "vending"

        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "nalox/v1/test-unit-1/cmd_response/t1"
        props.CorrelationData = b"lock-1"
        cmd = {"command_id": "c-lock-1", "issued_at": datetime.now(UTC).isoformat(), "reason": "test"}
        client.publish("nalox/v1/test-unit-1/cmd/lock", json.dumps(cmd), qos=1, properties=props)
        reply = wait_for(
            "the lock command's response",
            lambda: [m for m in drain() if m.topic.endswith("/cmd_response/t1")],
            20,
        )[0]
        body = json.loads(reply.payload)
        assert body["status"] == "ok" and body["result"]["mode"] == "locked", body
        assert daemon.mode == "locked"
    finally:
        client.loop_stop()
        client.disconnect()
        daemon.stop()
