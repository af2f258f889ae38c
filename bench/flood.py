"""Floods at the production broker: a unit whose certificate was copied sends oversized, retained and
many-topic messages as fast as its one connection goes (the broker makes the CN the client id, so a
certificate has one connection), while an honest unit reports and central ingests.

Measured: messages attempted and refused per kind (PUBACK >= 0x80) and per second, packets over the
broker's limit (each closes the sender's connection), the broker's RSS before, at its peak and after,
the honest unit's PUBACK latency, central's refusals and quarantine, and whether every honest event
reached the central store exactly once and was acked.

    python -m bench.flood --seconds 60 [--honest-rate 20] [--db postgresql://...] [--json FILE]

Everything runs on this machine: mosquitto with deploy/mosquitto/prod.conf, its acl and nalox_guard,
certificates from deploy/pki/make-certs.sh, the central service in this process (SQLite by default).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.rooms import dispense_payloads
from inventory import log
from inventory.clock import RealClock
from inventory.config import parse_config
from inventory.service import Service
from nalox.broker import DEPLOY, Broker, production_replacements
from nalox.soak import HOSTILE, client_files, make_pki
from schemas.models import topic

HONEST = "flood-honest"
REFUSED = 0x80
# what the hostile unit sends, in turn: (topic, payload, retain) for message number n
Kind = Callable[[int], tuple[str, bytes, bool]]
KINDS: dict[str, Kind] = {
    "oversized_event": lambda n: (topic(HOSTILE, "event", "dispense"), b"x" * 9000, False),
    "retained_event": lambda n: (topic(HOSTILE, "event", "door"), b"{}", True),
    "deep_topic": lambda n: (f"nalox/v1/{HOSTILE}/event/a/{n}", b"{}", False),
    "other_unit": lambda n: (topic(HONEST, "event", "dispense"), b"{}", False),
    "retained_other": lambda n: (f"nalox/v1/{HOSTILE}/x{n}", b"{}", True),
    "many_event_topics": lambda n: (f"nalox/v1/{HOSTILE}/event/t{n}", b'{"n": 1}', False),
    "many_response_topics": lambda n: (f"nalox/v1/{HOSTILE}/cmd_response/r{n}", b"{}", False),
    "retained_state_64k": lambda n: (topic(HOSTILE, "state"), b"s" * 65536, True),
}


def rss_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tls_client(tls: dict[str, str], client_id: str, inflight: int) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    c.tls_set(ca_certs=tls["ca"], certfile=tls["cert"], keyfile=tls["key"])
    c.max_inflight_messages_set(inflight)
    c.max_queued_messages_set(0)
    return c


@dataclass
class Flood:
    """The hostile unit: one connection, QoS 1, a window of `inflight` unanswered publishes."""

    port: int
    tls: dict[str, str]
    inflight: int = 500
    attempted: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)

    def run(self, seconds: float) -> float:
        """Flood for `seconds`; returns the seconds it really took (the window drained at the end)."""
        window = threading.Semaphore(self.inflight)
        kinds: dict[int, str] = {}  # mid -> kind, for the PUBACK
        early: dict[int, int] = {}  # PUBACKs that came before publish() returned their mid (paho 2.x)
        lock = threading.Lock()  # never held while calling paho: its callbacks run holding paho's locks
        connected = threading.Event()

        def answered(kind: str, code: int) -> None:
            (self.refused if code >= REFUSED else self.accepted)[kind] += 1
            window.release()

        def on_publish(c: Any, u: Any, mid: int, rc: Any, p: Any) -> None:
            with lock:
                kind = kinds.pop(mid, None)
                if kind is None:
                    early[mid] = rc.value
            if kind is not None:
                answered(kind, rc.value)

        c = tls_client(self.tls, HOSTILE, self.inflight)
        c.on_publish = on_publish
        c.on_connect = lambda *a: connected.set()
        c.connect("127.0.0.1", self.port)
        c.loop_start()
        assert connected.wait(10), "expected the hostile unit to connect"
        names = list(KINDS)
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < seconds:
            if not window.acquire(timeout=30):
                answers = self.accepted + self.refused
                raise RuntimeError(f"expected PUBACKs for the flood, none for 30 s after {answers}")
            kind = names[n % len(names)]
            t, payload, retain = KINDS[kind](n)
            info = c.publish(t, payload, qos=1, retain=retain)
            with lock:
                code = early.pop(info.mid, None)
                if code is None:
                    kinds[info.mid] = kind
            if code is not None:
                answered(kind, code)
            self.attempted[kind] += 1
            n += 1
        for _ in range(self.inflight):  # every answer in
            if not window.acquire(timeout=30):
                break
        took = time.monotonic() - start
        c.disconnect()
        c.loop_stop()
        return took

    def oversized_packets(self, count: int, size: int = 80_000) -> int:
        """Packets over max_packet_size, each on a fresh connection: how many the broker closed."""
        closed = 0
        for _ in range(count):
            gone, up = threading.Event(), threading.Event()
            c = tls_client(self.tls, HOSTILE, 10)
            c.on_connect = lambda *a, up=up: up.set()  # type: ignore[misc]
            c.on_disconnect = lambda *a, gone=gone: gone.set()  # type: ignore[misc]
            c.connect("127.0.0.1", self.port)
            c.loop_start()
            if up.wait(10):
                c.publish(topic(HOSTILE, "state"), b"p" * size, qos=1, retain=True)
                closed += gone.wait(10)
            c.loop_stop()
        return closed


@dataclass
class HonestUnit:
    """Publishes dispense events 1..n at a steady rate and watches its acks; PUBACK latency per event."""

    port: int
    tls: dict[str, str]
    rate: float
    latencies_ms: list[float] = field(default_factory=list)
    acked: int = 0
    sent: int = 0

    def __post_init__(self) -> None:
        self._sent_at: dict[int, float] = {}
        self._stop = threading.Event()
        self.client = tls_client(self.tls, HONEST, 100)
        up = threading.Event()
        def on_connect(c: Any, *a: Any) -> None:
            c.subscribe(topic(HONEST, "ack"), qos=1)
            up.set()

        self.client.on_connect = on_connect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_ack
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        assert up.wait(10), "expected the honest unit to connect"
        self._events = dispense_payloads(HONEST, 1, 10**7)
        self._thread = threading.Thread(target=self._run, name="honest", daemon=True)

    def _on_publish(self, c: Any, u: Any, mid: int, rc: Any, p: Any) -> None:
        sent = self._sent_at.pop(mid, None)
        if sent is not None and rc.value < REFUSED:
            self.latencies_ms.append((time.perf_counter() - sent) * 1000)

    def _on_ack(self, c: Any, u: Any, m: Any) -> None:
        self.acked = max(self.acked, json.loads(m.payload)["acked_seq"])

    def start(self) -> HonestUnit:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(1 / self.rate):
            t, payload = next(self._events)
            sent = time.perf_counter()
            info = self.client.publish(t, payload, qos=1)
            self._sent_at[info.mid] = sent
            self.sent += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def wait_acked(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.acked < self.sent:
            time.sleep(0.1)
        return self.acked == self.sent

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def run(
    seconds: float, honest_rate: float, db: str | None, workdir: Path, oversized: int = 10
) -> dict[str, Any]:
    pki = make_pki(workdir / "pki", HONEST)
    broker = Broker(DEPLOY / "prod.conf", workdir=workdir / "broker",
                    replacements=production_replacements(pki))
    broker.workdir.mkdir(parents=True, exist_ok=True)
    inventory = client_files(pki, "inventory")
    config = parse_config({
        "units": [{"id": HONEST, "site": "Lobby"}, {"id": HOSTILE, "site": "Lobby"}],
        "store": {"db": db or str(workdir / "central.db")},
        "mqtt": {"port": broker.port, "client_id": "flood-central", "tls": {
            "ca_file": inventory["ca"], "cert_file": inventory["cert"], "key_file": inventory["key"]}},
        "ingest": {"gap_timeout_s": 5},
    })
    with broker:
        assert broker.proc is not None
        service = Service(config, RealClock(), http=False, alerts=False).start()
        try:
            assert service.wait_connected(30), "expected central connected to the production broker"
            return _measure(broker, service, pki, seconds, honest_rate, oversized)
        finally:
            service.stop()


def _measure(broker: Broker, service: Service, pki: Path, seconds: float, honest_rate: float,
             oversized: int) -> dict[str, Any]:
    assert broker.proc is not None and service.store is not None
    pid = broker.proc.pid
    honest = HonestUnit(broker.port, client_files(pki, HONEST), honest_rate).start()
    time.sleep(2)  # a quiet baseline: the honest unit alone
    quiet = list(honest.latencies_ms)
    broker_before, self_before = rss_kb(pid), rss_kb()
    peak = [broker_before]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.25):
            peak.append(rss_kb(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    during_from = len(honest.latencies_ms)
    # the hostile unit in a process of its own, as it would be: it does not share central's interpreter
    child = subprocess.run(
        [sys.executable, "-m", "bench.flood", "--hostile", str(broker.port), str(pki), "--seconds",
         str(seconds), "--oversized", str(oversized)],
        capture_output=True, text=True, timeout=seconds + 300, check=True)
    flood = json.loads(child.stdout)
    during = honest.latencies_ms[during_from:]
    honest.stop()
    all_acked = honest.wait_acked(60)
    time.sleep(2)
    sampling.set()
    sampler.join()
    store = service.store
    honest_stored = store.count_events(unit=HONEST)
    counters = store.counters()
    held = store.quarantined(unit=HOSTILE, limit=100_000)
    refused: Counter[str] = Counter()
    for q in held:
        refused[q["reason"]] += q["count"]
    result = {
        "seconds": flood["seconds"],
        "hostile": flood,
        "broker_rss_mb": {"before": round(broker_before / 1024, 1), "peak": round(max(peak) / 1024, 1),
                          "after": round(rss_kb(pid) / 1024, 1)},
        "this_process_rss_mb": {"before": round(self_before / 1024, 1), "after": round(rss_kb() / 1024, 1),
                                "peak": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)},
        "honest": {
            "sent": honest.sent, "stored": honest_stored, "acked": honest.acked, "all_acked": all_acked,
            "puback_ms_quiet_p50_p99": [percentile(quiet, 0.5), percentile(quiet, 0.99)],
            "puback_ms_flood_p50_p99": [percentile(during, 0.5), percentile(during, 0.99)],
        },
        "central": {
            "hostile_refused": dict(refused),
            "quarantine_open_rows": len(held),
            "honest_duplicates": counters.get("events_duplicate", 0),
        },
        "broker_denials_logged": broker.log_path.read_text(errors="replace").count("nalox_guard: denied"),
    }
    honest.close()
    return result


def hostile(port: int, pki: Path, seconds: float, oversized: int) -> dict[str, Any]:
    """The hostile unit's side (its own process): flood, then packets over the limit; its figures."""
    flood = Flood(port, client_files(pki, HOSTILE))
    took = flood.run(seconds)
    closed = flood.oversized_packets(oversized)
    attempted, refused = sum(flood.attempted.values()), sum(flood.refused.values())
    return {
        "seconds": round(took, 1),
        "attempted": attempted,
        "attempted_per_s": round(attempted / took),
        "refused": refused,
        "refused_per_s": round(refused / took),
        "accepted": sum(flood.accepted.values()),
        "per_kind": {k: {"attempted": flood.attempted[k], "refused": flood.refused[k],
                         "accepted": flood.accepted[k]} for k in KINDS},
        "packets_over_limit": oversized,
        "connections_closed": closed,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--honest-rate", type=float, default=20.0, help="honest events per second")
    ap.add_argument("--db", help="central's database (default: SQLite in the work folder)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--oversized", type=int, default=10, help="packets over the broker's limit")
    ap.add_argument("--hostile", nargs=2, metavar=("PORT", "PKI"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.hostile:
        print(json.dumps(hostile(int(a.hostile[0]), Path(a.hostile[1]), a.seconds, a.oversized)))
        return 0
    log.configure("warning")  # central's refusals of the flood are counted below, not printed
    with tempfile.TemporaryDirectory(prefix="nalox-flood-") as tmp:
        result = run(a.seconds, a.honest_rate, a.db, Path(tmp), a.oversized)
    text = json.dumps(result, indent=2)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")
    ok = result["honest"]["stored"] == result["honest"]["sent"] and result["honest"]["all_acked"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
