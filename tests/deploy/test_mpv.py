"""The mpv kiosk settings load without errors in the real mpv, and keys do nothing:
a `q` or ESC keypress sent over IPC neither quits nor pauses the video."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.deploy import DEPLOY

Starter = Callable[[Path], "tuple[subprocess.Popen[bytes], Ipc]"]

MPV_DIR = DEPLOY / "mpv"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=duration=30:size=160x120:rate=10", str(path)], check=True, timeout=60)
    return path


def mpv_base(config_dir: Path) -> list[str]:
    return ["mpv", f"--config-dir={config_dir}", "--vo=null", "--ao=null", "--hwdec=no"]


def test_settings_load_without_errors(tmp_path: Path, clip: Path) -> None:
    out = subprocess.run(mpv_base(MPV_DIR) + ["--idle=no", "--length=0.5", str(clip)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    assert "Error parsing" not in text and "not found" not in text and "failed" not in text, text


def test_a_bad_setting_would_be_reported(tmp_path: Path, clip: Path) -> None:
    """The check above can fail: mpv names a bad option and an unknown input command."""
    for name in ("mpv.conf", "input.conf"):
        (tmp_path / name).write_text((MPV_DIR / name).read_text())
    with open(tmp_path / "mpv.conf", "a") as f:
        f.write("no-such-option=yes\n")
    with open(tmp_path / "input.conf", "a") as f:
        f.write("x no-such-command\n")
    out = subprocess.run(mpv_base(tmp_path) + ["--idle=no", "--length=0.5", str(clip)],
                         capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    assert "no-such-option" in text and "no-such-command" in text


class Ipc:
    def __init__(self, path: Path, deadline: float = 10.0) -> None:
        end = time.monotonic() + deadline
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > end:
                    raise
                time.sleep(0.05)  # polling for mpv to create its socket, not synchronisation of a result
        self.sock.settimeout(10)
        self.buf = b""
        self.next_id = 0

    def command(self, *args: object) -> dict[str, object]:
        self.next_id += 1
        self.sock.sendall(json.dumps({"command": list(args), "request_id": self.next_id}).encode() + b"\n")
        while True:
            while b"\n" not in self.buf:
                chunk = self.sock.recv(65536)
                assert chunk, "mpv closed its IPC socket"
                self.buf += chunk
            line, self.buf = self.buf.split(b"\n", 1)
            msg = json.loads(line)
            if msg.get("request_id") == self.next_id:
                return dict(msg)


@pytest.fixture
def start_mpv(tmp_path: Path, clip: Path) -> Iterator[Callable[[Path], tuple[subprocess.Popen[bytes], Ipc]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(config_dir: Path) -> tuple[subprocess.Popen[bytes], Ipc]:
        sock = tmp_path / f"mpv{len(procs)}.sock"
        proc = subprocess.Popen(mpv_base(config_dir) + [f"--input-ipc-server={sock}", str(clip)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        return proc, Ipc(sock)

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(10)


def test_keys_neither_quit_nor_pause(start_mpv: Starter) -> None:
    proc, ipc = start_mpv(MPV_DIR)
    assert ipc.command("get_property", "input-default-bindings")["data"] is False
    for key in ("q", "ESC", "SPACE", "p", "RIGHT", "MBTN_LEFT_DBL", "CLOSE_WIN"):
        assert ipc.command("keypress", key)["error"] == "success"
    # the IPC round trip after the keys proves mpv handled them and is still running, unpaused
    assert ipc.command("get_property", "pause")["data"] is False
    assert ipc.command("get_property", "osc")["data"] is False
    assert proc.poll() is None


def test_without_the_kiosk_settings_q_quits(tmp_path: Path, start_mpv: Starter) -> None:
    """The check above can fail: mpv's default bindings make `q` quit."""
    empty = tmp_path / "empty-config"
    empty.mkdir()
    proc, ipc = start_mpv(empty)
    ipc.command("keypress", "q")
    assert proc.wait(10) == 0
