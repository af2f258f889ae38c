"""The unit daemon's local control socket: `nalox diag` asks the running daemon (which owns the serial
port) instead of opening the port itself, so the two never fight over it.

A unix stream socket, mode 0660 in the daemon's runtime directory (/run/nalox/control.sock under
systemd); only root and the daemon's own user are served (checked with SO_PEERCRED as well).
Protocol: JSON lines. Each request is one JSON object on one line, answered by one JSON object on
one line; a connection may carry several requests. Every answer has "ok": true|false; a refused
request has "error" (what was expected, what came) and, where useful, a machine-readable "code".

    {"op": "hello"}                                 -> {"ok": true, "unit": "...", "pid": N}
    {"op": "diag", "check": "report", "args": {}}   -> {"ok": true, "report": {...}}
    {"op": "restock", "column": 3, "count": 30, "counted_before": 4, ...} -> {"ok": true, "event": {...}}

`serve(daemon, path)` starts the server thread and returns a handle whose close() stops it and
removes the socket. `request(path, payload)` is the client side.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import stat
import struct
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

import structlog

from controller.errors import ControllerError

log = structlog.get_logger("controller.control_socket")

SOCKET_MODE = 0o660
MAX_REQUEST_BYTES = 64 * 1024
CLIENT_TIMEOUT_S = 300.0
POLL_S = 5.0  # the longest close() could wait for the server thread were its wake-up connection lost
D = TypeVar("D")  # whatever the handler answers for (the unit daemon; a name in tests)
Handler = Callable[[D, dict[str, Any]], dict[str, object]]  # a request (JSON from the wire) -> its answer


class ControlError(ControllerError):
    """The control socket could not be used; the message says what was expected and what came."""


class DaemonNotRunning(ControlError):
    """Nobody serves the control socket (no file, or a stale one): the daemon is stopped."""


class ControlServer(Generic[D]):
    """Serves requests on a unix socket in a background thread until close()."""

    def __init__(self, daemon: D, path: Path, handler: Handler[D]) -> None:
        self.daemon = daemon
        self.path = path
        self.handler = handler
        self._server = _Server(str(path), self)
        os.chmod(path, SOCKET_MODE)
        # the server sleeps until a connection comes (close() makes one): an idle unit is not woken to
        # look at its shutdown flag five times a second; POLL_S is only the safety net
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": POLL_S},
                                        name=f"control {path}", daemon=True)
        self._thread.start()
        log.info("control_socket_listening", path=str(path))

    def close(self) -> None:
        stopper = threading.Thread(target=self._server.shutdown, name=f"control-close {self.path}")
        stopper.start()
        while stopper.is_alive():  # wake the server's select() until it has seen the shutdown flag
            _poke(self.path)
            stopper.join(0.05)
        self._server.close_connections()
        self._server.server_close()
        self._thread.join(timeout=5)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        log.info("control_socket_closed", path=str(self.path))

    def answer(self, line: bytes, peer_uid: int) -> dict[str, object]:
        if peer_uid not in (0, os.geteuid()):
            return refusal(f"a client running as root or uid {os.geteuid()}", f"uid {peer_uid}", "forbidden")
        try:
            req = json.loads(line)
        except ValueError as exc:
            return refusal("one JSON object per line", f"invalid JSON ({exc})", "bad_request")
        if not isinstance(req, dict) or not isinstance(req.get("op"), str):
            return refusal('a JSON object with an "op" string', repr(req)[:200], "bad_request")
        try:
            return self.handler(self.daemon, req)
        except Exception as exc:  # never let one bad request take the daemon's socket down
            log.exception("control_request_failed", op=req.get("op"))
            return refusal(f"op {req.get('op')!r} to complete", f"{type(exc).__name__}: {exc}", "internal")


def refusal(expected: str, found: str, code: str) -> dict[str, object]:
    return {"ok": False, "error": f"expected {expected}, got {found}", "code": code}


class _Connection(socketserver.StreamRequestHandler):
    server: _Server[object]

    def handle(self) -> None:
        peer_uid = _peer_uid(self.connection)
        self.server.track(self.connection, True)
        try:
            while line := self.rfile.readline(MAX_REQUEST_BYTES + 1):
                if len(line) > MAX_REQUEST_BYTES:
                    self._send(refusal(f"a request under {MAX_REQUEST_BYTES} bytes", "more", "bad_request"))
                    return
                if line.strip():
                    self._send(self.server.control.answer(line, peer_uid))
        except OSError:
            return  # the client went away, or close() shut the connection
        finally:
            self.server.track(self.connection, False)

    def _send(self, answer: dict[str, object]) -> None:
        self.wfile.write(json.dumps(answer, default=str).encode() + b"\n")
        self.wfile.flush()


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer, Generic[D]):
    daemon_threads = True
    block_on_close = True

    def __init__(self, path: str, control: ControlServer[D]) -> None:
        self.control = control
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        super().__init__(path, _Connection)

    def track(self, conn: socket.socket, is_open: bool) -> None:
        with self._lock:
            (self._open.add if is_open else self._open.discard)(conn)

    def close_connections(self) -> None:
        with self._lock:
            conns = list(self._open)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _poke(path: Path) -> None:
    """Connect and hang up at once: the server's select() returns (the handler sees an empty request)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(str(path))
        except OSError:
            pass  # already closed: nothing to wake


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


def serve(daemon: D, path: str | Path, handler: Handler[D]) -> ControlServer[D]:
    """Start serving the control socket at `path`: `handler(daemon, request)` answers each request (the
    daemon's is controller.diag.run.handle_request). Refuses when another live daemon already serves
    it; removes a stale socket file left by a crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_stale(path)
    return ControlServer(daemon, path, handler)


def _clear_stale(path: Path) -> None:
    if not path.exists() and not path.is_symlink():
        return
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise ControlError(f"control socket {path}: expected a socket or nothing, found another kind of file")
    if is_served(path):
        raise ControlError(f"control socket {path}: expected no other daemon, found one answering")
    path.unlink()


def is_served(path: str | Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2.0)
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def request(path: str | Path, payload: Mapping[str, object], timeout: float = CLIENT_TIMEOUT_S
            ) -> dict[str, Any]:
    """Send one request to the daemon and return its answer. DaemonNotRunning when nobody serves
    the socket; ControlError for anything else (permission, a broken answer, a timeout)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonNotRunning(f"no unit daemon serves {path} ({exc.strerror})") from None
        except PermissionError:
            raise ControlError(f"control socket {path}: permission denied; run as root or the nalox user "
                               "(sudo nalox diag ...)") from None
        try:
            s.sendall(json.dumps(payload).encode() + b"\n")
            line = s.makefile("rb").readline(16 * 1024 * 1024)
        except TimeoutError:
            raise ControlError(f"control socket {path}: no answer within {timeout:g} s") from None
        except OSError as exc:
            raise ControlError(f"control socket {path}: {exc}") from None
    if not line:
        raise ControlError(f"control socket {path}: expected one JSON line, the daemon closed the connection")
    try:
        answer = json.loads(line)
    except ValueError:
        raise ControlError(f"control socket {path}: expected JSON, got {line[:200]!r}") from None
    if not isinstance(answer, dict):
        raise ControlError(f"control socket {path}: expected a JSON object, got {answer!r}")
    return answer
