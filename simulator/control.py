"""Control socket of a simulated board: a unix socket speaking JSON lines, and its client.

Request:  {"cmd": "press", "lang": "en"} | {"cmd": "door", "open": true} | {"cmd": "temp", "c": 4.5}
          | {"cmd": "fault", "name": "jam", "p": 0.1, "column": 2} | {"cmd": "stock", "column": 1, "n": 20}
          | {"cmd": "reboot"} | {"cmd": "stats"}
Reply:    {"ok": true, ...} or {"ok": false, "error": "..."}; "stats" replies {"ok": true, "stats": {...}}.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import threading
from typing import Any

import structlog

from simulator.board import SimulatedBoard, SimulatorError

log = structlog.get_logger("simulator.control")


def dispatch(board: SimulatedBoard, request: dict[str, Any]) -> dict[str, Any]:
    """Apply one control request to the board; errors become {"ok": false, "error": ...}."""
    cmd = request.get("cmd")
    try:
        if cmd == "stats":
            return {"ok": True, "stats": board.stats()}
        action = _ACTIONS.get(str(cmd))
        if action is None:
            return {"ok": False, "error": f"cmd: expected one of {sorted([*_ACTIONS, 'stats'])}, got {cmd!r}"}
        action(board, request)
        return {"ok": True}
    except SimulatorError as exc:
        return {"ok": False, "error": str(exc)}
    except (KeyError, TypeError, ValueError) as exc:
        return {"ok": False, "error": f"{cmd}: expected fields {_FIELDS.get(str(cmd))}, got {exc!r}"}


_FIELDS = {
    "press": "lang (en|es), hold_ms (number or null)", "door": "open (bool)", "temp": "c (number)",
    "fault": "name, p (number), column (int or null)", "stock": "column (int), n (int)", "reboot": "none",
}

def _hold(request: dict[str, Any]) -> float | None:
    hold = request.get("hold_ms")
    return None if hold is None else float(hold)


_ACTIONS = {
    "press": lambda b, r: b.press(r.get("lang", "en"), _hold(r)),
    "door": lambda b, r: b.set_door(bool(r["open"])),
    "temp": lambda b, r: b.set_temperature(float(r["c"])),
    "fault": lambda b, r: b.set_fault(str(r["name"]), float(r["p"]), r.get("column")),
    "stock": lambda b, r: b.set_stock(int(r["column"]), int(r["n"])),
    "reboot": lambda b, r: b.reboot(),
}


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        board: SimulatedBoard = self.server.board  # type: ignore[attr-defined]
        for line in self.rfile:
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError(f"expected a JSON object, got {type(request).__name__}")
            except ValueError as exc:
                reply: dict[str, Any] = {"ok": False, "error": f"request: {exc}"}
            else:
                reply = dispatch(board, request)
                log.info("control", cmd=request.get("cmd"), ok=reply["ok"], error=reply.get("error"))
            self.wfile.write(json.dumps(reply).encode() + b"\n")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class ControlServer:
    """Serve `board` on the unix socket `path` from a background thread until close()."""

    def __init__(self, board: SimulatedBoard, path: str) -> None:
        ensure_free(path)
        if os.path.lexists(path):
            os.unlink(path)
        self.path = path
        self.server = _Server(path, _Handler)
        self.server.board = board  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.1,), name="simctl",
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def ensure_free(path: str) -> None:
    """Refuse a control socket path another live simulator serves (a stale one may be replaced)."""
    if os.path.lexists(path) and _answers(path):
        raise SimulatorError(f"control socket {path}: expected none, another simulator is serving it")


def _answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


def request(path: str, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to the control socket at `path` and return the reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps(message).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data:
        raise SimulatorError(f"control socket {path}: expected a reply line, got nothing")
    reply: dict[str, Any] = json.loads(data)
    return reply
