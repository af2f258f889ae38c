"""One simulated unit as production runs it, every room its own process: broker, inventory service,
simulated board (`nalox sim board`) and unit daemon (`nalox unit run`). Used by the demo and the soak."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nalox.access import DemoAccess, demo_access
from nalox.broker import DEPLOY, Broker, production_replacements
from nalox.census import LedgerCensus, ledger_census
from nalox.central_api import CentralApi
from nalox.configs import ROOM_TEMPERATURE_C, UnitSpec, central_toml, unit_toml
from nalox.errors import NaloxError
from nalox.notify import NotifySocket
from nalox.summary import UnitAccount, count_unit
from nalox.supervision import NALOX, Proc
from nalox.tools import clip
from nalox.waiting import wait_until
from nalox.watcher import Watcher
from simulator.board import SimulatorError
from simulator.cli import ctl_request
from simulator.control import request


@dataclass
class Stack:
    """Broker, inventory service and one simulated unit, each in its own process."""

    workdir: Path
    spec: UnitSpec
    mqtt_port: int
    http_port: int
    seed: int = 0
    board_faults: str = ""
    db: str = ""
    unit_mqtt_port: int = 0  # where the unit connects (a chaos proxy), default the broker
    broker_conf: dict[str, str] = field(default_factory=dict)
    pki: Path | None = None  # a deploy/pki/make-certs.sh folder: the production broker, TLS for everyone
    notify: NotifySocket | None = None
    ready_timeout: float = 60.0  # how long a (re)started unit or inventory service may take to be ready
    broker: Broker | None = None
    board: Proc | None = None
    unit: Proc | None = None
    inventory: Proc | None = None
    watcher: Watcher | None = None
    central: CentralApi | None = None
    access: DemoAccess | None = None  # the demo login and API token, made before the service starts

    @property
    def link(self) -> Path:
        return self.workdir / "board.pty"

    @property
    def unit_dir(self) -> Path:
        return self.workdir / "unit"

    @property
    def ledger_path(self) -> Path:
        return self.unit_dir / "ledger.sqlite3"

    def procs(self) -> list[Proc]:
        return [p for p in (self.unit, self.board, self.inventory) if p is not None]

    def check_alive(self) -> None:
        """NaloxError naming the first room process that has exited."""
        for proc in self.procs():
            proc.check_alive()

    def start(self) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.unit_dir.mkdir(exist_ok=True)
        self.start_broker()
        self.watcher = Watcher(self.mqtt_port, self.client_tls("operations")).start()
        self.start_inventory()
        self.start_board()
        self.write_unit_config(self.unit_mqtt_port or self.mqtt_port)
        self.start_unit()
        return self

    def start_broker(self) -> None:
        if self.broker is None:
            (self.workdir / "broker").mkdir(parents=True, exist_ok=True)
            prod = self.pki is not None
            self.broker = Broker(
                DEPLOY / ("prod.conf" if prod else "dev.conf"),
                port=self.mqtt_port,
                workdir=self.workdir / "broker",
                replacements={**(production_replacements(self.pki) if self.pki else {}), **self.broker_conf},
            )
        self.broker.start()

    def start_inventory(self, units: list[UnitSpec] | None = None) -> None:
        """The inventory service with `units` enrolled (default: this stack's one unit)."""
        conf = self.workdir / "central.toml"
        conf.write_text(
            central_toml(self.workdir, self.http_port, self.mqtt_port, units or [self.spec], self.db,
                         self.client_tls("inventory"), self.client_tls("dashboard"))
        )
        if self.access is None:
            self.access = demo_access(self.db or str(self.workdir / "central.sqlite"))
        argv = [*NALOX, "inventory", "serve", "--config", str(conf)]
        argv += ["--http-port", str(self.http_port), "--mqtt-port", str(self.mqtt_port)]
        self.inventory = Proc("inventory", argv, self.workdir / "inventory.log").start()
        if self.central is None:
            self.central = CentralApi(self.http_port, self.access.api_token)
        wait_until(
            "the inventory service to answer /healthz",
            self.central.healthy,
            self.ready_timeout,
            alive=self.inventory.check_alive,
        )

    def start_board(self) -> None:
        s = self.spec
        argv = [*NALOX, "sim", "board", "--link", str(self.link), "--columns", str(s.columns)]
        argv += ["--stock", str(s.stock), "--spin-ms", str(s.spin_ms), "--seed", str(self.seed)]
        argv += ["--state-dir", str(self.workdir / "board-state")]
        if self.board_faults:
            argv += ["--faults", self.board_faults]
        self.board = Proc("board", argv, self.workdir / "board.log").start()
        ctl = Path(str(self.link) + ".ctl")
        wait_until(
            "the simulated board's pty and control socket",
            lambda: self.link.exists() and ctl.exists(),
            30,
            alive=self.board.check_alive,
        )
        self.ctl("temp", str(ROOM_TEMPERATURE_C))

    def write_unit_config(self, mqtt_port: int) -> Path:
        video = clip(self.spec.video_seconds)
        conf = self.unit_dir / "unit.toml"
        conf.write_text(
            unit_toml(self.spec, self.unit_dir, str(self.link), mqtt_port, {"en": video, "es": video})
        )
        return conf

    def start_unit(self) -> None:
        """`nalox unit run`, until it says READY=1 on the notify socket, or else until the watcher
        sees it online on MQTT."""
        argv = [*NALOX, "unit", "run", "--config", str(self.unit_dir / "unit.toml")]
        env = {"DISPLAY": ""} if self.spec.headless else {}
        if self.notify is not None:
            self.notify.drain()
            env["NOTIFY_SOCKET"] = str(self.notify.path)
        self.unit = Proc("unit", argv, self.workdir / "unit.log", env=env).start()
        if self.notify is not None:
            self.notify.wait_ready(self.ready_timeout, alive=self.unit.check_alive)
        elif self.watcher is not None:
            self.wait_unit_online()

    def wait_unit_online(self, timeout: float = 60) -> None:
        assert self.watcher is not None and self.unit is not None
        uid = self.spec.unit_id
        if not self.watcher.wait_for(lambda: self.watcher is not None and self.watcher.online(uid), timeout):
            self.unit.check_alive()
            raise NaloxError(
                f"expected unit {uid} online on MQTT within {timeout:g} s; unit log: {self.unit.log_tail()}"
            )

    def ctl(self, *args: str, timeout: float = 15) -> str:
        """What `nalox sim ctl --link PATH ...` sends, sent on the board's control socket from this process.

        The same request as the command builds (`ctl_request`), without a Python start-up per call: that cost
        1-1.5 s a press on a loaded machine and paced the soak at about 30 presses a minute."""
        action, *rest = args
        lang = "en"
        if "--lang" in rest:
            at = rest.index("--lang")
            lang = rest[at + 1]
            del rest[at:at + 2]
        path = str(self.link) + ".ctl"
        try:
            reply = request(path, ctl_request(action, rest, lang), timeout=timeout)
        except (OSError, SimulatorError) as exc:
            raise NaloxError(f"`nalox sim ctl {' '.join(args)}` on {path}: {exc}") from exc
        if not reply.get("ok"):
            raise NaloxError(f"`nalox sim ctl {' '.join(args)}`: the board answered {reply.get('error')}")
        return json.dumps(reply["stats"]) if action == "stats" else ""

    def sim_stats(self) -> dict[str, Any]:
        """The simulated board's physical ground truth (`nalox sim ctl stats`)."""
        return dict(json.loads(self.ctl("stats")))

    def ledger(self) -> LedgerCensus:
        return ledger_census(self.ledger_path)

    def account(self) -> UnitAccount:
        """This unit counted three ways: its ledger, the board's ground truth, the central store."""
        assert self.central is not None
        led = self.ledger()
        return count_unit(self.spec.unit_id, led.dispensed, led.stock, self.sim_stats(), self.central)

    def client_tls(self, name: str) -> dict[str, str] | None:
        """The certificate files make-certs.sh made for `name`, or None without a PKI."""
        if self.pki is None:
            return None
        folder = self.pki / "clients" / name
        return {"ca": str(folder / "ca.crt"), "cert": str(folder / f"{name}.crt"),
                "key": str(folder / f"{name}.key")}

    def close(self) -> None:
        """Unit first (it says offline), then the service, the board, the broker."""
        for proc in (self.unit, self.inventory, self.board):
            if proc is not None:
                proc.stop()
        if self.watcher is not None:
            self.watcher.stop()
        if self.broker is not None:
            self.broker.stop()
        if self.notify is not None:
            self.notify.close()
