"""The training-video gate through a real mpv (--vo=null --ao=null) playing a clip made here with ffmpeg."""

from __future__ import annotations

import os
import queue
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.cli import make_clip
from controller.clock import RealClock
from controller.config import VideoSection
from controller.daemon import UnitDaemon
from controller.fakes import FakeBoard
from controller.vend.video import (
    MpvPlayer,
    PlayerEvent,
    VideoCompleted,
    VideoFailed,
    VideoProgress,
    VideoStarted,
)
from tests.controller.conftest import make_config

CLIP_S = 2.0


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clips") / "en.mp4", CLIP_S)


def settings(clip: Path, **kw: object) -> VideoSection:
    base: dict[str, object] = {
        "files": {"en": clip, "es": clip},
        "headless": True,
        "mpv_args": ["--no-config"],
        "stall_timeout_s": 4.0,
    }
    base.update(kw)
    return VideoSection.model_validate(base)


@pytest.fixture
def player(clip: Path) -> Iterator[tuple[MpvPlayer, queue.Queue[PlayerEvent]]]:
    events: queue.Queue[PlayerEvent] = queue.Queue()
    p = MpvPlayer(settings(clip))
    p.start(events.put)
    yield p, events
    p.close()
    assert p.pid is None


def outcome(events: queue.Queue[PlayerEvent], timeout: float) -> PlayerEvent:
    deadline = time.monotonic() + timeout
    while True:
        ev = events.get(timeout=max(0.01, deadline - time.monotonic()))
        if not isinstance(ev, VideoProgress | VideoStarted):
            return ev


def test_gate_opens_only_after_eof(player: tuple[MpvPlayer, queue.Queue[PlayerEvent]], clip: Path) -> None:
    p, events = player
    started = time.monotonic()
    p.play(clip, token=7)
    ev = outcome(events, 15)
    elapsed = time.monotonic() - started
    assert isinstance(ev, VideoCompleted) and ev.token == 7
    assert elapsed >= CLIP_S - 0.3, f"completed after {elapsed:.2f}s, before the {CLIP_S}s clip could end"
    assert ev.duration_s == pytest.approx(CLIP_S, abs=0.2)
    assert ev.position_s is not None and ev.position_s >= CLIP_S - 1.0


def test_missing_file_fails_at_once(
    player: tuple[MpvPlayer, queue.Queue[PlayerEvent]], tmp_path: Path
) -> None:
    p, events = player
    p.play(tmp_path / "gone.mp4", token=1)
    ev = outcome(events, 1)
    assert isinstance(ev, VideoFailed) and ev.reason == "missing_file" and "gone.mp4" in (ev.detail or "")


def test_crash_during_playback_then_relaunch(
    player: tuple[MpvPlayer, queue.Queue[PlayerEvent]], clip: Path
) -> None:
    p, events = player
    p.play(clip, token=1)
    first = events.get(timeout=10)  # first frame up or duration known: mpv is playing
    assert isinstance(first, VideoProgress | VideoStarted)
    assert p.pid is not None
    os.kill(p.pid, signal.SIGKILL)
    ev = outcome(events, 10)
    assert isinstance(ev, VideoFailed) and ev.reason == "crash" and ev.token == 1
    p.play(clip, token=2)
    ev = outcome(events, 15)
    assert isinstance(ev, VideoCompleted) and ev.token == 2


def test_hang_is_detected(player: tuple[MpvPlayer, queue.Queue[PlayerEvent]], clip: Path) -> None:
    p, events = player
    p.play(clip, token=3)
    assert isinstance(events.get(timeout=10), VideoProgress | VideoStarted)
    assert p.pid is not None
    os.kill(p.pid, signal.SIGSTOP)
    ev = outcome(events, 10)
    assert isinstance(ev, VideoFailed) and ev.reason == "hang"


def test_missing_mpv_binary_is_unavailable(clip: Path) -> None:
    events: queue.Queue[PlayerEvent] = queue.Queue()
    p = MpvPlayer(settings(clip, mpv="/nonexistent/mpv"))
    p.start(events.put)
    try:
        p.play(clip, token=5)
        ev = outcome(events, 1)
        assert isinstance(ev, VideoFailed) and ev.reason == "unavailable"
    finally:
        p.close()


def wait_for(predicate: object, timeout: float) -> bool:
    import threading

    done = threading.Event()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        done.wait(0.05)
    return False


def test_daemon_with_real_mpv_dispenses_after_the_clip(tmp_path: Path, clip: Path) -> None:
    config = make_config(
        tmp_path,
        videos={
            "files": {"en": str(clip), "es": str(tmp_path / "missing.mp4")},
            "headless": True,
            "mpv_args": ["--no-config"],
        },
    )
    board = FakeBoard(columns=6, stock=20)
    daemon = UnitDaemon(config, board, MpvPlayer(config.videos), RealClock())
    daemon.start()
    try:
        pressed = time.monotonic()
        board.press("en")
        assert wait_for(lambda: board.stats()["dropped"] == 1, 20)
        assert time.monotonic() - pressed >= CLIP_S - 0.3
        assert getattr(daemon.ledger.events(event_type="dispense")[0], "via", None) == "video"
        assert wait_for(lambda: daemon.flow.phase.value == "idle", 5)
        daemon.flow.kits = None  # the next person
        board.press("es")  # its clip is missing: the configured fallback dispenses, with an alarm
        assert wait_for(lambda: board.stats()["dropped"] == 2, 10)
        assert [getattr(e, "via", None) for e in daemon.ledger.events(event_type="dispense")] == [
            "video",
            "fallback",
        ]
        assert daemon.ledger.alarm_active("video_player")
    finally:
        daemon.stop()
