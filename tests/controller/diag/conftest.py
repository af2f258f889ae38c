"""Fixtures for the diagnostics tests: the real firmware on a simulated board behind the real serial link
(in memory, or a pty from `nalox sim board`), a unit config with real clips, a running unit daemon."""

from __future__ import annotations

import copy
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.cli import make_clip
from controller.clock import RealClock
from controller.config import UnitConfig, parse_config
from controller.diag.board_checks import DiagContext
from controller.serial.board_link import SerialBoard
from simulator.board import SimulatedBoard
from simulator.memlink import serial_pair
from tests.conftest import NALOX, ROOT, stop_group

HEALTHY_C = 21.0  # the simulator starts at 4 °C, below the unit's excursion range


class SimRig:
    """SimulatedBoard <-memlink-> SerialBoard, wrapped in a DiagContext like `nalox diag --port` builds."""

    def __init__(self, config: UnitConfig | None = None, columns: int = 3) -> None:
        self.sim = SimulatedBoard(columns=columns, stock=10, spin_ms=60, seed=7)
        self.sim.set_temperature(HEALTHY_C)
        controller_end, board_end = serial_pair()
        self.sim.attach(board_end)
        self.sim.start()
        self.board = SerialBoard.from_port(controller_end, reply_timeout=5.0)
        self.ctx = DiagContext(board=None, config=config)
        self.ctx.info = self.board.start(self.ctx.on_event)
        self.ctx.board = self.board

    def set_door(self, is_open: bool) -> None:
        """Open or close the door and wait until the firmware has seen it (it polls the switch)."""
        self.sim.set_door(is_open)
        deadline = time.monotonic() + 5
        while self.board.status().door_open != is_open:
            assert time.monotonic() < deadline, f"the board did not see door open={is_open} within 5 s"

    def close(self) -> None:
        self.board.close()
        self.sim.stop()


@pytest.fixture
def rig() -> Iterator[SimRig]:
    r = SimRig()
    yield r
    r.close()


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("clips")
    for lang in ("en", "es"):
        make_clip(out / f"{lang}.mp4", 2.0)
    return {"en": out / "en.mp4", "es": out / "es.mp4"}


def config_data(tmp_path: Path, clips: dict[str, Path], columns: int = 3) -> dict[str, Any]:
    return {
        "unit": {"id": "diag-unit-1", "site": "Test site"},
        "serial": {"port": str(tmp_path / "dispenser"), "reply_timeout_s": 5.0},
        "products": {"nasal-4mg": {"name": "Naloxone nasal spray 4 mg", "doses": 2}},
        "columns": [{"column": c, "product": "nasal-4mg", "capacity": 30, "par": 2, "initial_stock": 10,
                     "lot": f"LOT-{c}", "expiry": "2028-06-30"} for c in range(1, columns + 1)],
        "videos": {"files": {k: str(v) for k, v in clips.items()}, "headless": True},
        "paths": {"data_dir": str(tmp_path / "data"),
                  "control_socket": str(tmp_path / "run" / "control.sock")},
    }


def make_config(tmp_path: Path, clips: dict[str, Path], **sections: Any) -> UnitConfig:
    data = copy.deepcopy(config_data(tmp_path, clips))
    data.update(sections)
    return parse_config(data, source="test", base_dir=tmp_path)


def write_config(tmp_path: Path, data: dict[str, Any]) -> Path:
    """A unit.toml on disk (for the CLI), written without a TOML library: only the shapes we use."""
    lines: list[str] = []
    for key, value in data.items():
        if isinstance(value, dict) and key != "products":
            lines += _table(key, value)
        elif key == "products":
            for name, product in value.items():
                lines += _table(f"products.{name}", product)
        elif isinstance(value, list):
            for item in value:
                lines += [f"[[{key}]]"] + [f"{k} = {_toml(v)}" for k, v in item.items()] + [""]
    path = tmp_path / "unit.toml"
    path.write_text("\n".join(lines))
    return path


def _table(name: str, values: dict[str, Any]) -> list[str]:
    simple = {k: v for k, v in values.items() if not isinstance(v, dict)}
    out = [f"[{name}]"] + [f"{k} = {_toml(v)}" for k, v in simple.items()] + [""]
    for k, v in values.items():
        if isinstance(v, dict):
            out += _table(f"{name}.{k}", v)
    return out


def _toml(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_toml(item) for item in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str) and len(v) == 10 and v[4] == "-" and v[7] == "-" and v[:4].isdigit():
        return v  # a TOML date
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


class SimProcess:
    """`nalox sim board --link PATH` as a separate process, as a technician's tools meet it."""

    def __init__(self, link: Path, *extra: str) -> None:
        self.link = link
        self.log = open(link.parent / "sim.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen([*NALOX, "sim", "board", "--link", str(link), "--columns", "3",
                                      "--spin-ms", "60", *extra], stdout=self.log, stderr=self.log,
                                     cwd=ROOT, start_new_session=True)
        deadline = time.monotonic() + 20
        while not (link.exists() and Path(f"{link}.ctl").exists()):
            assert self.proc.poll() is None, f"sim board exited: {(link.parent / 'sim.log').read_text()}"
            assert time.monotonic() < deadline, "nalox sim board made no link within 20 s"
            time.sleep(0.05)  # polling for the link to appear, with a deadline
        self.ctl("temp", str(HEALTHY_C))

    def ctl(self, *args: str) -> str:
        out = subprocess.run([*NALOX, "sim", "ctl", "--link", str(self.link), *args], capture_output=True,
                             text=True, timeout=30, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def close(self) -> None:
        stop_group(self.proc, 10)
        self.log.close()


@pytest.fixture
def sim_process(tmp_path: Path) -> Iterator[SimProcess]:
    p = SimProcess(tmp_path / "dispenser")
    yield p
    p.close()


def run_diag(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`nalox diag ARGS` in its own process (stdout is a pipe, so plain text unless --json)."""
    return subprocess.run([*NALOX, "diag", *args], capture_output=True, text=True, timeout=timeout,
                          input=stdin, cwd=ROOT)


__all__ = ["RealClock", "SimRig", "SimProcess", "make_config", "config_data", "write_config", "run_diag"]
