"""Connection life cycle: the Will on a crash, stop while the broker is down, backoff."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from controller.mqtt.client import backoff_delays
from controller.mqtt.reporter import Reporter
from nalox.broker import Broker
from schemas.models import Status
from tests.controller.mqtt.standins import Watcher

ROOT = Path(__file__).resolve().parents[3]


def test_kill_9_of_the_unit_publishes_the_will_with_the_same_session(
    broker: Broker, watcher: Watcher, unit_id: str, tmp_path: Path
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.controller.mqtt.unit_process", str(broker.port), unit_id,
         str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("connected session="), line
        session = int(line.split("=")[1])
        online = Status.model_validate_json(watcher.next(f"nalox/v1/{unit_id}/status", timeout=10).payload)
        assert (online.state, online.session) == ("online", session)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        will = Status.model_validate_json(watcher.next(f"nalox/v1/{unit_id}/status", timeout=10).payload)
        assert (will.state, will.session) == ("offline", session)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout:
            proc.stdout.close()


def test_stop_while_the_broker_is_down_returns_promptly(
    make_reporter: Callable[..., Reporter], broker: Broker
) -> None:
    reporter = make_reporter().start()
    assert reporter.client is not None and reporter.client.wait_connected(5)
    broker.kill()
    started = time.monotonic()
    reporter.stop()
    assert time.monotonic() - started < 5
    assert not reporter.connected


def test_reporter_waits_for_a_broker_that_is_not_there_yet(
    make_reporter: Callable[..., Reporter], broker: Broker, watcher: Watcher, unit_id: str
) -> None:
    watcher.close()
    broker.kill()
    reporter = make_reporter().start()
    assert reporter.client is not None and not reporter.client.wait_connected(0.3)
    broker.start()
    assert reporter.client.wait_connected(10)
    late = Watcher(broker.port, [f"nalox/v1/{unit_id}/status"])
    try:
        assert Status.model_validate_json(late.next(f"nalox/v1/{unit_id}/status").payload).state == "online"
    finally:
        late.close()


def test_backoff_grows_to_the_cap_with_jitter() -> None:
    delays = backoff_delays(0.5, 8.0, random.Random(7))
    first = [next(delays) for _ in range(40)]
    assert all(0.5 <= d <= 8.0 for d in first)
    assert first[0] == 0.5  # the first retry is quick
    assert max(first[10:]) > 4.0  # reaches the cap's range
    assert len({round(d, 6) for d in first[10:]}) > 20  # jittered, not a fixed ladder
