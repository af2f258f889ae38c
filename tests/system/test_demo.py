"""`nalox demo` as a new user runs it: every room as its own process, the three counts agree,
and SIGTERM leaves nothing running."""

from __future__ import annotations

import json
import queue
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import psutil

from nalox.ports import free_port, port_free
from nalox.waiting import wait_until
from tests.conftest import NALOX


def headless_demo(tmp_path: Path, workdir: str, *args: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    """`nalox demo --headless ARGS` on free ports in tmp_path/WORKDIR: the finished process and its
    summary (None when the demo failed)."""
    summary = tmp_path / "summary.json"
    done = subprocess.run(
        [
            *NALOX,
            "demo",
            *args,
            "--headless",
            "--summary",
            str(summary),
            "--mqtt-port",
            str(free_port()),
            "--http-port",
            str(free_port()),
            "--workdir",
            str(tmp_path / workdir),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    return done, json.loads(summary.read_text()) if done.returncode == 0 else None


def test_demo_vends_and_the_ledger_simulator_and_central_store_agree(tmp_path: Path) -> None:
    done, s = headless_demo(tmp_path, "demo", "--vends", "5")
    assert done.returncode == 0, f"demo exited {done.returncode}: {done.stderr[-2000:]}"
    assert s["presses"] == 5
    assert s["sim_dropped"] == 5, "a headless demo with no faults drops one kit per press"
    assert s["ledger_dispensed"] == s["sim_dropped"] == s["central_dispensed"]
    unit = s["units"][0]
    sim_stock = s["stock"]["sim"][unit]
    assert sum(20 - n for n in sim_stock.values()) == 5
    assert s["stock"]["ledger"][unit] == sim_stock == s["stock"]["central"][unit]
    assert "dashboard: http://127.0.0.1:" in done.stdout
    assert "sign in as demo / " in done.stdout, "the demo login is printed next to the dashboard URL"
    token = s["api_token"]
    assert token.startswith("nalox_") and token in done.stdout
    from inventory.accounts import Accounts, sha256
    from inventory.store import open_store

    store = open_store(str(tmp_path / "demo" / "central.sqlite"))
    try:
        accounts = Accounts(store)
        made = accounts.tokens()
        assert [(t.role, t.revoked_at is None) for t in made] == [("viewer", True)]
        assert made[0].last_used_at is not None, "the demo read its own API with the token"
        with store.tx() as tx:
            assert tx.one("SELECT token_hash FROM api_tokens") == (sha256(token),)
        demo = accounts.get_user("demo")
        assert demo is not None and demo.role == "admin"
    finally:
        store.close()


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    out: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return out


def _wait_for_line(lines: queue.Queue[str], prefix: str, timeout: float) -> None:
    seen: list[str] = []

    def arrived() -> bool:
        try:
            seen.append(lines.get(timeout=0.5))
        except queue.Empty:
            return False
        return seen[-1].startswith(prefix)

    wait_until(f"a line starting {prefix!r} from the demo (got {seen[-3:]})", arrived, timeout)


def _kill_tree(proc: subprocess.Popen[str]) -> None:
    """On a failed test: the demo and everything it started, by pid."""
    if proc.poll() is not None:
        return
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        family = []
    proc.kill()
    proc.wait()
    for child in family:
        try:
            child.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(family, timeout=10)


def test_sigterm_stops_every_process_the_demo_started(tmp_path: Path) -> None:
    mqtt_port, http_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            *NALOX,
            "demo",
            "--headless",
            "--interval",
            "1",
            "--mqtt-port",
            str(mqtt_port),
            "--http-port",
            str(http_port),
            "--workdir",
            str(tmp_path / "demo"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        _wait_for_line(_lines(proc), "presses", 120)
        family = psutil.Process(proc.pid).children(recursive=True)
        names = {p.name() for p in family}
        assert {"mosquitto", "mpv"} <= names, f"expected broker and player among the demo's children: {names}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 130
        gone, alive = psutil.wait_procs(family, timeout=10)
        assert not alive, f"left running after SIGTERM: {[(p.pid, p.name()) for p in alive]}"
        assert port_free(mqtt_port) and port_free(http_port)
    finally:
        _kill_tree(proc)


def test_fleet_of_units_in_one_process_agrees(tmp_path: Path) -> None:
    done, s = headless_demo(tmp_path, "fleet", "--units", "2", "--vends", "4")
    assert done.returncode == 0, f"fleet demo exited {done.returncode}: {done.stderr[-2000:]}"
    assert s["units"] == ["demo-unit-1", "demo-unit-2"]
    assert s["presses"] == 4 and s["sim_dropped"] == 4
    assert s["ledger_dispensed"] == s["sim_dropped"] == s["central_dispensed"]
    for unit in s["units"]:
        assert s["stock"]["ledger"][unit] == s["stock"]["sim"][unit] == s["stock"]["central"][unit]
        assert sum(20 - n for n in s["stock"]["sim"][unit].values()) == 2, "presses go round the fleet"


def test_missing_player_and_encoder_are_named_with_their_packages(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    done = subprocess.run(
        [*NALOX, "demo", "--vends", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": str(empty), "HOME": str(tmp_path)},
    )
    assert done.returncode == 1
    assert "mpv (Debian package mpv)" in done.stderr and "ffmpeg (Debian package ffmpeg)" in done.stderr
    assert "make setup" in done.stderr


def test_a_busy_port_is_refused_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*NALOX, "demo", "--vends", "1", "--mqtt-port", str(port), "--workdir", str(tmp_path / "demo")],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"nalox demo: --mqtt-port {port}: expected a free port, something already listens there"
    ]
    assert not (tmp_path / "demo" / "broker").exists(), "refused before starting anything"
