"""The demo's process supervision and the chaos proxy: nothing is left running, cuts really cut."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

from nalox.broker import Broker
from nalox.chaos import ChaosPlan, TcpProxy
from nalox.supervision import LIVE, Proc
from nalox.waiting import wait_until

# a child that starts a grandchild in a session of its own (as a careless daemon might), then waits
SPAWNER = (
    "import subprocess, sys, time\n"
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'], start_new_session=True)\n"
    "print(p.pid, flush=True)\n"
    "time.sleep(300)\n"
)


def _grandchild_pid(proc: Proc) -> int:
    pids: list[int] = []

    def printed() -> bool:
        text = proc.log_path.read_text().strip()
        if text:
            pids.append(int(text.split()[0]))
        return bool(pids)

    wait_until("the child to print its grandchild's pid", printed, 20)
    return pids[0]


def test_stop_takes_down_the_whole_tree_even_a_grandchild_in_its_own_session(tmp_path: Path) -> None:
    proc = Proc("spawner", [sys.executable, "-c", SPAWNER], tmp_path / "spawner.log").start()
    grandchild = _grandchild_pid(proc)
    assert psutil.pid_exists(grandchild)
    proc.stop(timeout=5)
    assert not proc.alive()
    wait_until("the grandchild to be gone", lambda: not _running(grandchild), 10)
    assert proc not in LIVE


def test_kill9_is_immediate_and_leaves_nothing(tmp_path: Path) -> None:
    proc = Proc("spawner", [sys.executable, "-c", SPAWNER], tmp_path / "spawner.log").start()
    grandchild = _grandchild_pid(proc)
    proc.kill9()
    assert proc.returncode() == -9
    wait_until("the grandchild to be gone", lambda: not _running(grandchild), 10)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_proxy_cut_disconnects_and_refuses_until_restored(broker: Broker) -> None:
    proxy = TcpProxy(broker.port).start()
    connected, disconnected = threading.Event(), threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="proxy-test", protocol=mqtt.MQTTv5)
    client.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
    client.on_disconnect = lambda c, u, f, rc, p: disconnected.set()
    client.reconnect_delay_set(1, 1)
    try:
        client.connect("127.0.0.1", proxy.port, keepalive=5)
        client.loop_start()
        assert connected.wait(10), "expected a connection through the proxy"
        connected.clear()
        proxy.cut()
        assert disconnected.wait(10), "expected the cut to drop the connection"
        assert not connected.wait(2.5), "expected no reconnection while cut (paho retries every second)"
        proxy.restore()
        assert connected.wait(10), "expected paho to reconnect once restored"
    finally:
        client.disconnect()
        client.loop_stop()
        proxy.close()


def test_chaos_plan_is_reproducible_from_its_seed() -> None:
    a, b, c = ChaosPlan(7, rate=0.5), ChaosPlan(7, rate=0.5), ChaosPlan(8, rate=0.5)
    seq_a = [a.next_fault() for _ in range(200)]
    assert seq_a == [b.next_fault() for _ in range(200)]
    assert seq_a != [c.next_fault() for _ in range(200)]
    assert {f for f in seq_a if f} == set(a.weights), "expected every fault kind to come up in 200 draws"


def test_cover_all_injects_every_kind_first() -> None:
    plan = ChaosPlan(5, rate=1.0, cover_all=True)
    first = [plan.next_fault() for _ in range(len(plan.weights))]
    assert sorted(f for f in first if f) == sorted(plan.weights)
