"""The daemon's control socket: JSON lines over a real unix socket, mode 0660, root and the daemon's
user only, stale sockets cleared, a second daemon refused, nothing left running after close()."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller import control_socket


def echo_handler(daemon: Any, req: dict[str, Any]) -> dict[str, Any]:
    if req["op"] == "boom":
        raise RuntimeError("handler bug")
    return {"ok": True, "daemon": daemon, "echo": req}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[control_socket.ControlServer]:
    srv = control_socket.serve("unit-A", tmp_path / "run" / "control.sock", handler=echo_handler)
    yield srv
    srv.close()


def test_request_and_answer(server: control_socket.ControlServer) -> None:
    answer = control_socket.request(server.path, {"op": "hello", "n": 1})
    assert answer == {"ok": True, "daemon": "unit-A", "echo": {"op": "hello", "n": 1}}


def test_socket_mode_is_0660(server: control_socket.ControlServer) -> None:
    st = server.path.stat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660


def raw_exchange(path: Path, lines: list[bytes]) -> list[dict[str, Any]]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(b"".join(lines))
        f = s.makefile("rb")
        return [json.loads(f.readline()) for _ in lines]


def test_bad_requests_get_clear_errors_and_the_server_lives_on(server: control_socket.ControlServer) -> None:
    answers = raw_exchange(server.path, [b"not json\n", b"[1, 2]\n", b'{"op": "boom"}\n', b'{"op": "x"}\n'])
    assert answers[0]["ok"] is False and answers[0]["code"] == "bad_request"
    assert "expected one JSON object per line" in answers[0]["error"]
    assert answers[1]["code"] == "bad_request" and 'an "op" string' in answers[1]["error"]
    assert answers[2]["code"] == "internal" and "RuntimeError: handler bug" in answers[2]["error"]
    assert answers[3] == {"ok": True, "daemon": "unit-A", "echo": {"op": "x"}}


def test_no_daemon_is_reported_as_not_running(tmp_path: Path) -> None:
    with pytest.raises(control_socket.DaemonNotRunning, match="no unit daemon serves"):
        control_socket.request(tmp_path / "nothing.sock", {"op": "hello"})


def test_stale_socket_from_a_crash_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: a crashed daemon's leftover
    with pytest.raises(control_socket.DaemonNotRunning):
        control_socket.request(path, {"op": "hello"})
    srv = control_socket.serve("unit-B", path, handler=echo_handler)
    try:
        assert control_socket.request(path, {"op": "hello"})["daemon"] == "unit-B"
    finally:
        srv.close()


def test_second_daemon_on_the_same_socket_is_refused(server: control_socket.ControlServer) -> None:
    with pytest.raises(control_socket.ControlError, match="expected no other daemon, found one answering"):
        control_socket.serve("unit-C", server.path, handler=echo_handler)
    assert control_socket.request(server.path, {"op": "hello"})["daemon"] == "unit-A"


def test_a_regular_file_in_the_way_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    path.write_text("not a socket")
    with pytest.raises(control_socket.ControlError, match="expected a socket or nothing"):
        control_socket.serve("unit-D", path, handler=echo_handler)


def test_close_removes_socket_ends_threads_and_open_connections(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    srv = control_socket.serve("unit-E", tmp_path / "control.sock", handler=echo_handler)
    idle = socket.socket(socket.AF_UNIX)
    idle.connect(str(srv.path))  # a client that never sends anything
    control_socket.request(srv.path, {"op": "hello"})
    srv.close()
    idle.settimeout(5)
    assert idle.recv(1) == b""  # the server hung up on it
    idle.close()
    assert not srv.path.exists()
    leftover = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    for t in leftover:
        t.join(timeout=5)
    assert [t.name for t in leftover if t.is_alive()] == []


NOBODY = 65534
CLIENT = """
import os, sys
from controller import control_socket
os.setgid(65534); os.setuid(65534)
try:
    print(control_socket.request(sys.argv[1], {"op": "hello"}))
except control_socket.ControlError as exc:
    print("ControlError:", exc)
"""


def as_nobody(path: Path) -> str:
    out = subprocess.run([sys.executable, "-c", CLIENT, str(path)], capture_output=True, text=True,
                         timeout=30, cwd=Path(__file__).resolve().parents[3])
    return out.stdout + out.stderr


def test_other_users_cannot_use_the_socket() -> None:
    assert os.geteuid() == 0, "this test runs a client as user nobody, so it needs root"
    where = Path(tempfile.mkdtemp(prefix="nalox-control-", dir="/tmp"))
    where.chmod(0o755)  # nobody may reach the socket file; only its own mode and SO_PEERCRED stop them
    srv = control_socket.serve("unit-F", where / "control.sock", handler=echo_handler)
    try:
        assert "permission denied" in as_nobody(srv.path)  # mode 0660 keeps them out
        srv.path.chmod(0o666)  # even if someone loosens the mode, SO_PEERCRED refuses them
        assert "'code': 'forbidden'" in as_nobody(srv.path)
        assert control_socket.request(srv.path, {"op": "hello"})["ok"] is True  # root still served
    finally:
        srv.close()
        shutil.rmtree(where)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[control_socket.ControlServer]:
    where = tmp_path_factory.mktemp("ctl")
    srv = control_socket.serve("unit-H", where / "control.sock", handler=echo_handler)
    yield srv
    srv.close()


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                max_size=3),
                    max_leaves=8)
OP = st.sampled_from(["hello", "boom", "diag", ""]) | st.text(max_size=10)
LINE = st.one_of(
    st.binary(max_size=200).filter(lambda b: b"\n" not in b),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"op": OP}, optional={"x": JSON}).map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(LINE, min_size=1, max_size=6))
def test_any_line_gets_one_json_answer(
    shared_server: control_socket.ControlServer, lines: list[bytes]
) -> None:
    """Whatever a client sends, each non-blank line gets exactly one JSON object back, in order, and the
    server keeps serving."""
    wanted = [line for line in lines if line.strip()]
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(shared_server.path))
        s.sendall(b"".join(line + b"\n" for line in lines) + b'{"op": "last"}\n')
        f = s.makefile("rb")
        answers = [json.loads(f.readline()) for _ in range(len(wanted) + 1)]
    assert answers[-1] == {"ok": True, "daemon": "unit-H", "echo": {"op": "last"}}
    for line, answer in zip(wanted, answers, strict=False):
        check_answer(line, answer)


def check_answer(line: bytes, answer: dict[str, Any]) -> None:
    try:
        req = json.loads(line)
    except ValueError:
        req = None
    if not isinstance(req, dict) or not isinstance(req.get("op"), str):
        assert answer["ok"] is False and answer["code"] == "bad_request", answer
        assert answer["error"].startswith("expected ") and ", got " in answer["error"]
    elif req["op"] == "boom":
        assert answer == {"ok": False, "code": "internal",
                          "error": "expected op 'boom' to complete, got RuntimeError: handler bug"}
    else:
        assert answer == {"ok": True, "daemon": "unit-H", "echo": req}
