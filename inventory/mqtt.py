"""The ingest's MQTT edge: a paho 2.x v5 client with a persistent session and manual acks.

paho's network thread only queues messages; a worker thread writes them to the store in batches
and acknowledges each one (PUBACK) after the batch's commit. A message received on an older
connection is not acknowledged on the new one (its packet id may be reused): the broker sends it
again and the store's (unit, event_id) key makes the second copy a no-op.
"""

from __future__ import annotations

import queue
import ssl
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from inventory import log
from inventory.clock import Clock
from inventory.config import CentralConfig, MqttSettings
from inventory.ingest import Incoming, Ingestor
from inventory.store import Store
from schemas.models import TOPIC_ROOT

EVENTS = f"{TOPIC_ROOT}/+/event/#"
PLAIN = (f"{TOPIC_ROOT}/+/state", f"{TOPIC_ROOT}/+/status", f"{TOPIC_ROOT}/+/telemetry")


def make_client(settings: MqttSettings, client_id: str) -> paho.Client:
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5, manual_ack=True
    )
    if settings.tls is not None:
        client.tls_set(
            ca_certs=str(settings.tls.ca_file),
            certfile=str(settings.tls.cert_file) if settings.tls.cert_file else None,
            keyfile=str(settings.tls.key_file) if settings.tls.key_file else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    if settings.username:
        client.username_pw_set(settings.username, settings.password)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    client.max_queued_messages_set(0)
    return client


def stop_client(client: paho.Client, stop: threading.Event, worker: threading.Thread, timeout: float) -> None:
    """Ends a client's own worker thread (waiting for it up to `timeout` s), then the connection and
    paho's network loop."""
    stop.set()
    if worker.is_alive():
        worker.join(timeout=timeout)
    client.disconnect()
    client.loop_stop()


class IngestWorker:
    """One MQTT session + one store connection + one writer thread."""

    def __init__(
        self,
        config: CentralConfig,
        store: Store,
        clock: Clock,
        client_id: str,
        shared: bool,
        worker: int = 0,
    ) -> None:
        self.config, self.store, self.clock, self.client_id = config, store, clock, client_id
        self.settings = config.mqtt.for_worker(worker)  # its own certificate: the broker's CN = client id
        self.shared = shared
        self.response_topic = f"{TOPIC_ROOT}/+/cmd_response/{client_id}"  # what we subscribe to
        self.log = log.get("mqtt").bind(client_id=client_id)
        self.inserted_total = 0  # events this worker inserted (logged at stop: no line per batch of kits)
        self.client = make_client(self.settings, client_id)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.subscribed = threading.Event()
        self.ingestor = Ingestor(store, config, clock, self.publish, client_id)
        self.connected = threading.Event()
        # bounded: QoS 1 is bounded already by the receive maximum; QoS 0 (telemetry) past it is dropped
        self._queue: queue.Queue[Incoming] = queue.Queue(maxsize=2 * config.ingest.queue_max)
        self.dropped_qos0 = 0
        self._generation = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ingest-{client_id}", daemon=True)
        self.on_batch: Callable[[int], None] | None = None  # tests/bench: called with messages committed

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.settings.session_expiry_s
        # back-pressure: the broker sends at most queue_max unacknowledged QoS 1 messages (we ack after
        # the commit); the rest wait in the broker's bounded queue for this session, not in our memory
        props.ReceiveMaximum = self.config.ingest.queue_max
        self.client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()
        self._thread.start()

    def stop(self) -> None:
        stop_client(self.client, self._stop, self._thread, timeout=30)
        self.log.info("ingest_stopped", inserted=self.inserted_total)

    # ------------------------------------------------ paho callbacks (paho's thread: be quick)
    def _on_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.ConnectFlags,
        reason: paho.ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self.log.error("mqtt_connect_refused", reason=str(reason))
            return
        self._generation += 1
        events = f"$share/{self.settings.shared_group}/{EVENTS}" if self.shared else EVENTS
        topics = [(t, 1) for t in (*PLAIN, events, self.response_topic)]
        client.subscribe(topics)
        self.connected.set()
        self.log.info(
            "mqtt_connected",
            session_present=flags.session_present,
            events=events,
            generation=self._generation,
        )

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reasons: list[paho.ReasonCode],
        properties: Properties | None,
    ) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            self.log.error("mqtt_subscribe_refused", reasons=failed)
            return
        self.subscribed.set()
        self.log.info("mqtt_subscribed", topics=len(reasons))

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.DisconnectFlags,
        reason: paho.ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connected.clear()
        self.subscribed.clear()
        self.log.warning("mqtt_disconnected", reason=str(reason))

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        try:
            t = msg.topic
        except UnicodeDecodeError:
            t = "<invalid utf-8 topic>"
        m = Incoming(t, bytes(msg.payload), msg.mid, msg.qos, self._generation)
        if msg.qos == 0:
            try:
                self._queue.put_nowait(m)
            except queue.Full:
                self.dropped_qos0 += 1  # telemetry: the next one will do
            return
        while not self._stop.is_set():  # blocks paho's reader: the broker keeps the rest
            try:
                self._queue.put(m, timeout=0.5)
                return
            except queue.Full:
                continue

    # ---------------------------------------------------------------- publishing
    def publish(
        self,
        t: str,
        payload: bytes,
        qos: int,
        response_topic: str | None,
        correlation: bytes | None,
        expiry_s: int | None,
    ) -> None:
        props = None
        if response_topic or expiry_s:
            props = Properties(PacketTypes.PUBLISH)
            if response_topic:
                props.ResponseTopic = response_topic
            if correlation:
                props.CorrelationData = correlation
            if expiry_s:
                props.MessageExpiryInterval = expiry_s
        self.client.publish(t, payload, qos=qos, properties=props)

    # ---------------------------------------------------------------- writer thread
    def _run(self) -> None:
        next_tick = time.monotonic()
        self.ingestor.check_all()
        while not self._stop.is_set() or not self._queue.empty():
            batch = self._take_batch()
            if batch:
                self._write(batch)
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + min(1.0, self.config.ingest.gap_timeout_s / 4)
                self._tick()

    def _take_batch(self) -> list[Incoming]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        while len(batch) < self.config.ingest.batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write(self, batch: list[Incoming]) -> None:
        delay, failures = 0.5, 0
        while True:
            try:
                if failures < 3:
                    r = self.ingestor.process(batch)
                    self.inserted_total += r.inserted
                    # a line per batch of kits would time each kit exactly: info only for refusals
                    level = self.log.info if r.rejected else self.log.debug
                    level(
                        "batch_committed",
                        messages=len(batch),
                        inserted=r.inserted,
                        duplicates=r.duplicates,
                        rejected=r.rejected,
                    )
                else:
                    self.ingestor.process_each(batch)
                break
            except Exception as e:  # the database is down or refused: keep the batch, unacked, and retry
                failures += 1
                self.log.error("batch_failed", error=repr(e), messages=len(batch), retry_in_s=delay)
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, 30)
        for m in batch:
            if m.qos > 0 and m.generation == self._generation:
                self.client.ack(m.mid, m.qos)
        if self.on_batch:
            self.on_batch(len(batch))

    def _tick(self) -> None:
        try:
            self.ingestor.tick()
        except Exception as e:
            self.log.error("tick_failed", error=repr(e))
