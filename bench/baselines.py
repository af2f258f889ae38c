"""Bare-library baselines the nalox figures are compared against: paho publish->PUBACK latency,
a paho publisher with a bounded in-flight window, a paho subscriber draining a queued session,
and a raw pty echo. None of these use any nalox room."""

from __future__ import annotations

import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import serial
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from controller.diag.ping import percentile

PAYLOAD = (
    b'{"schema_version":1,"event_id":"0123456789abcdef0123456789abcdef","seq":1,'
    b'"ts":"2026-11-22T06:00:00Z","unit":"bench-1","type":"dispense","column":1,'
    b'"product":"naloxone-4mg","doses":2,"command_id":1,"via":"video","stock_after":19}'
)


class BenchError(Exception):
    """A benchmark could not finish: says what it waited for and what it got."""


def summary_ms(samples_s: list[float]) -> dict[str, float]:
    if not samples_s:
        raise BenchError("expected at least one sample, got none")
    return {
        "p50_ms": round(percentile(samples_s, 50) * 1000, 3),
        "p99_ms": round(percentile(samples_s, 99) * 1000, 3),
        "mean_ms": round(statistics.fmean(samples_s) * 1000, 3),
        "samples": len(samples_s),
    }


def connect(port: int, client_id: str, clean_start: bool = True, session_expiry: int = 0) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = session_expiry
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set()
    client.connect("127.0.0.1", port, keepalive=30, clean_start=clean_start, properties=props)
    client.loop_start()
    if not connected.wait(10):
        client.loop_stop()
        raise BenchError(f"expected CONNACK from 127.0.0.1:{port} within 10 s, got none")
    return client


def close(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


def puback_latency(port: int, count: int) -> dict[str, float]:
    """One QoS 1 publish at a time, time from publish() to on_publish (the PUBACK)."""
    return summary_ms(puback_samples(port, count))


def puback_samples(port: int, count: int) -> list[float]:
    """puback_latency()'s raw samples in seconds (to pair with another baseline's)."""
    client = connect(port, f"bench-lat-{uuid.uuid4().hex[:8]}")
    acked = threading.Event()
    client.on_publish = lambda c, u, mid, rc, p: acked.set()
    samples: list[float] = []
    try:
        for _ in range(count):
            acked.clear()
            start = time.perf_counter()
            client.publish("bench/latency", PAYLOAD, qos=1)
            if not acked.wait(5):
                raise BenchError("expected a PUBACK within 5 s, got none")
            samples.append(time.perf_counter() - start)
    finally:
        close(client)
    return samples


def sqlite_full_commits(count: int) -> list[float]:
    """A bare SQLite file in WAL mode with synchronous=FULL, one transaction per vend writing the rows a
    dispense writes in the unit's ledger (the event, its outbox entry, the column's stock, the command's
    settlement): seconds per commit. No nalox code."""
    import sqlite3
    import tempfile

    with tempfile.TemporaryDirectory(prefix="nalox-bench-sqlite-") as tmp:
        db = sqlite3.connect(f"{tmp}/ledger.sqlite3", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(
            "CREATE TABLE events (seq INTEGER PRIMARY KEY, event_id TEXT UNIQUE, event_type TEXT, "
            "payload BLOB, created_at TEXT)"
        )
        db.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY)")
        db.execute("CREATE TABLE columns (col INTEGER PRIMARY KEY, stock INTEGER)")
        db.execute("CREATE TABLE commands (command_id INTEGER PRIMARY KEY, state TEXT, outcome TEXT)")
        db.execute("INSERT INTO columns VALUES (1, 100000)")
        samples: list[float] = []
        for seq in range(1, count + 1):
            db.execute("INSERT INTO commands VALUES (?, 'pending', NULL)", (seq,))
            start = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT INTO events VALUES (?, ?, 'dispense', ?, '2026-11-22T06:00:00Z')",
                (seq, uuid.uuid4().hex, PAYLOAD),
            )
            db.execute("INSERT INTO outbox VALUES (?)", (seq,))
            db.execute("UPDATE columns SET stock = stock - 1 WHERE col = 1")
            db.execute(
                "UPDATE commands SET state = 'settled', outcome = 'dropped' WHERE command_id = ?", (seq,)
            )
            db.execute("COMMIT")
            samples.append(time.perf_counter() - start)
        db.close()
    return samples


def window_publish(port: int, count: int, window: int = 100, topic: str = "bench/window") -> float:
    """Publish `count` QoS 1 messages keeping at most `window` unacknowledged; returns msgs/s."""
    return publish_window(port, ((topic, PAYLOAD) for _ in range(count)), count, window)


def publish_window(port: int, messages: Iterable[tuple[str, bytes]], count: int, window: int = 100) -> float:
    """Publish (topic, payload) pairs at QoS 1 through a bounded in-flight window; returns msgs/s."""
    client = connect(port, f"bench-win-{uuid.uuid4().hex[:8]}")
    slots = threading.Semaphore(window)
    done = threading.Event()
    acked = [0]

    def on_publish(c: mqtt.Client, u: object, mid: int, rc: object, p: object) -> None:
        acked[0] += 1
        slots.release()
        if acked[0] >= count:
            done.set()

    client.on_publish = on_publish
    start = time.perf_counter()
    try:
        for topic, payload in messages:
            if not slots.acquire(timeout=10):
                raise BenchError(f"expected a free in-flight slot within 10 s, got none ({acked[0]} acked)")
            client.publish(topic, payload, qos=1)
        if not done.wait(60):
            raise BenchError(f"expected {count} PUBACKs, got {acked[0]}")
        return count / (time.perf_counter() - start)
    finally:
        close(client)


def live_subscribe(port: int, count: int) -> float:
    """A bare paho subscriber in its own process (as the inventory service runs in its own) takes
    `count` messages a bounded-window publisher sends flat out; msgs/s from the first publish to the
    last message received (CLOCK_MONOTONIC is shared between processes)."""
    import subprocess
    import sys

    topic = f"bench/live/{uuid.uuid4().hex[:8]}"
    argv = [sys.executable, "-m", "bench.baselines", "subscribe", str(port), topic, str(count)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "subscribed":
            raise BenchError("expected the subscriber process to say 'subscribed', it did not")
        start = time.monotonic()
        window_publish(port, count, topic=topic)
        out, _ = proc.communicate(timeout=120)
        return count / (float(out.strip()) - start)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def subscribe_and_count(port: int, topic: str, count: int) -> float:
    """The subscriber process: says 'subscribed', then returns time.monotonic() at the last message."""
    sub = connect(port, f"bench-live-{uuid.uuid4().hex[:8]}")
    subscribed, done = threading.Event(), threading.Event()
    received = [0]
    last = [0.0]

    def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        received[0] += 1
        if received[0] >= count:
            last[0] = time.monotonic()
            done.set()

    sub.on_subscribe = lambda *a: subscribed.set()
    sub.on_message = on_message
    sub.subscribe(topic, qos=1)
    try:
        if not subscribed.wait(10):
            raise BenchError("expected SUBACK within 10 s, got none")
        print("subscribed", flush=True)
        if not done.wait(120):
            raise BenchError(f"expected {count} messages, got {received[0]}")
        return last[0]
    finally:
        close(sub)


def queued_subscribe(port: int, count: int) -> float:
    """A persistent-session subscriber drains `count` messages the broker queued while it was away;
    returns msgs/s from reconnect to the last message."""
    client_id = f"bench-sub-{uuid.uuid4().hex[:8]}"
    topic = f"bench/queued/{client_id}"
    sub = connect(port, client_id, clean_start=True, session_expiry=600)
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.subscribe(topic, qos=1)
    if not subscribed.wait(10):
        raise BenchError("expected SUBACK within 10 s, got none")
    close(sub)
    window_publish(port, count, topic=topic)
    received = [0]
    done = threading.Event()

    def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        received[0] += 1
        if received[0] >= count:
            done.set()

    start = time.perf_counter()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    sub.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0
    sub.connect("127.0.0.1", port, clean_start=False, properties=props)
    sub.loop_start()
    try:
        if not done.wait(120):
            raise BenchError(f"expected {count} queued messages, got {received[0]}")
        return count / (time.perf_counter() - start)
    finally:
        close(sub)


@dataclass
class PtyEcho:
    """A raw pty with a thread echoing every byte back: the floor for any serial round trip."""

    master: int
    slave: int  # kept open: with no slave open, reads on the master fail with EIO
    slave_path: str
    stop: threading.Event
    thread: threading.Thread

    @classmethod
    def open(cls) -> PtyEcho:
        master, slave = os.openpty()
        import tty

        tty.setraw(slave)
        path = os.ttyname(slave)
        stop = threading.Event()
        thread = threading.Thread(target=_echo, args=(master, stop), daemon=True, name="pty-echo")
        thread.start()
        return cls(master, slave, path, stop, thread)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        os.close(self.master)
        os.close(self.slave)


def _echo(fd: int, stop: threading.Event) -> None:
    import select

    while not stop.is_set():
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                os.write(fd, os.read(fd, 4096))
            except OSError:
                return


ECHO_PROCESS = """
import os, select, sys
fd = int(sys.argv[1])
while True:
    select.select([fd], [], [])
    try:
        os.write(fd, os.read(fd, 4096))
    except OSError:
        break
"""


class ProcessEcho:
    """A raw pty echoed by another process (as the simulated board is one): the floor for a round trip
    that crosses processes, scheduling included."""

    def __init__(self) -> None:
        import subprocess
        import sys
        import tty

        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.slave_path = os.ttyname(self.slave)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ECHO_PROCESS, str(self.master)], pass_fds=(self.master,)
        )

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


def pty_echo_rtt(
    count: int, frame: bytes = b"\x7e\x01\x02\x00\x00\x00\x10\x7e", process: bool = False
) -> dict[str, float]:
    """Write a ping-sized frame to a pty and read it back, `count` times; the echo is a thread of this
    process, or another process (`process`)."""
    echo: PtyEcho | ProcessEcho = ProcessEcho() if process else PtyEcho.open()
    port = serial.Serial(echo.slave_path, 115200, timeout=2, exclusive=True)
    samples: list[float] = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            port.write(frame)
            got = _read_exactly(port, len(frame))
            samples.append(time.perf_counter() - start)
            if got != frame:
                raise BenchError(f"expected echo {frame!r}, got {got!r}")
    finally:
        port.close()
        echo.close()
    return summary_ms(samples)


def _read_exactly(port: serial.Serial, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = port.read(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


@dataclass(frozen=True)
class BareDaemon:
    rss_mb: float
    start_to_ready_s: float
    cpu_to_ready_s: float


def bare_daemon(port: int, launcher: list[str], settle_s: float = 2.0) -> BareDaemon:
    """bench/bare_daemon.py started by `launcher` (as the unit daemon is): seconds and CPU seconds from
    spawn to ready, and its RSS `settle_s` later: what the daemon's runtime libraries take before any
    nalox code."""
    import subprocess

    argv = [*launcher, "-m", "bench.bare_daemon", str(port)]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, ""):  # its log line comes first
            if line.strip() == "ready":
                break
        else:
            raise BenchError("expected the bare daemon to say 'ready', it ended without")
        ready = time.perf_counter() - start
        with open(f"/proc/{proc.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
        time.sleep(settle_s)  # as long as the unit daemon settles before its RSS is read
        with open(f"/proc/{proc.pid}/status") as status:
            kb = next(int(x.split()[1]) for x in status if x.startswith("VmRSS"))
        return BareDaemon(kb / 1000, ready, cpu)
    finally:
        proc.kill()
        proc.wait()


def timed(fn: Callable[[], float], repeat: int = 1) -> float:
    """Best of `repeat` runs of a throughput function (higher is better)."""
    return max(fn() for _ in range(repeat))


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["subscribe"]:
        print(subscribe_and_count(int(sys.argv[2]), sys.argv[3], int(sys.argv[4])), flush=True)

