"""Fault injection for the soak: a TCP proxy that can cut a unit off its broker, and a seeded plan of
real-world faults (broker kill -9, unit kill -9 during a dispense, board reboot, line noise, jams,
door, network cut) applied to a running stack at random but reproducible moments."""

from __future__ import annotations

import json
import random
import select
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

log = structlog.get_logger("nalox.chaos")

FAULTS = (
    "broker_kill",
    "unit_kill_in_dispense",
    "board_reboot",
    "noise",
    "jam",
    "door",
    "cut",
    "central_kill",
)


class TcpProxy:
    """Forwards 127.0.0.1:listen_port to 127.0.0.1:target_port. cut() drops every connection and refuses
    new ones (by closing them at once) until restore(): the network between a unit and its broker."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = int(self.server.getsockname()[1])
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True)

    def start(self) -> TcpProxy:
        self._accept.start()
        return self

    @property
    def is_cut(self) -> bool:
        return self._cut.is_set()

    def cut(self) -> None:
        self._cut.set()
        self._drop_all()
        log.info("proxy cut", port=self.port)

    def restore(self) -> None:
        self._cut.clear()
        log.info("proxy restored", port=self.port)

    def close(self) -> None:
        self._closed.set()
        self.server.close()
        self._drop_all()
        self._accept.join(2)
        for t in list(self._threads):
            t.join(2)

    def _drop_all(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            _close(a)
            _close(b)

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                ready, _, _ = select.select([self.server], [], [], 0.1)
                if not ready:
                    continue
                client, _ = self.server.accept()
            except OSError:
                return
            self._connect(client)

    def _connect(self, client: socket.socket) -> None:
        if self._cut.is_set():
            _close(client)
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
        except OSError:
            _close(client)
            return
        with self._lock:
            self._pairs.append((client, upstream))
        t = threading.Thread(target=self._pump, args=(client, upstream), name="proxy-pump", daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while not self._closed.is_set():
                ready, _, _ = select.select([a, b], [], [], 0.1)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    peers[s].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            _close(a)
            _close(b)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


@dataclass
class ChaosPlan:
    """Which fault (if any) to inject before each press: seeded, so a failing soak can be replayed."""

    seed: int
    rate: float = 0.15  # chance of a fault before any one press
    weights: dict[str, float] = field(
        default_factory=lambda: {
            "broker_kill": 2,
            "unit_kill_in_dispense": 3,
            "board_reboot": 2,
            "noise": 2,
            "jam": 2,
            "door": 2,
            "cut": 2,
            "central_kill": 1,
            "hostile": 2,
        }
    )
    cover_all: bool = False  # the first faults go through every kind once (in a seeded order)
    injected: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.uncovered = list(self.weights) if self.cover_all else []
        self.rng.shuffle(self.uncovered)

    def next_fault(self) -> str | None:
        if self.rng.random() >= self.rate:
            return None
        if self.uncovered:
            return self.uncovered.pop()
        names = list(self.weights)
        return self.rng.choices(names, weights=[self.weights[n] for n in names])[0]

    def record(self, name: str) -> None:
        self.injected[name] += 1
        log.info("fault injected", fault=name, count=self.injected[name])

    def uniform(self, low: float, high: float) -> float:
        return self.rng.uniform(low, high)

    def language(self) -> str:
        return "es" if self.rng.random() < 0.3 else "en"


# ---------------------------------------------------------------- a hostile unit (issue 11)

NOT_AUTHORIZED = 0x87


class HostileUnit:
    """A unit whose certificate was copied: during the soak it tries every attack on the broker and
    the central service. `outcomes` keeps what the broker answered to each; `breaches` names those
    that were not refused. Its own odd payloads (schema-valid but never expected) go to central,
    which must refuse or quarantine them without touching the honest unit's count."""

    def __init__(self, port: int, tls: dict[str, str], unit_id: str, victim: str, central_id: str) -> None:
        self.port, self.tls, self.unit_id = port, tls, unit_id
        self.victim, self.central_id = victim, central_id
        self.outcomes: dict[str, list[int]] = {}
        self.breaches: Counter[str] = Counter()
        self.rounds = 0
        self.stolen_messages = 0  # messages delivered to the thief on someone else's session or group

    def _client(self, client_id: str, clean: bool = True) -> tuple[Any, dict[str, Any]]:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        seen: dict[str, Any] = {"connack": None, "suback": [], "puback": {}, "messages": 0,
                                "event": threading.Event(), "closed": threading.Event()}
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        c.tls_set(ca_certs=self.tls["ca"], certfile=self.tls["cert"], keyfile=self.tls["key"])

        def on_connect(cl: Any, u: Any, f: Any, rc: Any, p: Any) -> None:
            seen["connack"] = rc.value
            seen["event"].set()

        def on_subscribe(cl: Any, u: Any, mid: int, rcs: list[Any], p: Any) -> None:
            seen["suback"] = [r.value for r in rcs]
            seen["event"].set()

        def on_publish(cl: Any, u: Any, mid: int, rc: Any, p: Any) -> None:
            seen["puback"][mid] = rc.value
            seen["event"].set()

        def on_message(cl: Any, u: Any, m: Any) -> None:
            seen["messages"] += 1

        c.on_connect, c.on_subscribe = on_connect, on_subscribe
        c.on_publish, c.on_message = on_publish, on_message
        c.on_disconnect = lambda *a: seen["closed"].set()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0 if clean else 3600
        c.connect("127.0.0.1", self.port, clean_start=clean, properties=props)
        c.loop_start()
        seen["event"].wait(5)
        seen["event"].clear()
        return c, seen

    @staticmethod
    def _close(c: Any) -> None:
        try:
            c.disconnect()
        finally:
            c.loop_stop()

    def _subscribe(self, name: str, filters: list[str], client_id: str | None = None, clean: bool = True,
                   listen_s: float = 0.0) -> None:
        c, seen = self._client(client_id or self.unit_id, clean)
        try:
            c.subscribe([(f, 1) for f in filters])
            seen["event"].wait(5)
            if listen_s:
                time.sleep(listen_s)  # what the broker hands this session meanwhile
            self.stolen_messages += seen["messages"]
            self._note(name, seen["suback"] or [-1], refused_if=lambda code: code >= 0x80)
        finally:
            self._close(c)

    def _publish(
        self, name: str, topic: str, payload: bytes, retain: bool = False, refused: bool = True
    ) -> None:
        c, seen = self._client(self.unit_id)
        try:
            info = c.publish(topic, payload, qos=1, retain=retain)
            deadline = time.monotonic() + 5
            while info.mid not in seen["puback"] and not seen["closed"].is_set() \
                    and time.monotonic() < deadline:
                seen["event"].wait(0.2)
                seen["event"].clear()
            code = seen["puback"].get(info.mid, NOT_AUTHORIZED if seen["closed"].is_set() else -1)
            if refused:
                self._note(name, [code], refused_if=lambda c_: c_ >= 0x80)
            else:
                self.outcomes.setdefault(name, []).append(code)
        finally:
            self._close(c)

    def _note(self, name: str, codes: list[int], refused_if: Any) -> None:
        self.outcomes.setdefault(name, []).extend(codes)
        if not all(refused_if(code) for code in codes):
            self.breaches[name] += 1

    def attack(self) -> None:
        """One round of every attack (a few seconds)."""
        self.rounds += 1
        root = "nalox/v1"
        me, victim = f"{root}/{self.unit_id}", f"{root}/{self.victim}"
        # takeovers: the victim's and central's client ids, persistent session; nothing may arrive
        self._subscribe("takeover_unit_session", [f"{victim}/cmd/+"], client_id=self.victim, clean=False,
                        listen_s=0.5)
        self._subscribe("takeover_central_session", [f"{root}/+/event/+"], client_id=self.central_id,
                        clean=False, listen_s=0.5)
        self._subscribe("shared_group", [f"$share/inventory/{root}/+/event/+"], listen_s=0.5)
        self._subscribe("wide_subscription", ["#"])
        self._subscribe("other_units_commands", [f"{root}/+/cmd/#"])
        self._subscribe("other_units_acks", [f"{victim}/ack"])
        self._publish("speak_on_victim_topic", f"{victim}/event/dispense", b"{}")
        self._publish("deep_topic", f"{me}/event/a/b", b"{}")
        self._publish("retained_event", f"{me}/event/door", b"{}", retain=True)
        self._publish("retained_cmd_response", f"{me}/cmd_response/x", b"{}", retain=True)
        self._publish("oversized_event", f"{me}/event/door", b"x" * 9000)
        self._publish("oversized_packet", f"{me}/state", b"x" * 80_000, retain=True)
        for name, body in self.odd_payloads().items():  # reach central: it must refuse or quarantine
            self._publish(f"odd_{name}", f"{me}/event/{body.get('type', 'dispense')}",
                          json.dumps(body).encode(), refused=False)

    def odd_payloads(self) -> dict[str, dict[str, Any]]:
        now = datetime.now(UTC)
        n = self.rounds

        def dispense(**changes: Any) -> dict[str, Any]:
            eid = f"hostile-{n:06d}-{uuid.uuid4().hex[:12]}"
            return {"schema_version": 1, "event_id": eid,
                    "seq": n, "ts": now.isoformat(), "unit": self.unit_id, "type": "dispense", "column": 1,
                    "product": "naloxone", "doses": 2, "command_id": n, "via": "video", "stock_after": 1,
                    **changes}

        return {
            "huge_seq_2020": dispense(seq=10**15, ts="2020-01-01T00:00:00+00:00"),
            "year_2099": dispense(ts="2099-01-01T00:00:00+00:00"),
            "year_9999": dispense(ts="9999-12-31T23:59:59+00:00"),
            "naive_ts": dispense(ts=now.replace(tzinfo=None).isoformat()),
            "seq_2_pow_63": dispense(seq=2**63),
            "speaks_for_victim": dispense(unit=self.victim),
            "nul_in_text": dispense(product="nalo\u0000xone"),
            "unknown_field": dispense(firmware_says="hello"),
        }

