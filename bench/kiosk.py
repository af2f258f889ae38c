"""Kiosk latency with the real mpv on a real X display (Xvfb): press -> first feedback (the kiosk's
"watch this video" screen handed to mpv and acknowledged by it) and press -> first video frame (mpv's
playback-restart for the clip), p50/p99. `python -m bench.kiosk [--presses N]` runs it alone."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from controller.cli import make_clips
from controller.clock import RealClock
from controller.config import parse_config
from controller.daemon import UnitDaemon
from controller.fakes import FakeBoard
from controller.kiosk.speech import NullSpeaker
from controller.vend.video import MpvPlayer, PlayerEvent, VideoStarted


def percentiles(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    pick = lambda q: s[min(len(s) - 1, int(round(q * (len(s) - 1))))]  # noqa: E731
    return {"p50_ms": round(pick(0.5) * 1000, 1), "p99_ms": round(pick(0.99) * 1000, 1), "n": len(s)}


class Xvfb:
    def __init__(self) -> None:
        read, write = os.pipe()
        self.proc = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x720x24", "-nolisten", "tcp"],
            pass_fds=(write,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(write)
        with os.fdopen(read) as fh:
            self.display = ":" + fh.readline().strip()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def measure(presses: int = 30) -> dict[str, Any]:
    if shutil.which("Xvfb") is None or shutil.which("mpv") is None:
        raise RuntimeError("expected Xvfb and mpv on PATH (make setup installs them), found them missing")
    work = Path(tempfile.mkdtemp(prefix="nalox-bench-kiosk-"))
    xvfb = Xvfb()
    old_display = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = xvfb.display
    try:
        return _measure(work, presses)
    finally:
        if old_display is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = old_display
        xvfb.close()
        shutil.rmtree(work, ignore_errors=True)


def _measure(work: Path, presses: int) -> dict[str, Any]:
    make_clips(work / "clips", 2.0, ["en", "es"])
    config = parse_config(
        {
            "unit": {"id": "bench-kiosk", "site": "bench"},
            "serial": {"port": "/dev/null"},
            "products": {"nasal-4mg": {"name": "Naloxone nasal spray 4 mg"}},
            "columns": [{"column": 1, "product": "nasal-4mg", "capacity": 1000, "initial_stock": 1000}],
            "videos": {
                "files": {lang: str(work / "clips" / f"{lang}.mp4") for lang in ("en", "es")},
                "headless": False,
                "mpv_args": ["--no-config", "--vo=x11", "--ao=null"],
            },
            "policies": {"another_kit_window_s": 0},
            "kiosk": {"speech": False},
            "paths": {"data_dir": str(work / "unit")},
        },
        source="bench",
    )
    board = FakeBoard(columns=1, stock=1000)
    player = MpvPlayer(config.videos, work / "run")
    started = threading.Event()
    marks: dict[str, float] = {}
    daemon = UnitDaemon(config, board, player, RealClock(), runtime_dir=work / "run")
    daemon.kiosk.speaker = NullSpeaker()
    overlay = player.overlay

    def acknowledged_overlay(path: Path, width: int, height: int) -> None:
        overlay(path, width, height)
        player.get_property("osd-width")  # mpv answers in order: the overlay command is processed
        if daemon.kiosk.current.name == "video" and "feedback" not in marks:
            marks["feedback"] = time.monotonic()

    player.overlay = acknowledged_overlay  # type: ignore[method-assign]
    on_player = daemon._on_player_event

    def first_frame(event: PlayerEvent) -> None:
        if isinstance(event, VideoStarted):
            marks["frame"] = time.monotonic()
            started.set()
        on_player(event)

    daemon._on_player_event = first_frame  # type: ignore[method-assign]
    feedback: list[float] = []
    frames: list[float] = []
    daemon.start()
    try:
        _wait(lambda: daemon.kiosk.screen == "idle" and daemon.kiosk._on_screen is not None, 20)
        for i in range(presses):
            marks.clear()
            started.clear()
            t0 = time.monotonic()
            board.press("es" if i % 2 else "en")
            if not started.wait(20):
                raise RuntimeError("expected the clip's first frame within 20 s, found none")
            _wait(lambda: "feedback" in marks, 5)
            feedback.append(marks["feedback"] - t0)
            frames.append(marks["frame"] - t0)
            daemon._call(lambda: daemon.flow._abandon("bench"))
            _wait(lambda: daemon.kiosk.screen == "idle" and daemon.kiosk._on_screen is not None, 10)
    finally:
        daemon.stop()
    return {
        "press_to_feedback": percentiles(feedback),
        "press_to_first_frame": percentiles(frames),
        "presses": presses,
        "display": "Xvfb 1280x720, mpv --vo=x11",
    }


def _wait(cond: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"expected a condition within {timeout} s, it never held")
        pause.wait(0.005)


def table_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    if not r:
        return []
    if "error" in r:
        return [("kiosk press latency", "error", "", "", str(r["error"])[:60])]
    f, v = r["press_to_feedback"], r["press_to_first_frame"]
    return [
        ("kiosk press -> feedback p50/p99 (ms)", f"{f['p50_ms']} / {f['p99_ms']}", "", "", "< 250"),
        ("kiosk press -> first video frame p50/p99 (ms)", f"{v['p50_ms']} / {v['p99_ms']}", "", "", ""),
    ]


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.kiosk", description=__doc__.splitlines()[0])
    p.add_argument("--presses", type=int, default=30)
    args = p.parse_args()
    result = measure(args.presses)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
