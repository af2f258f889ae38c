"""`nalox demo`: broker + simulated board + unit daemon + inventory service on this machine, with
presses now and then, a live progress line, and a JSON summary that checks the three counts agree.

Composition only: every room runs as it would in production (its own process and CLI); the demo
just writes their config files, starts them in their own process groups, presses the simulated
button and reads each room's own account of what happened. The soak (nalox/soak.py) reuses the
pieces here.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import psutil
import structlog
from paho.mqtt.enums import CallbackAPIVersion

from nalox.broker import DEPLOY, Broker, free_port

log = structlog.get_logger("nalox.demo")
NALOX = [sys.executable, "-m", "nalox.cli"]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nalox"
ROOM_TEMPERATURE_C = 22.0
TERMINAL_EVENTS = {"dispense", "vend_failed", "out_of_stock"}


class DemoError(Exception):
    """The demo could not start or finish: says what was expected and what happened."""


class Stopped(Exception):
    """SIGTERM arrived: unwind and stop everything."""


# ------------------------------------------------------------------ tools and media


def require_tools() -> None:
    """Fail early with one clear message when a system program the demo needs is missing."""
    need = {"mosquitto": "mosquitto", "mpv": "mpv", "ffmpeg": "ffmpeg"}
    missing = [f"{exe} (Debian package {pkg})" for exe, pkg in need.items() if not _which(exe)]
    if missing:
        raise DemoError(
            f"nalox demo needs {', '.join(missing)}: not found on PATH or in /usr/sbin; "
            "run `make setup` (installs them with apt) and try again"
        )


def _which(exe: str) -> str | None:
    return shutil.which(exe) or shutil.which(exe, path="/usr/sbin:/usr/local/sbin")


def make_clip(lang: str, seconds: float = 2.0, cache: Path = CACHE) -> Path:
    """A short test clip per language, made once with ffmpeg and cached."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"demo-{lang}-{seconds:g}s.mp4"
    if path.exists() and path.stat().st_size > 0:
        return path
    pattern = "testsrc" if lang == "en" else "testsrc2"
    tmp = path.with_suffix(".part.mp4")
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"{pattern}=duration={seconds}:size=320x240:rate=15",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency=440:duration={seconds}",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
        str(tmp),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise DemoError(
            f"expected ffmpeg to make {path.name}, it exited {done.returncode}: {done.stderr.strip()[-300:]}"
        )
    tmp.rename(path)
    return path


def display_available() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


# ------------------------------------------------------------------ processes


@dataclass(eq=False)
class Proc:
    """One supervised child in its own process group; stop() takes the whole tree down."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(self.env or {}))
        with open(self.log_path, "ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        LIVE.add(self)
        log.info("started", proc=self.name, pid=self.popen.pid)
        return self

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise DemoError(f"{self.name}: expected a started process, found none")
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the group, then SIGKILL to the group and any descendant that left it."""
        if self.popen is None:
            return
        family = _descendants(self.popen.pid)
        if self.popen.poll() is None:
            _signal_group(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("stop timed out, killing", proc=self.name, timeout_s=timeout)
        self._reap(family)

    def kill9(self) -> None:
        """kill -9 of the process and everything it started (a crash or a power cut)."""
        if self.popen is None:
            return
        family = _descendants(self.popen.pid)
        self._reap(family)

    def _reap(self, family: list[psutil.Process]) -> None:
        assert self.popen is not None
        _signal_group(self.popen.pid, signal.SIGKILL)
        for child in family:
            try:
                child.kill()
            except psutil.Error:
                pass
        self.popen.wait()
        psutil.wait_procs(family, timeout=5)
        LIVE.discard(self)

    def log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class _Live(set[Proc]):
    """Every child still running; killed at interpreter exit whatever path led there."""

    def kill_all(self) -> None:
        for proc in list(self):
            proc.kill9()


LIVE = _Live()
atexit.register(LIVE.kill_all)


def wait_until(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    interval: float = 0.1,
    alive: Callable[[], None] | None = None,
) -> None:
    """Poll `check` until it is true; raise DemoError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        try:
            if check():
                return
        except (OSError, httpx.HTTPError, ValueError, subprocess.SubprocessError):
            pass
        time.sleep(interval)
    raise DemoError(f"expected {what} within {timeout:g} s, it did not happen")


class NotifySocket:
    """A NOTIFY_SOCKET like systemd's: the daemon says READY=1 here when it is up."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)

    def drain(self) -> None:
        self.sock.setblocking(False)
        try:
            while self.sock.recv(4096):
                pass
        except OSError:
            pass
        finally:
            self.sock.settimeout(0.2)

    def wait_ready(self, timeout: float, alive: Callable[[], None] | None = None) -> float:
        """perf_counter() when READY=1 arrived; DemoError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if alive is not None:
                alive()
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            if b"READY=1" in data.split(b"\n"):
                return time.perf_counter()
        raise DemoError(f"expected READY=1 on the notify socket within {timeout:g} s, got none")

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no obstacle
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


# ------------------------------------------------------------------ config files


@dataclass
class UnitSpec:
    unit_id: str
    columns: int = 6
    stock: int = 20
    spin_ms: int = 150
    video_seconds: float = 2.0
    headless: bool = True
    multi_kit_window_s: float = 0
    site: str = "Demo County Jail - Release Lobby"


def unit_toml(spec: UnitSpec, workdir: Path, link: str, mqtt_port: int, videos: dict[str, Path]) -> str:
    """The unit daemon's config for one simulated unit (the format of controller/config.py)."""
    cols = "\n".join(
        f'[[columns]]\ncolumn = {c}\nproduct = "nasal-4mg"\ncapacity = {max(spec.stock, 30)}\n'
        f'par = 5\ninitial_stock = {spec.stock}\nlot = "DEMO-LOT-{c}"\nexpiry = 2028-06-30\n'
        for c in range(1, spec.columns + 1)
    )
    return f'''# generated by nalox demo for a simulated unit
[unit]
id = "{spec.unit_id}"
site = "{spec.site}"

[serial]
port = "{link}"
baudrate = 115200

[products.nasal-4mg]
name = "Naloxone HCl nasal spray 4 mg, 2-pack"
doses = 2

{cols}
[videos]
default_language = "en"
expected_length_s = {spec.video_seconds}
grace_s = 10
headless = {str(spec.headless).lower()}

[videos.files]
en = "{videos["en"]}"
es = "{videos["es"]}"

[policies]
multi_kit_window_s = {spec.multi_kit_window_s}
status_poll_s = 5

[paths]
data_dir = "{workdir}"
control_socket = "{workdir / "control.sock"}"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
client_id = "{spec.unit_id}"
keepalive = 10
telemetry_interval_s = 10
reconnect_min_s = 0.2
reconnect_max_s = 2
ack_resend_s = 10
'''


def central_toml(workdir: Path, http_port: int, mqtt_port: int, units: list[UnitSpec], db: str = "") -> str:
    units_text = "\n".join(f'[[units]]\nid = "{u.unit_id}"\nsite = "{u.site}"\n' for u in units)
    return f'''# generated by nalox demo
[server]
host = "127.0.0.1"
port = {http_port}
refresh_s = 5

[store]
db = "{db or workdir / "central.sqlite"}"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
client_id = "nalox-inventory-demo"

[ingest]
gap_timeout_s = 5

[enrollment]
from_state = true

{units_text}'''


# ------------------------------------------------------------------ watching the system


@dataclass
class UnitView:
    """What the MQTT tree says about one unit."""

    online: bool = False
    state: dict[str, Any] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    event_ids: set[str] = field(default_factory=set)


class Watcher:
    """A plain MQTT subscriber on nalox/v1/#: unit status, state and events as they pass by."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.units: dict[str, UnitView] = {}
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"nalox-demo-watch-{os.getpid()}", protocol=mqtt.MQTTv5
        )
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("nalox/v1/#", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)

    def start(self) -> Watcher:
        self.client.connect_async("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        if len(parts) < 4:
            return
        try:
            payload = json.loads(msg.payload)
        except ValueError:
            return
        with self.changed:
            view = self.units.setdefault(parts[2], UnitView())
            self._apply(view, parts[3:], payload)
            self.changed.notify_all()

    @staticmethod
    def _apply(view: UnitView, rest: list[str], payload: Any) -> None:
        if rest == ["status"] and isinstance(payload, dict):
            view.online = payload.get("state") == "online"
        elif rest == ["state"] and isinstance(payload, dict):
            view.state = payload
        elif rest[0] == "event" and len(rest) == 2 and isinstance(payload, dict):
            event_id = str(payload.get("event_id"))
            if event_id not in view.event_ids:
                view.event_ids.add(event_id)
                view.events[rest[1]] = view.events.get(rest[1], 0) + 1

    def view(self, unit: str) -> UnitView:
        with self.lock:
            return self.units.setdefault(unit, UnitView())

    def terminal_count(self, unit: str) -> int:
        with self.lock:
            events = self.units.get(unit, UnitView()).events
            return sum(events.get(t, 0) for t in TERMINAL_EVENTS)

    def wait_for(self, check: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not check():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 0.5))
        return True


class Central:
    """The inventory service's JSON API, as a user's script would read it."""

    def __init__(self, http_port: int) -> None:
        self.base = f"http://127.0.0.1:{http_port}"
        self.http = httpx.Client(base_url=self.base, timeout=5)

    def healthy(self) -> bool:
        return self.http.get("/healthz").status_code == 200

    def units(self) -> list[dict[str, Any]]:
        data = self.http.get("/api/units").raise_for_status().json()
        return list(data["units"] if isinstance(data, dict) else data)

    def stock(self, unit: str) -> dict[str, int]:
        for entry in self.units():
            if entry.get("id", entry.get("unit")) == unit:
                return _column_stock(entry)
        return {}

    def dispense_count(self, unit: str) -> int:
        """Dispense events the central store holds for one unit."""
        return len(set(self.event_ids(unit, "dispense")))

    def event_ids(self, unit: str, event_type: str | None = None) -> list[str]:
        """Every event id the central store holds for one unit (duplicates kept, to be counted)."""
        ids: list[str] = []
        params: dict[str, Any] = {"limit": 1000}
        if event_type:
            params["type"] = event_type
        while True:
            resp = self.http.get(f"/api/units/{unit}/events", params=params)
            resp.raise_for_status()
            data = resp.json()
            batch = data["events"] if isinstance(data, dict) else data
            ids += [str(e["event_id"]) for e in batch if event_type in (None, e.get("type", event_type))]
            if len(batch) < 1000:
                return ids
            params["before_seq"] = min(int(e["seq"]) for e in batch)

    def close(self) -> None:
        self.http.close()


def _column_stock(entry: dict[str, Any]) -> dict[str, int]:
    cols = entry.get("columns") or entry.get("stock") or []
    if isinstance(cols, dict):
        return {str(k): int(v if not isinstance(v, dict) else v["stock"]) for k, v in cols.items()}
    return {str(c.get("column", c.get("number"))): int(c["stock"]) for c in cols}


# ------------------------------------------------------------------ one simulated unit, as processes


@dataclass
class Stack:
    """Broker, inventory service and K=1 simulated unit, each in its own process."""

    workdir: Path
    spec: UnitSpec
    mqtt_port: int
    http_port: int
    seed: int = 0
    board_faults: str = ""
    db: str = ""
    unit_mqtt_port: int = 0  # where the unit connects (a chaos proxy), default the broker
    broker_conf: dict[str, str] = field(default_factory=dict)
    notify: NotifySocket | None = None
    broker: Broker | None = None
    board: Proc | None = None
    unit: Proc | None = None
    inventory: Proc | None = None
    watcher: Watcher | None = None
    central: Central | None = None

    @property
    def link(self) -> Path:
        return self.workdir / "board.pty"

    @property
    def unit_dir(self) -> Path:
        return self.workdir / "unit"

    def start(self) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.unit_dir.mkdir(exist_ok=True)
        self.start_broker()
        self.watcher = Watcher(self.mqtt_port).start()
        self.start_inventory()
        self.start_board()
        self.write_unit_config(self.unit_mqtt_port or self.mqtt_port)
        self.start_unit()
        return self

    def start_broker(self) -> None:
        if self.broker is None:
            (self.workdir / "broker").mkdir(exist_ok=True)
            self.broker = Broker(
                DEPLOY / "dev.conf",
                port=self.mqtt_port,
                workdir=self.workdir / "broker",
                replacements=self.broker_conf,
            )
        self.broker.start()

    def start_inventory(self) -> None:
        self.start_inventory_for([self.spec])

    def start_inventory_for(self, units: list[UnitSpec]) -> None:
        conf = self.workdir / "central.toml"
        conf.write_text(central_toml(self.workdir, self.http_port, self.mqtt_port, units, self.db))
        argv = [
            *NALOX,
            "inventory",
            "serve",
            "--config",
            str(conf),
            "--http-port",
            str(self.http_port),
            "--mqtt-port",
            str(self.mqtt_port),
        ]
        self.inventory = Proc("inventory", argv, self.workdir / "inventory.log").start()
        if self.central is None:
            self.central = Central(self.http_port)
        wait_until(
            "the inventory service to answer /healthz",
            self.central.healthy,
            60,
            alive=lambda: self.check_alive(self.inventory),
        )

    def start_board(self) -> None:
        argv = [
            *NALOX,
            "sim",
            "board",
            "--link",
            str(self.link),
            "--columns",
            str(self.spec.columns),
            "--stock",
            str(self.spec.stock),
            "--spin-ms",
            str(self.spec.spin_ms),
            "--seed",
            str(self.seed),
            "--state-dir",
            str(self.workdir / "board-state"),
        ]
        if self.board_faults:
            argv += ["--faults", self.board_faults]
        self.board = Proc("board", argv, self.workdir / "board.log").start()
        ctl = Path(str(self.link) + ".ctl")
        wait_until(
            "the simulated board's pty and control socket",
            lambda: self.link.exists() and ctl.exists(),
            30,
            alive=lambda: self.check_alive(self.board),
        )
        self.ctl("temp", str(ROOM_TEMPERATURE_C))  # a unit in a heated lobby, inside 20-25 C storage

    def write_unit_config(self, mqtt_port: int) -> Path:
        videos = {lang: make_clip(lang, self.spec.video_seconds) for lang in ("en", "es")}
        conf = self.unit_dir / "unit.toml"
        conf.write_text(unit_toml(self.spec, self.unit_dir, str(self.link), mqtt_port, videos))
        return conf

    def start_unit(self, wait_online: bool = True) -> None:
        argv = [*NALOX, "unit", "run", "--config", str(self.unit_dir / "unit.toml")]
        env = {"DISPLAY": ""} if self.spec.headless else {}
        if self.notify is not None:
            self.notify.drain()
            env["NOTIFY_SOCKET"] = str(self.notify.path)
        self.unit = Proc("unit", argv, self.workdir / "unit.log", env=env).start()
        if self.notify is not None:
            self.notify.wait_ready(60, alive=lambda: self.check_alive(self.unit))
        elif wait_online:
            self.wait_unit_online()

    def wait_unit_online(self, timeout: float = 60) -> None:
        assert self.watcher is not None
        uid = self.spec.unit_id
        if not self.watcher.wait_for(
            lambda: self.watcher is not None and self.watcher.units.get(uid, UnitView()).online, timeout
        ):
            self.check_alive(self.unit)
            raise DemoError(
                f"expected unit {uid} online on MQTT within {timeout:g} s; "
                f"unit log: {self.unit.log_tail() if self.unit else ''}"
            )

    def check_alive(self, proc: Proc | None) -> None:
        if proc is not None and not proc.alive():
            raise DemoError(
                f"{proc.name} exited with {proc.returncode()}; log {proc.log_path}: {proc.log_tail()}"
            )

    def ctl(self, *args: str, timeout: float = 15) -> str:
        """`nalox sim ctl --link PATH ...`: drive the simulated board as a user would."""
        done = subprocess.run(
            [*NALOX, "sim", "ctl", "--link", str(self.link), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise DemoError(
                f"`nalox sim ctl {' '.join(args)}` exited {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()[-300:]}"
            )
        return done.stdout

    def sim_stats(self) -> dict[str, Any]:
        return dict(json.loads(self.ctl("stats")))

    def ledger(self) -> dict[str, Any]:
        return ledger_census(self.unit_dir / "ledger.sqlite3")

    def close(self) -> None:
        """Unit first (it says offline), then the service, the board, the broker."""
        for proc in (self.unit, self.inventory, self.board):
            if proc is not None:
                proc.stop()
        if self.watcher is not None:
            self.watcher.stop()
        if self.central is not None:
            self.central.close()
        if self.broker is not None:
            self.broker.stop()
        if self.notify is not None:
            self.notify.close()


def ledger_census(path: Path) -> dict[str, Any]:
    """Kits dispensed, stock per column, outbox depth and every event according to the unit's own
    ledger file, read-only (SQLite WAL lets us read while the daemon writes)."""
    if not path.exists():
        return {"dispensed": 0, "stock": {}, "event_ids": [], "terminal": 0, "outbox": 0, "types": {}}
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        types = dict(con.execute("SELECT event_type, COUNT(*) FROM events GROUP BY event_type").fetchall())
        stock = {str(c): int(n) for c, n in con.execute("SELECT col, stock FROM columns ORDER BY col")}
        ids = [r[0] for r in con.execute("SELECT event_id FROM events ORDER BY seq")]
        outbox = int(con.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    finally:
        con.close()
    return {
        "dispensed": int(types.get("dispense", 0)),
        "stock": stock,
        "event_ids": ids,
        "outbox": outbox,
        "terminal": sum(int(types.get(t, 0)) for t in TERMINAL_EVENTS),
        "types": types,
    }


# ------------------------------------------------------------------ summary


def summary(stack: Stack, presses: int) -> dict[str, Any]:
    uid = stack.spec.unit_id
    sim = stack.sim_stats()
    led = stack.ledger()
    assert stack.central is not None
    central_stock = stack.central.stock(uid)
    central_count = stack.central.dispense_count(uid)
    return {
        "presses": presses,
        "ledger_dispensed": led["dispensed"],
        "sim_dropped": int(sim["dropped"]),
        "central_dispensed": central_count,
        "double_drops": len(sim.get("double_drops", [])),
        "stock": {
            "ledger": {uid: led["stock"]},
            "sim": {uid: _str_keys(sim["stock"])},
            "central": {uid: central_stock},
        },
        "units": [uid],
    }


def _str_keys(d: dict[Any, Any]) -> dict[str, int]:
    return {str(k): int(v) for k, v in d.items()}


def agrees(s: dict[str, Any]) -> bool:
    st = s["stock"]
    return (
        s["ledger_dispensed"] == s["sim_dropped"] == s["central_dispensed"]
        and st["ledger"] == st["sim"] == st["central"]
    )


# ------------------------------------------------------------------ the demo itself


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="nalox demo", description=__doc__.splitlines()[0])
    p.add_argument("--vends", type=int, default=0, help="press N times, wait for the central store, stop")
    p.add_argument("--duration", type=float, default=0, help="stop after S seconds (default: until Ctrl-C)")
    p.add_argument("--units", type=int, default=1, help="K simulated units (K>1: a fleet in one process)")
    p.add_argument("--mqtt-port", type=int, default=0, help="broker port (default: a free one)")
    p.add_argument("--http-port", type=int, default=0, help="dashboard port (default 8080, or a free one)")
    p.add_argument("--headless", action="store_true", help="video through mpv with no window and no sound")
    p.add_argument("--summary", type=Path, help="write the JSON summary here at the end")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--interval", type=float, default=4.0, help="mean seconds between presses")
    p.add_argument("--workdir", type=Path, help="keep configs, ledgers and logs here (default: a temp dir)")
    return p.parse_args(argv)


def _on_sigterm(signum: int, frame: object) -> None:
    raise Stopped()


@contextmanager
def sigterm_raises() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    configure_logging()
    try:
        require_tools()
        with sigterm_raises():
            if args.units > 1:
                from nalox import fleet

                return fleet.run_demo(args)
            return run_single(args)
    except DemoError as e:
        print(f"nalox demo: {e}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Stopped):
        print("\nnalox demo: stopped", file=sys.stderr)
        return 130


def configure_logging() -> None:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )


def choose_ports(args: argparse.Namespace) -> tuple[int, int]:
    mqtt_port = args.mqtt_port or free_port()
    http_port = args.http_port or (8080 if port_free(8080) else free_port())
    return mqtt_port, http_port


def run_single(args: argparse.Namespace) -> int:
    mqtt_port, http_port = choose_ports(args)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nalox-demo-"))
    headless = args.headless or not display_available()
    spec = UnitSpec("demo-unit-1", headless=headless)
    stack = Stack(workdir, spec, mqtt_port, http_port, seed=args.seed)
    print(f"nalox demo: files and logs in {workdir}", flush=True)
    try:
        stack.start()
        _greet(stack)
        presses = press_loop(stack, args)
        wait_caught_up(stack, timeout=90 if args.vends else 30)
        result = summary(stack, presses)
        _report(result, args.summary)
        return 0 if agrees(result) else 3
    finally:
        stack.close()


def _greet(stack: Stack) -> None:
    nalox = Path(sys.executable).parent / "nalox"  # the venv's command: not on a new user's PATH
    print(
        f"dashboard: http://127.0.0.1:{stack.http_port}/   broker: mqtt://127.0.0.1:{stack.mqtt_port}\n"
        f"press the button yourself: {nalox} sim ctl --link {stack.link} press [--lang es]\n"
        f"watch the topics: mosquitto_sub -p {stack.mqtt_port} -V mqttv5 -v -t 'nalox/v1/#'\n"
        "Ctrl-C stops everything.",
        flush=True,
    )


def press_loop(stack: Stack, args: argparse.Namespace) -> int:
    """Press now and then until --vends presses are done, --duration is over, or Ctrl-C."""
    rng = random.Random(args.seed)
    end = time.monotonic() + args.duration if args.duration else float("inf")
    presses = 0
    progress = Progress(stack)
    while time.monotonic() < end and (not args.vends or presses < args.vends):
        lang = "es" if rng.random() < 0.3 else "en"
        press_and_settle(stack, lang, timeout=stack.spec.video_seconds + 30)
        presses += 1
        progress.show(presses)
        if not args.vends:
            _sleep_watching(stack, progress, presses, rng.expovariate(1 / args.interval), end)
    progress.done()
    return presses


def press_and_settle(stack: Stack, lang: str, timeout: float) -> bool:
    """Press once, then wait until the unit reports how that vend ended (dispense, failure, out of stock)."""
    assert stack.watcher is not None
    uid = stack.spec.unit_id
    before = stack.watcher.terminal_count(uid)
    stack.ctl("press", "--lang", lang)
    ok = stack.watcher.wait_for(
        lambda: stack.watcher is not None and stack.watcher.terminal_count(uid) > before, timeout
    )
    if not ok:
        for proc in (stack.unit, stack.board, stack.inventory):
            stack.check_alive(proc)
        log.warning("vend did not settle in time", unit=uid, timeout_s=timeout)
    return ok


def _sleep_watching(stack: Stack, progress: Progress, presses: int, seconds: float, end: float) -> None:
    until = min(time.monotonic() + seconds, end)
    while time.monotonic() < until:
        time.sleep(min(1.0, max(0.0, until - time.monotonic())))
        for proc in (stack.unit, stack.board, stack.inventory):
            stack.check_alive(proc)
        progress.show(presses)


class Progress:
    """One live line: presses, ledger, central, outbox. Rewritten in place on a terminal."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.tty = sys.stdout.isatty()
        self.last = 0.0

    def show(self, presses: int) -> None:
        now = time.monotonic()
        if not self.tty and now - self.last < 5:
            return
        self.last = now
        line = self.line(presses)
        print(("\r" + line + "   ") if self.tty else line, end="" if self.tty else "\n", flush=True)

    def line(self, presses: int) -> str:
        uid = self.stack.spec.unit_id
        ledger: object = "?"
        outbox: object = "?"
        try:
            census = self.stack.ledger()
            ledger, outbox = census["dispensed"], census["outbox"]
        except Exception:  # the progress line never stops the demo
            pass
        try:
            central: object = self.stack.central.dispense_count(uid) if self.stack.central else "?"
        except (httpx.HTTPError, KeyError, ValueError):
            central = "?"
        return f"presses {presses} | ledger {ledger} | central {central} | outbox {outbox}"

    def done(self) -> None:
        if self.tty:
            print(flush=True)


def wait_caught_up(stack: Stack, timeout: float) -> None:
    """Until ledger == simulator == central (counts and stock) on two polls in a row."""
    agreed = [0]

    def check() -> bool:
        s = summary(stack, 0)
        agreed[0] = agreed[0] + 1 if agrees(s) else 0
        return agreed[0] >= 2

    try:
        wait_until(
            "the central store to catch up with the unit ledger and the simulator",
            check,
            timeout,
            interval=0.5,
        )
    except DemoError:
        log.warning("central store did not catch up", timeout_s=timeout)


def _report(result: dict[str, Any], path: Path | None) -> None:
    verdict = "agree" if agrees(result) else "DIFFER"
    print(
        f"presses {result['presses']}: ledger {result['ledger_dispensed']}, simulator "
        f"{result['sim_dropped']}, central {result['central_dispensed']} ({verdict})",
        flush=True,
    )
    if path is not None:
        path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    sys.exit(main())
