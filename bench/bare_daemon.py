"""The floor under the unit daemon's memory: a process holding the runtime libraries the daemon cannot do
without, each in use, and nothing of nalox (this module imports no room): a pydantic model validated and
dumped, structlog writing JSON lines, a paho client connected with its network thread, a pty open through
pyserial, a SQLite WAL connection that committed. Says 'ready' on stdout, then idles until killed.

python -m bench.plain_install --hide ... -m bench.bare_daemon PORT
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import threading
import tty
import uuid

import paho.mqtt.client as mqtt
import pydantic
import serial
import structlog
from paho.mqtt.enums import CallbackAPIVersion


class Reading(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    unit: str
    seq: int = pydantic.Field(ge=1)
    celsius: float


def main(port: int) -> None:
    structlog.configure(
        processors=[structlog.processors.TimeStamper(fmt="iso"), structlog.processors.JSONRenderer()]
    )
    log = structlog.get_logger("bare")
    reading = Reading.model_validate_json(Reading(unit="bare", seq=1, celsius=21.5).model_dump_json())
    connected = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-bare-{uuid.uuid4().hex[:8]}",
                         protocol=mqtt.MQTTv5)
    client.on_connect = lambda c, u, f, rc, p: connected.set()
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    if not connected.wait(10):
        raise SystemExit(f"expected CONNACK from 127.0.0.1:{port} within 10 s, got none")
    master, slave = os.openpty()
    tty.setraw(slave)
    line = serial.Serial(os.ttyname(slave), 115200, timeout=0.5, exclusive=True)
    with tempfile.TemporaryDirectory(prefix="nalox-bench-bare-") as tmp:
        db = sqlite3.connect(f"{tmp}/bare.sqlite3", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE events (seq INTEGER PRIMARY KEY, payload BLOB)")
        db.execute("INSERT INTO events VALUES (?, ?)", (reading.seq, reading.model_dump_json()))
        client.publish("bench/bare", reading.model_dump_json(), qos=1).wait_for_publish(10)
        line.write(b"\x7e\x00\x7e")
        log.info("ready", seq=reading.seq)
        print("ready", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main(int(sys.argv[1]))
