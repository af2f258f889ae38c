"""A small threaded MQTT v5 client: paho behind a wrapper with its own reconnect loop and typed results.

The aiomqtt v2.5.1 pattern, threaded: each connection is a fresh paho client (CallbackAPIVersion
VERSION2, MQTT v5, paho's own reconnect turned off, its network thread from loop_start). A supervisor
thread connects, waits for the connection to end and reconnects with capped exponential backoff and
full jitter. Paho objects never leave this module: inbound messages become `InboundMessage`, a publish
returns a `PublishHandle` whose `PublishResult` carries the v5 PUBACK reason code.

Traps handled here (see STYLE.md): paho marks a refused publish (PUBACK >= 0x80, e.g. 0x87 Not
authorized) as published, so `delivered` is decided from the reason code; 0x10 No matching subscribers
is a success. A publish while disconnected is never handed to paho (paho would queue it in memory and
return MQTT_ERR_NO_CONN): it waits in our own queue, or fails at once when `resend=False`. On a lost
connection every unacknowledged `resend=True` message is published again, in order, on the next
connection with a fresh paho client, so paho never resends anything behind our back. `on_publish` can
run before `publish()` returns the mid and runs holding paho's locks: callbacks only enqueue; a
dispatcher thread resolves handles and another delivers inbound messages, so user code never runs
inside paho and may block or publish.
"""

from __future__ import annotations

import contextlib
import queue
import random
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import BaseModel, ConfigDict, Field

from controller.errors import ControllerError
from schemas.models import REPLAY_MAX_SEQS

log = structlog.get_logger("nalox.mqtt")

NO_MATCHING_SUBSCRIBERS = 0x10
NOT_CONNECTED = -1  # local pseudo reason codes: never a PUBACK
CONNECTION_LOST = -2
CLIENT_CLOSED = -3
INVALID_PUBLISH = -4


class TlsSettings(BaseModel):
    """Client certificate login (production): the CA that signed the broker, our cert and key."""

    model_config = ConfigDict(extra="forbid")
    ca_file: Path
    cert_file: Path
    key_file: Path


class MqttSettings(BaseModel):
    """How a unit talks to the broker; the `[mqtt]` section of unit.toml."""

    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    tls: TlsSettings | None = None
    client_id: str | None = Field(default=None, description="default: the unit id")
    keepalive: int = Field(default=30, ge=5, le=3600)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    session_expiry_s: int = Field(default=0, ge=0, description="0: a clean session on every connect")
    telemetry_interval_s: float = Field(default=60.0, gt=0)
    inflight_window: int = Field(default=64, ge=1, le=65535)
    outbox_alarm_depth: int = Field(default=500, ge=1)
    outbox_alarm_age_s: float = Field(default=3600.0, gt=0)
    command_max_age_s: float = Field(default=600.0, gt=0)
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=60.0, gt=0)
    refused_retry_s: float = Field(default=30.0, gt=0, description="retry of an event the broker refused")
    ack_resend_s: float = Field(default=300.0, gt=0,
                                description="resend unacknowledged events when no ack came for this long")
    replay_max_seqs: int = Field(default=REPLAY_MAX_SEQS, ge=1, le=100_000,
                                 description="the most outbox rows one replay command sends again")
    # Kept so a unit.toml written for an earlier version still loads after an upgrade (a unit that
    # refuses its config after an update is a unit out of service): the file it names is imported
    # into the ledger once, then never used again.
    state_db: Path | None = Field(default=None, description="deprecated: the reporter's own SQLite file "
                                  "of earlier versions, imported once into the ledger; default: "
                                  "<ledger>.mqtt.sqlite")


@dataclass(frozen=True)
class InboundMessage:
    """A message the broker delivered to us, with the v5 properties we use. We subscribe with
    retain-as-published, so `retain` is the publisher's flag even on live delivery."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    correlation_data: bytes | None = None
    response_topic: str | None = None
    message_expiry: int | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class PublishResult:
    """How a publish ended. `reason_code` is the PUBACK's v5 code, or a negative local code."""

    mid: int
    reason_code: int
    reason: str

    @property
    def delivered(self) -> bool:
        return 0 <= self.reason_code < 0x80


class PublishTimeout(ControllerError, TimeoutError):
    """No PUBACK (or local failure) within the time the caller was prepared to wait."""


class PublishHandle:
    """Returned by `MqttClient.publish`: wait on it, or register a callback for when it ends."""

    def __init__(self, topic: str, payload: bytes, qos: int, retain: bool, resend: bool,
                 properties: dict[str, object] | None) -> None:
        self.topic, self.payload, self.qos, self.retain = topic, payload, qos, retain
        self.resend = resend
        self.properties = properties or {}
        self._done = threading.Event()
        self._result: PublishResult | None = None
        self._callbacks: list[Callable[[PublishHandle], None]] = []
        self._lock = threading.Lock()

    @property
    def result(self) -> PublishResult | None:
        return self._result

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float) -> PublishResult:
        if not self._done.wait(timeout):
            raise PublishTimeout(f"expected a PUBACK for {self.topic} within {timeout} s, got none")
        assert self._result is not None
        return self._result

    def add_done_callback(self, fn: Callable[[PublishHandle], None]) -> None:
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(fn)
                return
        fn(self)

    def _resolve(self, result: PublishResult) -> None:
        with self._lock:
            if self._done.is_set():
                return
            self._result = result
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            try:
                fn(self)
            except Exception:
                log.exception("publish_callback_failed", topic=self.topic)


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def backoff_delays(minimum: float, maximum: float, rng: random.Random) -> Iterator[float]:
    """Capped exponential backoff with full jitter: uniform(min, min(max, min * 2**n))."""
    ceiling = minimum
    while True:
        yield rng.uniform(minimum, ceiling)
        ceiling = min(maximum, ceiling * 2)


def to_inbound(msg: paho.MQTTMessage) -> InboundMessage:
    """The one place a paho message becomes ours."""
    props = getattr(msg, "properties", None)
    corr = getattr(props, "CorrelationData", None)
    return InboundMessage(
        topic=msg.topic, payload=bytes(msg.payload), qos=msg.qos, retain=bool(msg.retain),
        correlation_data=bytes(corr) if corr is not None else None,
        response_topic=getattr(props, "ResponseTopic", None),
        message_expiry=getattr(props, "MessageExpiryInterval", None),
        content_type=getattr(props, "ContentType", None),
    )


def _publish_properties(values: dict[str, object]) -> Properties | None:
    if not values:
        return None
    props = Properties(PacketTypes.PUBLISH)
    for name, value in values.items():
        setattr(props, name, value)
    return props


def _reason_name(code: ReasonCode | int) -> str:
    return code.getName() if isinstance(code, ReasonCode) else str(code)


class MqttClient:
    """One logical connection that survives broker restarts. Thread-safe.

    `on_connected()` runs on the supervisor thread after every CONNACK and after the subscriptions
    are granted (publish there freely); `on_disconnected(reason)` after every loss; `on_message(msg)`
    on the inbound thread, in arrival order.
    """

    def __init__(self, settings: MqttSettings, client_id: str,
                 on_message: Callable[[InboundMessage], None] | None = None,
                 on_connected: Callable[[], None] | None = None,
                 on_disconnected: Callable[[str], None] | None = None,
                 will: Callable[[], Will] | None = None,
                 subscriptions: list[tuple[str, int]] | None = None,
                 seed: int | None = None) -> None:
        self.settings = settings
        self.client_id = client_id
        self.on_message = on_message
        self.on_connected = on_connected
        self.on_disconnected = on_disconnected
        self.will = will
        self.subscriptions = list(subscriptions or [])
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._queue: list[PublishHandle] = []  # waiting for a connection, in order
        self._inflight: dict[int, PublishHandle] = {}  # mid -> handle, current connection only
        self._early: dict[int, tuple[int, str]] = {}  # PUBACKs that beat publish() returning the mid
        self._paho: paho.Client | None = None
        self._generation = 0
        self._connected = threading.Event()
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._events: queue.Queue[tuple[str, int, Any]] = queue.Queue()
        self._inbound: queue.Queue[InboundMessage | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._connack = threading.Event()
        self._connack_result: tuple[int, str] = (0, "")
        self._suback = threading.Event()
        self._suback_result: list[tuple[int, str]] = []
        self.connects = 0
        self.disconnects = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> MqttClient:
        for name, target in (("supervisor", self._supervise), ("acks", self._dispatch_acks),
                             ("inbound", self._dispatch_inbound)):
            t = threading.Thread(target=target, name=f"mqtt-{name}-{self.client_id}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Disconnect cleanly (no Will), stop every thread, fail whatever is still waiting."""
        self._stop.set()
        self._lost.set()
        for t in self._threads:
            if t.name.startswith("mqtt-supervisor"):
                t.join(timeout)
        self._events.put(("stop", 0, None))
        self._inbound.put(None)
        for t in self._threads:
            t.join(timeout)
        with self._lock:
            leftovers = self._queue + list(self._inflight.values())
            self._queue, self._inflight = [], {}
        for handle in leftovers:
            handle._resolve(PublishResult(0, CLIENT_CLOSED, "client closed before a PUBACK"))

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # ------------------------------------------------------------------ publishing

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False,
                resend: bool = True, properties: dict[str, object] | None = None) -> PublishHandle:
        """Publish; the handle ends on the PUBACK (QoS 1) or once written (QoS 0).

        While disconnected a `resend=True` message waits for the next connection; a `resend=False` one
        fails at once (NOT_CONNECTED), and fails with CONNECTION_LOST if the connection drops before
        its PUBACK: the caller resends from its own store.
        """
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        handle = PublishHandle(topic, data, qos, retain, resend and qos > 0, properties)
        if self._stop.is_set():
            handle._resolve(PublishResult(0, CLIENT_CLOSED, "client closed"))
            return handle
        with self._lock:
            client, generation = self._paho, self._generation
            if client is None or not self._connected.is_set():
                if handle.resend:
                    self._queue.append(handle)
                    return handle
                client = None
        if client is None:
            handle._resolve(PublishResult(0, NOT_CONNECTED, "not connected to the broker"))
            return handle
        self._send(client, generation, handle)
        return handle

    def _send(self, client: paho.Client, generation: int, handle: PublishHandle) -> None:
        try:
            info = client.publish(handle.topic, handle.payload, qos=handle.qos, retain=handle.retain,
                                  properties=_publish_properties(handle.properties))
        except (ValueError, TypeError) as exc:  # a wildcard in the topic, an oversized payload, ...
            handle._resolve(PublishResult(0, INVALID_PUBLISH, f"refused by the client: {exc}"))
            return
        with self._lock:
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS or generation != self._generation:
                # paho may have queued it internally: that client is being discarded, so nothing leaks
                if handle.resend and not self._stop.is_set():
                    self._queue.append(handle)
                    return
                failed = True
            else:
                failed = False
                early = self._early.pop(info.mid, None)
                if early is None:
                    self._inflight[info.mid] = handle
        if failed:
            handle._resolve(PublishResult(info.mid, NOT_CONNECTED, f"not sent: {info.rc.name}"))
        elif early is not None:
            handle._resolve(PublishResult(info.mid, early[0], early[1]))

    # ------------------------------------------------------------------ paho callbacks: enqueue only

    def _on_connect(self, client: paho.Client, userdata: int, flags: object, reason: ReasonCode,
                    properties: object) -> None:
        self._events.put(("connack", userdata, (reason.value, _reason_name(reason))))

    def _on_disconnect(self, client: paho.Client, userdata: int, flags: object, reason: ReasonCode,
                       properties: object) -> None:
        self._events.put(("lost", userdata, _reason_name(reason)))

    def _on_publish(self, client: paho.Client, userdata: int, mid: int, reason: ReasonCode,
                    properties: object) -> None:
        self._events.put(("puback", userdata, (mid, reason.value, _reason_name(reason))))

    def _on_subscribe(self, client: paho.Client, userdata: int, mid: int, reasons: list[ReasonCode],
                      properties: object) -> None:
        self._events.put(("suback", userdata, [(r.value, _reason_name(r)) for r in reasons]))

    def _on_message(self, client: paho.Client, userdata: int, msg: paho.MQTTMessage) -> None:
        self._inbound.put(to_inbound(msg))

    # ------------------------------------------------------------------ dispatchers

    def _dispatch_acks(self) -> None:
        while True:
            kind, generation, data = self._events.get()
            if kind == "stop":
                return
            if generation != self._generation:
                continue  # a discarded client's late news
            if kind == "puback":
                self._resolve_puback(*data)
            elif kind == "connack":
                self._connack_result = data
                self._connack.set()
            elif kind == "suback":
                self._suback_result = data
                self._suback.set()
            elif kind == "lost":
                self._lost.set()
                self._connack.set()

    def _resolve_puback(self, mid: int, code: int, name: str) -> None:
        with self._lock:
            handle = self._inflight.pop(mid, None)
            if handle is None:
                self._early[mid] = (code, name)
                return
        handle._resolve(PublishResult(mid, code, name))

    def _dispatch_inbound(self) -> None:
        while True:
            msg = self._inbound.get()
            if msg is None:
                return
            if self.on_message is None:
                continue
            try:
                self.on_message(msg)
            except Exception:
                log.exception("inbound_handler_failed", topic=msg.topic)

    # ------------------------------------------------------------------ supervisor

    def _supervise(self) -> None:
        delays = backoff_delays(self.settings.reconnect_min_s, self.settings.reconnect_max_s, self._rng)
        while not self._stop.is_set():
            ok = self._run_connection()
            if ok:
                delays = backoff_delays(self.settings.reconnect_min_s, self.settings.reconnect_max_s,
                                        self._rng)
            if self._stop.is_set():
                return
            delay = next(delays)
            log.info("mqtt_reconnect_wait", client_id=self.client_id, delay_s=round(delay, 3))
            self._stop.wait(delay)

    def _new_paho(self, generation: int) -> paho.Client:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv5,
                             userdata=generation, reconnect_on_failure=False)
        client.connect_timeout = self.settings.connect_timeout_s
        client.max_inflight_messages_set(65535)
        client.max_queued_messages_set(0)
        tls = self.settings.tls
        if tls is not None:
            client.tls_set(ca_certs=str(tls.ca_file), certfile=str(tls.cert_file), keyfile=str(tls.key_file),
                           cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        if self.will is not None:
            will = self.will()
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        client.on_connect, client.on_disconnect = self._on_connect, self._on_disconnect
        client.on_publish, client.on_message = self._on_publish, self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _run_connection(self) -> bool:
        """One connection from connect to loss. True when it got as far as CONNACK success."""
        with self._lock:
            self._generation += 1
            generation = self._generation
        self._lost.clear()
        self._connack.clear()
        client = self._new_paho(generation)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.settings.session_expiry_s
        try:
            client.connect(self.settings.host, self.settings.port, keepalive=self.settings.keepalive,
                           clean_start=self.settings.session_expiry_s == 0, properties=props)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.warning("mqtt_connect_failed", host=self.settings.host, port=self.settings.port,
                        error=f"{type(exc).__name__}: {exc}")
            return False
        client.loop_start()
        try:
            return self._serve_connection(client, generation)
        finally:
            self._teardown(client)

    def _serve_connection(self, client: paho.Client, generation: int) -> bool:
        if not self._connack.wait(self.settings.connect_timeout_s) or self._lost.is_set():
            log.warning("mqtt_no_connack", host=self.settings.host, port=self.settings.port)
            return False
        code, name = self._connack_result
        if code >= 0x80:
            log.error("mqtt_connect_refused", reason_code=code, reason=name)
            return False
        if not self._subscribe(client):
            return True
        with self._lock:
            self._paho = client
        self.connects += 1
        self._connected.set()
        log.info("mqtt_connected", client_id=self.client_id, host=self.settings.host, port=self.settings.port)
        self._flush_queue(client, generation)
        if self.on_connected is not None:
            try:
                self.on_connected()
            except Exception:
                log.exception("on_connected_failed")
        self._lost.wait()  # set on a lost connection and by close(): nothing to poll meanwhile
        return True

    def _subscribe(self, client: paho.Client) -> bool:
        if not self.subscriptions:
            return True
        self._suback.clear()
        # retainAsPublished: a retained publish keeps its flag on live delivery too, so it can be refused
        options = [(f, SubscribeOptions(qos=q, retainAsPublished=True)) for f, q in self.subscriptions]
        client.subscribe(options)
        if not self._suback.wait(self.settings.connect_timeout_s) or self._lost.is_set():
            log.warning("mqtt_no_suback", subscriptions=self.subscriptions)
            return False
        refused = [r for r in self._suback_result if r[0] >= 0x80]
        if refused:
            log.error("mqtt_subscription_refused", subscriptions=self.subscriptions, reasons=refused)
        return True

    def _flush_queue(self, client: paho.Client, generation: int) -> None:
        with self._lock:
            waiting, self._queue = self._queue, []
        for handle in waiting:
            self._send(client, generation, handle)

    def _teardown(self, client: paho.Client) -> None:
        """Drop a connection: requeue (in order) or fail what it never acknowledged."""
        self._connected.clear()
        with self._lock:
            self._paho = None
            self._generation += 1  # late callbacks of this client are ignored from here on
            unacked = list(self._inflight.values())  # send order
            self._inflight, self._early = {}, {}
            keep = [h for h in unacked if h.resend and not self._stop.is_set()]
            self._queue = keep + self._queue
        for handle in unacked:
            if handle not in keep:
                handle._resolve(PublishResult(0, CONNECTION_LOST, "connection lost before the PUBACK"))
        with contextlib.suppress(Exception):
            client.disconnect()
        client.loop_stop()
        self.disconnects += 1
        log.info("mqtt_disconnected", client_id=self.client_id)
        if self.on_disconnected is not None:
            try:
                self.on_disconnected("connection closed")
            except Exception:
                log.exception("on_disconnected_failed")
