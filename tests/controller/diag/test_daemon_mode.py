"""`nalox diag --config` with the unit daemon running (`nalox unit run`, a separate process that owns the
port): checks go through its control socket, restock with a blind count through the CLI and through
`cmd/restock` over a real mosquitto, `cmd/diag` returns the same report. With the daemon stopped, the
same command opens the configured port itself."""

from __future__ import annotations

import io
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import redirect_stdout
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from controller import control_socket
from controller.clock import RealClock
from controller.config import load_config
from controller.diag.cli import parser
from controller.diag.restock import run_restock
from controller.diag.result import EXIT_CODES
from controller.ledger import Ledger
from nalox.broker import Broker
from schemas.models import DispenseEvent, RestockEvent, parse_event
from tests.conftest import stop_group
from tests.controller.diag.conftest import NALOX, ROOT, SimProcess, config_data, run_diag, write_config

UNIT = "diag-unit-1"


class UnitProcess:
    """`nalox unit run --config unit.toml` against the simulated board, reporting to `broker`."""

    def __init__(self, tmp_path: Path, clips: dict[str, Path], sim: SimProcess, broker: Broker) -> None:
        data = config_data(tmp_path, clips)
        data["serial"]["port"] = str(sim.link)
        data["mqtt"] = {"host": "127.0.0.1", "port": broker.port, "telemetry_interval_s": 3600}
        self.config_path = write_config(tmp_path, data)
        self.config = load_config(self.config_path)
        self.socket = Path(str(self.config.paths.control_socket))
        self.log = open(tmp_path / "unit.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([*NALOX, "unit", "run", "--config", str(self.config_path)], cwd=ROOT,
                                     stdout=self.log, stderr=self.log, start_new_session=True)
        deadline = time.monotonic() + 30
        while not control_socket.is_served(self.socket):
            assert self.proc.poll() is None, f"nalox unit run exited: {self.log_tail()}"
            assert time.monotonic() < deadline, f"no control socket within 30 s: {self.log_tail()}"
            time.sleep(0.05)  # polling for the daemon's socket, with a deadline

    def log_tail(self) -> str:
        return (Path(self.log.name).read_text(errors="replace"))[-2000:]

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, 30)
        self.proc = None

    def restock_events(self) -> list[RestockEvent]:
        ledger = Ledger(self.config.paths.ledger_path(), RealClock(), unit_id=UNIT)
        try:
            events = [parse_event(row.payload) for row in ledger.pending(0, 1000)]
        finally:
            ledger.close()
        return [e for e in events if isinstance(e, RestockEvent) and e.source != "initial"]


@pytest.fixture
def unit(tmp_path: Path, clips: dict[str, Path], sim_process: SimProcess,
         broker: Broker) -> Iterator[UnitProcess]:
    u = UnitProcess(tmp_path, clips, sim_process, broker)
    u.start()
    yield u
    u.stop()
    u.log.close()


def test_report_goes_through_the_daemon(unit: UnitProcess) -> None:
    out = run_diag("--config", str(unit.config_path), "report", "--json")
    report = json.loads(out.stdout)
    assert report["via"] == "daemon" and report["unit"] == UNIT, report
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["ledger"]["status"] == "pass" and checks["ledger"]["data"]["last_seq"] >= 3
    assert checks["broker.reach"]["status"] == "pass" and checks["broker.tls"]["status"] == "warn"
    assert checks["video.en"]["status"] == "pass" and checks["sensors.door"]["status"] == "pass"
    assert report["checks"][0]["name"] == "unit" and checks["unit"]["data"]["mode"] == "vending"
    assert checks["unit"]["data"]["stock"] == {"1": 10, "2": 10, "3": 10}
    assert out.returncode == 0, [c for c in report["checks"] if c["status"] == "fail"]


def test_the_port_is_never_fought_over(unit: UnitProcess) -> None:
    direct = run_diag("--port", str(unit.config.serial.port), "sensors")
    assert direct.returncode == EXIT_CODES["link"] and "no dispenser board answers" in direct.stdout
    via = run_diag("--config", str(unit.config_path), "ping", "--json")
    assert via.returncode == 0 and json.loads(via.stdout)["via"] == "daemon"


def test_without_the_daemon_the_config_opens_the_port(unit: UnitProcess) -> None:
    unit.stop()
    out = run_diag("--config", str(unit.config_path), "sensors", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["via"] == "port"


def test_drop_and_motor_tests_through_the_daemon(unit: UnitProcess, sim_process: SimProcess) -> None:
    drop = run_diag("--config", str(unit.config_path), "drop-test", "--column", "3")
    assert drop.returncode == 0, drop.stdout + drop.stderr
    assert "drop.column3: pass" in drop.stdout and "recorded in the ledger as a test vend" in drop.stdout
    ledger = Ledger(unit.config.paths.ledger_path(), RealClock(), unit_id=UNIT)
    try:
        test_vends = [e for e in (parse_event(r.payload) for r in ledger.pending(0, 1000))
                      if isinstance(e, DispenseEvent) and e.via == "test"]
    finally:
        ledger.close()
    assert [(e.column, e.stock_after) for e in test_vends] == [(3, 9)]
    assert json.loads(sim_process.ctl("stats"))["per_column"]["3"] == 1  # the ledger and the board agree
    sim_process.ctl("door", "open")
    deadline = time.monotonic() + 10
    while True:  # the daemon sees the door through the board's DOOR event
        motor = run_diag("--config", str(unit.config_path), "motor-test", "2")
        if "door is closed" not in motor.stdout or time.monotonic() > deadline:
            break
    assert motor.returncode == 0 and "motor.column2: pass" in motor.stdout, motor.stdout


def test_blind_count_matching_the_ledger(unit: UnitProcess) -> None:
    out = run_diag("--config", str(unit.config_path), "restock", "--column", "1", "--count", "30",
                   "--found", "10", "--lot", "LOT-NEW", "--expiry", "2029-01-31")
    assert out.returncode == 0, out.stderr
    assert "column 1: found 10, ledger expected 10; now 30 kits, lot LOT-NEW" in out.stdout
    [event] = unit.restock_events()
    assert (event.counted_before, event.expected_before, event.discrepancy, event.added) == (10, 10, 0, 20)


def test_blind_count_discrepancy_needs_a_reason(unit: UnitProcess) -> None:
    args = ["--config", str(unit.config_path), "restock", "--column", "2", "--count", "30", "--found", "8"]
    refused = run_diag(*args)
    assert refused.returncode == EXIT_CODES["restock"]
    assert "counted 8 kits, ledger expected 10" in refused.stderr and "--reason" in refused.stderr
    assert unit.restock_events() == []  # nothing recorded until it is resolved
    done = run_diag(*args, "--reason", "two kits taken while the door was open")
    assert done.returncode == 0, done.stderr
    assert "discrepancy -2 (reason: two kits taken while the door was open)" in done.stdout
    [event] = unit.restock_events()
    assert (event.counted_before, event.expected_before, event.discrepancy) == (8, 10, -2)
    assert event.reason == "two kits taken while the door was open" and event.stock_after == 30


def test_blind_count_is_required_when_piped(unit: UnitProcess) -> None:
    out = run_diag("--config", str(unit.config_path), "restock", "--column", "1", "--count", "30")
    assert out.returncode == 2 and "blind count: expected --found" in out.stderr


def test_interactive_blind_count_asks_before_it_shows(unit: UnitProcess) -> None:
    prompts: list[str] = []
    answers = iter(["seven", "7", "", "one kit fell behind the spiral"])
    printed = io.StringIO()

    def ask(prompt: str) -> str:
        prompts.append(printed.getvalue() + "|" + prompt)
        return next(answers)

    argv = ["--config", str(unit.config_path), "restock", "--column", "3", "--count", "25"]
    args = parser().parse_args(argv)
    with redirect_stdout(printed):
        code = run_restock(args, unit.config, ask=ask, interactive=True)
    assert code == 0, printed.getvalue()
    before_count = prompts[1]
    assert "How many did you find?" in before_count and "10" not in before_count  # blind: not shown yet
    assert "Ledger expected 10 kits in column 3; you counted 7" in prompts[2]
    [event] = unit.restock_events()
    assert (event.counted_before, event.discrepancy) == (7, -3)
    assert event.reason == "one kit fell behind the spiral"


def test_no_daemon_no_restock(tmp_path: Path, clips: dict[str, Path]) -> None:
    path = write_config(tmp_path, config_data(tmp_path, clips))
    out = run_diag("--config", str(path), "restock", "--column", "1", "--count", "5", "--found", "0")
    assert out.returncode == EXIT_CODES["restock"] and "systemctl start nalox-unit" in out.stderr
    port_only = run_diag("--port", "/dev/null", "restock", "--column", "1", "--count", "5", "--found", "0")
    assert port_only.returncode == 2 and "expected --config" in port_only.stderr


# ---------------------------------------------------------------- over MQTT


class Commander:
    """Central's side: publishes `cmd/<name>` with a v5 response topic and waits for the answer."""

    def __init__(self, broker: Broker) -> None:
        self.answers: dict[bytes, dict[str, Any]] = {}
        self.online = False
        self.cond = threading.Condition()
        self.status_topic = f"nalox/v1/{UNIT}/status"
        self.reply_topic = f"nalox/v1/{UNIT}/cmd_response/test-{uuid.uuid4().hex[:8]}"
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"central-{uuid.uuid4().hex[:8]}",
                                  protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        for sub in (self.reply_topic, self.status_topic):
            assert self.client.subscribe(sub, qos=1)[0] == paho.MQTT_ERR_SUCCESS

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self.cond:
            if msg.topic == self.status_topic:
                self.online = json.loads(msg.payload)["state"] == "online"
            else:
                self.answers[bytes(getattr(msg.properties, "CorrelationData", b""))] = json.loads(msg.payload)
            self.cond.notify_all()

    def wait_online(self, timeout: float = 30.0) -> None:
        """The unit says online only after its command subscription is granted."""
        with self.cond:
            assert self.cond.wait_for(lambda: self.online, timeout), f"{UNIT} not online within {timeout} s"

    def command(self, name: str, timeout: float = 90.0, **fields: Any) -> dict[str, Any]:
        """Sends the command, and the very same command again every 10 s until answered (the unit
        acts once per command_id and answers a repeat with the stored answer)."""
        self.wait_online()
        corr = uuid.uuid4().bytes
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = self.reply_topic
        props.CorrelationData = corr
        props.MessageExpiryInterval = 120
        body = json.dumps({"command_id": f"t-{uuid.uuid4().hex[:12]}",
                           "issued_at": datetime.now(UTC).isoformat(), **fields})
        deadline = time.monotonic() + timeout
        with self.cond:
            while corr not in self.answers:
                left = deadline - time.monotonic()
                assert left > 0, f"no answer to cmd/{name} within {timeout} s"
                self.client.publish(f"nalox/v1/{UNIT}/cmd/{name}", body, qos=1, properties=props)
                self.cond.wait_for(lambda: corr in self.answers, min(10.0, left))
            return self.answers[corr]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def central(broker: Broker) -> Iterator[Commander]:
    c = Commander(broker)
    yield c
    c.close()


def test_cmd_restock_blind_count_over_mqtt(unit: UnitProcess, central: Commander) -> None:
    refused = central.command("restock", column=1, count=30, counted_before=9)
    assert refused["status"] == "error" and "differs" in refused["reason"] and "reason" in refused["reason"]
    assert unit.restock_events() == []
    same = central.command("restock", column=2, count=30, counted_before=10, lot="LOT-R", expiry="2029-02-28")
    assert same["status"] == "ok" and same["result"]["discrepancy"] == 0
    explained = central.command("restock", column=1, count=30, counted_before=9, reason="miscount last visit")
    assert explained["status"] == "ok" and explained["result"]["discrepancy"] == -1
    events = {e.column: e for e in unit.restock_events()}
    assert events[1].source == "remote" and (events[1].counted_before, events[1].expected_before) == (9, 10)
    assert events[2].lot == "LOT-R" and events[2].discrepancy == 0


def test_cmd_diag_returns_the_same_report(unit: UnitProcess, central: Commander) -> None:
    answer = central.command("diag")
    assert answer["status"] == "ok", answer
    remote = answer["result"]
    local = json.loads(run_diag("--config", str(unit.config_path), "report", "--json").stdout)
    assert remote["unit"] == local["unit"] == UNIT and remote["via"] == local["via"] == "daemon"
    assert [c["name"] for c in remote["checks"]] == [c["name"] for c in local["checks"]]
    failing = [c for c in remote["checks"] + local["checks"] if c["status"] == "fail"]
    assert remote["exit_code"] == local["exit_code"] == 0, failing


def test_cancelled_blind_count_records_nothing(tmp_path: Path, clips: dict[str, Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, config_data(tmp_path, clips))

    def hang_up(prompt: str) -> str:
        raise EOFError

    args = parser().parse_args(["--config", str(path), "restock", "--column", "1", "--count", "5"])
    assert run_restock(args, load_config(path), ask=hang_up, interactive=True) == 2
    assert "cancelled, nothing recorded" in capsys.readouterr().err
