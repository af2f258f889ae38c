"""The training-video gate's player: mpv as its own process, driven over its JSON IPC socket.

The daemon asks for a clip with play(path, token); the player reports exactly one outcome per token:
VideoCompleted only when mpv reports end-file reason `eof` after the clip played to its end, or
VideoFailed (missing_file, unavailable, crash, hang, error). Keys and mouse are off, so nobody can skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from controller import log
from controller.config import VideoSection
from controller.errors import ControllerError

LOG = log.get("video")


@dataclass(frozen=True)
class VideoAt:
    """Where clip `token` is: its position and length in seconds (None while mpv does not know)."""

    token: int
    position_s: float | None
    duration_s: float | None


class VideoProgress(VideoAt):
    """The clip is playing, at its position."""


@dataclass(frozen=True)
class VideoStarted:
    """The clip's first frame is on screen (mpv's playback-restart after the load)."""

    token: int


class VideoCompleted(VideoAt):
    """The clip played to its end (position and length as mpv last told them)."""


@dataclass(frozen=True)
class VideoFailed:
    token: int
    reason: str  # missing_file | unavailable | crash | hang | error
    position_s: float | None = None
    detail: str | None = None


PlayerEvent = VideoProgress | VideoStarted | VideoCompleted | VideoFailed
OnPlayerEvent = Callable[[PlayerEvent], None]


class VideoPlayer(Protocol):
    def start(self, on_event: OnPlayerEvent) -> None: ...
    def play(self, path: Path, token: int, subtitles: Path | None = None) -> None: ...  # -> on_event
    def stop_playback(self) -> None: ...
    def show_text(self, text: str, seconds: float = 10.0) -> None: ...
    def overlay(self, path: Path, width: int, height: int) -> None: ...  # a BGRA image over everything
    def clear_overlay(self) -> None: ...
    def close(self) -> None: ...


def mpv_command(settings: VideoSection, socket_path: Path) -> list[str]:
    args = [
        settings.mpv,
        "--fs",
        "--no-input-default-bindings",
        "--input-vo-keyboard=no",
        "--no-osc",
        "--idle=yes",
        f"--input-ipc-server={socket_path}",
        "--no-terminal",
    ]
    if settings.headless:
        args += ["--vo=null", "--ao=null", "--force-window=no"]
    else:  # the kiosk's screens are overlays on mpv's own window: keep it open while idle
        args += ["--force-window=yes", "--keep-open=no", "--osd-level=0"]
    # captions: large, white on a dark box, readable from 1.5 m
    args += ["--sub-font-size=52", "--sub-border-size=4", "--sub-color=1.0/1.0/1.0"]
    return args + list(settings.mpv_args)


class MpvPlayer:
    """One long-running mpv; relaunched on the next play after it crashed or hung."""

    def __init__(self, settings: VideoSection, runtime_dir: Path | None = None) -> None:
        self.settings = settings
        self._on_event: OnPlayerEvent = lambda e: None
        self._lock = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._dir = player_dir(runtime_dir)
        self._launches = 0
        self._token: int | None = None  # the clip playing now
        self._started: int | None = None  # the token whose first frame was reported
        self._pos: float | None = None
        self._max_pos = 0.0
        self._duration: float | None = None
        self._last_progress = 0.0
        self._closed = threading.Event()
        self._armed = threading.Event()  # a clip was handed to mpv (or close): the watchdog looks again
        self._requests = 0
        self._answers: dict[int, dict[str, Any]] = {}
        self._watchdog = threading.Thread(target=self._watch, name="mpv-watchdog", daemon=True)

    # ------------------------------------------------------------ public

    def start(self, on_event: OnPlayerEvent) -> None:
        self._on_event = on_event
        self._watchdog.start()
        try:
            self._ensure_running()
        except PlayerUnavailable as exc:
            LOG.warning("player_unavailable", detail=str(exc))

    def play(self, path: Path, token: int, subtitles: Path | None = None) -> None:
        if not Path(path).is_file():
            self._emit(VideoFailed(token, "missing_file", detail=f"expected a clip at {path}, found no file"))
            return
        try:
            self._ensure_running()
        except PlayerUnavailable as exc:
            self._emit(VideoFailed(token, "unavailable", detail=str(exc)))
            return
        with self._lock:
            self._token, self._pos, self._max_pos, self._duration = token, None, 0.0, None
            self._last_progress = time.monotonic()
        self._armed.set()
        options = []
        if subtitles is not None and subtitles.is_file() and "," not in str(subtitles):
            options.append(f"sub-file={subtitles}")
        else:
            options.append("sub-auto=no")  # no captions asked for: none of mpv's own guessing either
        self._send(["loadfile", str(path), "replace", ",".join(options)])
        LOG.info("video_play", token=token, clip=Path(path).name, captions=subtitles and subtitles.name)

    def stop_playback(self) -> None:
        with self._lock:
            self._token = None
        self._send(["stop"])

    def show_text(self, text: str, seconds: float = 10.0) -> None:
        self._send(["show-text", text, int(seconds * 1000), 0])  # level 0: shown even with osd-level=0

    def overlay(self, path: Path, width: int, height: int) -> None:
        """Show a raw BGRA image (mpv maps the file) over the video and the idle window, at 0,0."""
        try:
            self._ensure_running()
        except PlayerUnavailable as exc:
            LOG.warning("overlay_unavailable", detail=str(exc))
            return
        self._send(["overlay-add", 0, 0, 0, str(path), 0, "bgra", width, height, width * 4])

    def clear_overlay(self) -> None:
        self._send(["overlay-remove", 0])

    def get_property(self, name: str, timeout: float = 2.0) -> Any:
        """One property's value (tests and diagnostics), or None when mpv does not answer in time."""
        with self._lock:
            self._requests += 1
            rid = self._requests
            waiter: dict[str, Any] = {"event": threading.Event()}
            self._answers[rid] = waiter
        data = (json.dumps({"command": ["get_property", name], "request_id": rid}) + "\n").encode()
        with self._lock:
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.sendall(data)
        waiter["event"].wait(timeout)
        with self._lock:
            self._answers.pop(rid, None)
        return waiter.get("data")

    def close(self) -> None:
        self._closed.set()
        self._armed.set()
        self._kill()
        if self._watchdog.is_alive():
            self._watchdog.join(timeout=5)
        shutil.rmtree(self._dir, ignore_errors=True)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    # ------------------------------------------------------------ process

    def _ensure_running(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None and self._sock is not None:
                return
            self._kill()
            self._launch()

    def _launch(self) -> None:
        self._launches += 1
        sock_path = self._dir / f"ipc{self._launches}.sock"
        sock_path.unlink(missing_ok=True)  # a previous daemon's (the runtime folder is kept across restarts)
        try:
            self._proc = subprocess.Popen(
                mpv_command(self.settings, sock_path),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            raise PlayerUnavailable(f"expected to start {self.settings.mpv!r}, found {exc}") from None
        self._sock = self._connect(sock_path)
        reader = threading.Thread(
            target=self._read, args=(self._sock, self._proc), name="mpv-reader", daemon=True
        )
        reader.start()
        self._send(["observe_property", 1, "time-pos"])
        self._send(["observe_property", 2, "duration"])
        LOG.info("player_started", pid=self._proc.pid)

    def _connect(self, path: Path) -> socket.socket:
        deadline = time.monotonic() + self.settings.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                break
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(path))
                return sock
            except OSError:
                sock.close()
                self._closed.wait(0.02)  # mpv creates its socket shortly after starting
        self._kill()
        raise PlayerUnavailable(
            f"expected mpv's IPC socket within {self.settings.start_timeout_s}s, found none"
        )

    def _kill(self) -> None:
        with self._lock:
            sock, proc = self._sock, self._proc
            self._sock, self._proc = None, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait(timeout=10)

    def _send(self, command: list[object]) -> None:
        data = (json.dumps({"command": command}) + "\n").encode()
        with self._lock:
            if self._sock is None:
                return
            try:
                self._sock.sendall(data)
            except OSError as exc:
                LOG.warning("player_send_failed", error=str(exc))

    # ------------------------------------------------------------ reader and watchdog

    def _read(self, sock: socket.socket, proc: subprocess.Popen[bytes]) -> None:
        buf = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                self._handle_line(line)
        self._lost(proc)

    def _handle_line(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            return
        rid = msg.get("request_id")
        if isinstance(rid, int):
            with self._lock:
                waiter = self._answers.get(rid)
            if waiter is not None:
                waiter["data"] = msg.get("data")
                waiter["event"].set()
            return
        if msg.get("event") == "property-change":
            self._property(msg.get("name"), msg.get("data"))
        elif msg.get("event") == "playback-restart":
            with self._lock:
                token = self._token
                first = token is not None and self._started != token
                if first:
                    self._started = token
            if first and token is not None:
                self._emit(VideoStarted(token))
        elif msg.get("event") == "end-file":
            self._end_file(str(msg.get("reason")), msg.get("file_error"))

    def _property(self, name: Any, value: Any) -> None:
        with self._lock:
            token = self._token
            if token is None or not isinstance(value, int | float):
                return
            if name == "time-pos":
                if self._pos is None or value != self._pos:
                    self._last_progress = time.monotonic()
                self._pos, self._max_pos = float(value), max(self._max_pos, float(value))
                return
            if name != "duration" or self._duration == value:
                return
            self._duration = float(value)
        self._emit(VideoProgress(token, self._pos, self._duration))

    def _end_file(self, reason: str, file_error: Any) -> None:
        with self._lock:
            token, pos, dur, max_pos = self._token, self._pos, self._duration, self._max_pos
            if token is None or reason not in ("eof", "error"):
                return  # our own stop, or the end of a clip we no longer follow
            self._token = None
        if reason == "error":
            self._emit(VideoFailed(token, "error", pos, detail=f"mpv: {file_error}"))
        elif dur is not None and max_pos < dur - 1.0:
            self._emit(VideoFailed(token, "error", pos, detail=f"eof at {max_pos:.1f}s of {dur:.1f}s"))
        else:
            self._emit(VideoCompleted(token, max_pos if max_pos else pos, dur))

    def _lost(self, proc: subprocess.Popen[bytes]) -> None:
        """mpv's socket closed: it exited or was killed."""
        with self._lock:
            if self._proc is not proc and self._proc is not None:
                return
            token, pos = self._token, self._pos
            self._token = None
            # mpv's socket closes before its exit status is visible to poll(): forget the socket so
            # the next play() relaunches instead of writing into a dead pipe
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        if token is not None and not self._closed.is_set():
            self._emit(VideoFailed(token, "crash", pos, detail="mpv exited during playback"))

    def _watch(self) -> None:
        """Every 0.2 s while a clip plays: no progress for the stall timeout fails it. Between clips the
        thread sleeps until the next play() (an idle unit is not woken five times a second)."""
        while not self._closed.is_set():
            with self._lock:
                idle = self._token is None
            if idle:
                self._armed.wait()
                self._armed.clear()
                continue
            if self._closed.wait(0.2):
                return
            with self._lock:
                token, pos = self._token, self._pos
                # a clip still loading (no duration yet) gets three times as long: a busy board starts slowly
                limit = self.settings.stall_timeout_s * (1 if self._duration is not None else 3)
                stalled = token is not None and time.monotonic() - self._last_progress > limit
                if stalled:
                    self._token = None
            if stalled and token is not None:
                self._emit(
                    VideoFailed(
                        token, "hang", pos, detail=f"no progress for {self.settings.stall_timeout_s}s"
                    )
                )
                self._kill()

    def _emit(self, event: PlayerEvent) -> None:
        if not isinstance(event, VideoProgress):
            LOG.info("video_outcome", kind=type(event).__name__, **{k: v for k, v in event.__dict__.items()})
        try:
            self._on_event(event)
        except Exception:  # the daemon's callback must not kill the reader
            LOG.exception("player_callback_failed")


def player_dir(runtime_dir: Path | None, kind: str = "mpv") -> Path:
    """This process's own folder for mpv's socket (or the kiosk's screen files), under the daemon's
    runtime dir. Folders left by a killed daemon (kill -9 gives it no chance to clean up) are removed
    here, at the next start."""
    if runtime_dir is None:  # tests and tools without a unit config
        return Path(tempfile.mkdtemp(prefix=f"nalox-{kind}-"))
    runtime_dir.mkdir(parents=True, exist_ok=True)
    for old in runtime_dir.glob(f"{kind}-*"):
        pid = old.name.removeprefix(f"{kind}-")
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        shutil.rmtree(old, ignore_errors=True)
        LOG.info("player_leftovers_removed", path=str(old))
    mine = runtime_dir / f"{kind}-{os.getpid()}"
    mine.mkdir(mode=0o700, exist_ok=True)
    return mine


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _die_with_parent() -> None:
    """In the child before exec: Linux kills mpv when the daemon dies (kill -9 leaves no orphan player)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass


class PlayerUnavailable(ControllerError):
    """mpv could not be started or did not open its IPC socket."""
