"""kill -9 of the broker, several times, during a stream of events: every event reaches the central
subscriber at least once and the unit's outbox drains to empty once the (test's) central acks."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from controller.clock import RealClock
from controller.mqtt.reporter import Reporter
from nalox.broker import Broker
from schemas.models import parse_event
from tests.controller.mqtt.certs import Pki, prod_config
from tests.controller.mqtt.conftest import fast_settings
from tests.controller.mqtt.standins import StandInUnit, real_ledger
from tests.waiting import wait_for as wait_until

EVENTS = 400
KILLS = 4


class CentralAcker:
    """Stands in for the inventory service: collects events, acks the highest gap-free seq."""

    def __init__(self, port: int, unit_id: str, tls: dict[str, str] | None = None) -> None:
        self.unit_id = unit_id
        self.seen: set[int] = set()
        self.received = 0
        self.acked = 0
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._stop = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"inventory-{unit_id}", protocol=paho.MQTTv5
        )
        if tls:
            self.client.tls_set(ca_certs=tls["ca"], certfile=tls["cert"], keyfile=tls["key"])
        self.client.reconnect_delay_set(0.05, 0.3)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"nalox/v1/{unit_id}/event/#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._ack_loop, daemon=True)
        self._thread.start()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        event = parse_event(msg.payload)
        assert event.unit == self.unit_id
        with self._lock:
            self.received += 1
            self.seen.add(event.seq)
            while self.acked + 1 in self.seen:
                self.acked += 1
        self._changed.set()

    def _ack_loop(self) -> None:
        while not self._stop.is_set():
            self._changed.wait(0.3)  # also re-acks periodically: an ack lost in an outage is sent again
            self._changed.clear()
            with self._lock:
                acked = self.acked
            if acked:
                self.client.publish(f"nalox/v1/{self.unit_id}/ack", json.dumps({"acked_seq": acked}), qos=1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.parametrize("config", ["dev", "prod"])
def test_kill_9_broker_during_event_stream_loses_nothing(tmp_path: Path, pki: Pki, config: str) -> None:
    """dev: loopback, no persistence; prod: TLS client certificates, ACL, persistence on."""
    unit_id = "unit-outage"
    (tmp_path / "broker").mkdir()
    if config == "dev":
        broker = Broker(workdir=tmp_path / "broker")
        settings = fast_settings(broker.port, tmp_path, ack_resend_s=1.0, inflight_window=32)
        central_tls = None
    else:
        broker = prod_config(pki, tmp_path / "broker")
        settings = pki.settings(broker.port, unit_id, tmp_path, ack_resend_s=1.0, inflight_window=32)
        central_tls = pki.tls("inventory")
    broker.start()
    clock = RealClock()
    ledger = real_ledger(tmp_path, unit_id, clock)
    reporter = Reporter(settings, StandInUnit(unit_id, clock), ledger, clock).start()
    central = CentralAcker(broker.port, unit_id, central_tls)
    stop_producing = threading.Event()

    def produce() -> None:
        for _ in range(EVENTS):
            if stop_producing.is_set():
                return
            ledger.append_door()
            reporter.wake()
            stop_producing.wait(0.004)  # the pace of the event stream, not a synchronisation

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        assert reporter.client is not None
        for kill in range(KILLS):
            before = ledger.last_seq()
            wait_until(
                lambda b=before: central.received > 0 and ledger.last_seq() >= b + 20,
                20,
                "the stream to go on between kills",
            )
            connects = reporter.client.connects
            broker.kill()
            mark = ledger.last_seq()
            wait_until(
                lambda m=mark: ledger.last_seq() >= min(EVENTS, m + 15),
                20,
                "events to pile up while the broker is down",
            )
            broker.start()
            wait_until(
                lambda c=connects: reporter.client.connects > c, 20, f"reconnect after kill {kill + 1}"
            )
        producer.join(30)
        assert ledger.last_seq() == EVENTS
        wait_until(lambda: central.seen == set(range(1, EVENTS + 1)), 60, "every event at the central")
        wait_until(lambda: ledger.depth() == 0, 30, "the outbox drained by acks")
        assert central.acked == EVENTS
        assert reporter.client.connects >= KILLS + 1
        assert central.received >= EVENTS  # at least once; duplicates are the central's to drop by event_id
    finally:
        stop_producing.set()
        producer.join(10)
        central.close()
        reporter.stop()
        broker.stop()
        broker.cleanup()
