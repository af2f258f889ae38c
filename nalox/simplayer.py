"""A simulated video player for fleets of simulated units: plays a clip of a known length on a timer,
as mpv would report it (started, progress, completed at the end), without a process per unit.

One mpv is about 70 MB and a process; a thousand simulated units cannot each have one. The unit daemon
sees the same VideoPlayer interface (controller/vend/video.py) and the same events in the same order
as from mpv: VideoProgress with the duration, VideoStarted (first frame), VideoCompleted at the end.
Every player of a process shares one timer thread (Timeline), so a fleet costs no thread per unit.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from controller.vend.video import OnPlayerEvent, VideoCompleted, VideoProgress, VideoStarted

log = structlog.get_logger("nalox.simplayer")


class Timeline:
    """One thread that runs callbacks at monotonic times (a heap); shared by every SimPlayer of a fleet."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.late_s = 0.0  # the latest a callback ran after its time (how far this process fell behind)

    def start(self) -> Timeline:
        self._thread = threading.Thread(target=self._run, name="sim-timeline", daemon=True)
        self._thread.start()
        return self

    def at(self, when: float, fn: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._order), fn))
            if self._heap[0][2] is fn:
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._closed:
                    return
                when, _, fn = heapq.heappop(self._heap)
            self.late_s = max(self.late_s, time.monotonic() - when)
            try:
                fn()
            except Exception:
                log.exception("timeline_callback_failed")


class SimPlayer:
    """The VideoPlayer of a simulated unit: each clip plays for `duration_s` on the shared Timeline."""

    def __init__(self, timeline: Timeline, duration_s: float) -> None:
        self.timeline = timeline
        self.duration_s = duration_s
        self._on_event: OnPlayerEvent = lambda e: None
        self._token: int | None = None
        self._lock = threading.Lock()
        self.plays = 0

    def start(self, on_event: OnPlayerEvent) -> None:
        self._on_event = on_event

    def play(self, path: Path, token: int, subtitles: Path | None = None) -> None:
        with self._lock:
            self._token = token
            self.plays += 1
        self._on_event(VideoProgress(token, 0.0, self.duration_s))
        self._on_event(VideoStarted(token))
        self.timeline.at(time.monotonic() + self.duration_s, lambda: self._end(token))

    def _end(self, token: int) -> None:
        with self._lock:
            if self._token != token:  # stopped, or another clip replaced it
                return
            self._token = None
        self._on_event(VideoCompleted(token, self.duration_s, self.duration_s))

    def stop_playback(self) -> None:
        with self._lock:
            self._token = None

    def show_text(self, text: str, seconds: float = 10.0) -> None:
        pass

    def overlay(self, path: Path, width: int, height: int) -> None:
        pass

    def clear_overlay(self) -> None:
        pass

    def close(self) -> None:
        self.stop_playback()
