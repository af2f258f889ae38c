"""Protocol negotiation against the real protocol 1 code: the controller and firmware of the last
release before protocol 2 (git commit V1_COMMIT), each facing today's other side over a real pty."""

from __future__ import annotations

import io
import json
import os
import queue
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.serial.board_api import ButtonPressed
from controller.serial.board_link import ProtocolMismatch, SerialBoard
from firmware_py.nvs import MemoryStore
from simulator.board import SimulatedBoard
from simulator.pty import PtyPort
from simulator.slots import install

ROOT = Path(__file__).resolve().parents[3]
V1_COMMIT = "6d6f7c2"  # main before protocol 2: firmware and controller speak protocol 1 only
V1_CONTROLLER = """
import json, sys
import controller.link
from controller.link import SerialBoard
with SerialBoard(sys.argv[1]) as board:
    info = board.start()
    outcomes = [board.dispense(cid, 1 + cid % 4).outcome for cid in range(1, 11)]
    status = board.status()
    print("RESULT " + json.dumps({"protocol": info.protocol, "firmware": info.firmware, "outcomes": outcomes,
                      "door_open": status.door_open, "module": controller.link.__file__}))
"""


@pytest.fixture(scope="module")
def v1_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("protocol_v1")
    proc = subprocess.run(["git", "-C", str(ROOT), "archive", V1_COMMIT, "firmware_py", "controller"],
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, f"expected git history holding {V1_COMMIT}: {proc.stderr.decode()}"
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        tar.extractall(out, filter="data")
    assert b"PROTOCOL_VERSION = 1" in (out / "firmware_py" / "codec.py").read_bytes()
    return out


@pytest.fixture
def sim_on_pty(tmp_path: Path) -> Iterator[tuple[Path, PtyPort]]:
    path = tmp_path / "dispenser"
    with PtyPort(str(path)) as port:
        yield path, port


def test_v2_controller_with_v1_board(v1_tree: Path, sim_on_pty: tuple[Path, PtyPort]) -> None:
    path, port = sim_on_pty
    store = MemoryStore()
    files = {f"firmware_py/{p.name}": p.read_bytes() for p in (v1_tree / "firmware_py").glob("*.py")}
    install(store, 1, files, "0.1.0", "nalox-sim")
    board = SimulatedBoard(columns=4, stock=10, spin_ms=5, nvs=store)
    board.attach(port)
    with board, SerialBoard(str(path)) as link:
        assert board.fw is not None and board.fw.__class__.__module__ == "firmware_py.board"
        assert not hasattr(board.fw, "light"), "the board runs the v1 firmware from its slot"
        pressed: queue.Queue[ButtonPressed] = queue.Queue()
        info = link.start(on_event=lambda e: pressed.put(e) if isinstance(e, ButtonPressed) else None)
        assert (info.protocol, info.firmware, info.model) == (1, "0.1.0", "")
        assert all(link.dispense(cid, 1 + cid % 4).dropped for cid in range(1, 11))
        board.press("es")
        assert pressed.get(timeout=5) == ButtonPressed("es", index=1)
        with pytest.raises(ProtocolMismatch, match="status light needs protocol 2; .* speaks 1"):
            link.light("lit")
        assert link.status().door_open is False
    assert board.stats()["per_command"] == {str(cid): 1 for cid in range(1, 11)}


def test_v1_controller_with_v2_board(v1_tree: Path, sim_on_pty: tuple[Path, PtyPort]) -> None:
    path, port = sim_on_pty
    board = SimulatedBoard(columns=4, stock=10, spin_ms=5)
    board.attach(port)
    with board:
        env = dict(os.environ, PYTHONPATH=str(v1_tree))
        proc = subprocess.run([sys.executable, "-c", V1_CONTROLLER, str(path)], cwd=v1_tree, env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr[-3000:]
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        assert lines, proc.stdout[-3000:]
        report = json.loads(lines[-1][len("RESULT "):])
        assert report["module"].startswith(str(v1_tree)), "the old controller really ran"
        assert (report["protocol"], report["door_open"]) == (1, False)
        assert report["outcomes"] == ["dropped"] * 10
        assert board.fw is not None and board.fw.link.version == 1
    assert board.stats()["per_command"] == {str(cid): 1 for cid in range(1, 11)}
