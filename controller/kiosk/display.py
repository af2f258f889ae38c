"""The kiosk on the unit's display: one `show(screen, lang)` for the vend flow (and anyone who must tell
the person something, e.g. ledger down), drawn as an overlay on mpv's own window and spoken aloud.

Why mpv overlays: mpv already owns the screen and the audio for the training video, so the screens are
Pillow images handed to that same window (`overlay-add`, a memory-mapped BGRA file): no second fullscreen
program fighting for focus, no browser (hundreds of MB on a small board), the same pixels as
`nalox unit screens` writes for translators and the docs. Measured under Xvfb: mpv's `x11` video output
draws overlays in its idle window; its `gpu` output in Mesa's software GL did not (see docs/kiosk.md).

The flow calls show() from its loop thread; drawing, animation and countdowns run on the kiosk's own
thread, so a long dispense never freezes the screen. Headless units (tests, demo) draw nothing and send
the words to mpv's OSD text instead, which also keeps a log of what the person was told.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller import log
from controller.clock import Clock
from controller.config import UnitConfig
from controller.kiosk import i18n
from controller.kiosk.screens import AccessPoint, ScreenContext, ScreenSpec, compose
from controller.kiosk.speech import EspeakSpeaker, NullSpeaker, Speaker
from controller.vend.video import VideoPlayer, player_dir

LOG = log.get("kiosk")
SILENT = {"idle", "video"}  # idle does not talk to passers-by; the video has its own sound track
HOLD_S = {"press_void": 6.0, "vend_failed": 20.0, "video_broken": 20.0, "emergency": 30.0, "take_kit": 15.0}
CACHE_FILES = 48
REFRESH_S = 3.0


def context_of(config: UnitConfig) -> ScreenContext:
    k, p = config.kiosk, config.policies
    buttons = tuple((i + 1, b) for i, b in enumerate(k.buttons) if b not in ("emergency", "repeat"))
    emergency = None
    if p.emergency:
        emergency = f"button:{k.buttons.index('emergency') + 1}" if "emergency" in k.buttons else "hold"
    return ScreenContext(
        buttons=buttons,
        emergency=emergency,
        access_points=tuple(AccessPoint(a.name, a.address, a.hours, a.phone) for a in k.access_points),
        info_url=k.info_url,
        another_kit_window_s=p.another_kit_window_s,
        kits_per_session=p.kits_per_session,
        size=(k.width, k.height),
    )


@dataclass
class Showing:
    name: str
    lang: str
    params: dict[str, Any]
    since: float
    until: float | None  # back to idle after this (monotonic), None: stays
    hidden: bool = False  # the video is playing: nothing over it
    spec: ScreenSpec | None = field(default=None, repr=False)


class Kiosk:
    def __init__(
        self,
        config: UnitConfig,
        player: VideoPlayer,
        clock: Clock,
        speaker: Speaker | None = None,
        display: bool | None = None,
        runtime_dir: Path | None = None,
    ) -> None:
        self.config, self.player, self.clock = config, player, clock
        self.ctx = context_of(config)
        self.default_lang = config.videos.default_language
        k = config.kiosk
        self.display = (
            (not config.videos.headless)
            if display is None and k.display is None
            else bool(k.display if display is None else display)
        )
        self.speaker: Speaker = speaker or self._speaker()
        self.runtime_dir = runtime_dir
        self.current = Showing("idle", self.default_lang, {}, clock.monotonic(), None)
        self.shown: list[tuple[str, str]] = []  # every screen shown, in order (tests, bench)
        self.out_of_service: dict[str, str] = {}  # who holds the unit out of service -> reason
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._dir: Path | None = None
        self._files: OrderedDict[tuple[Any, ...], Path] = OrderedDict()
        self._on_screen: tuple[Any, ...] | None = None
        self._pushed_at = 0.0
        self._n = 0
        self.first_feedback: dict[int, float] = {}  # show number -> monotonic when it reached mpv (bench)
        self._shows = 0
        for lang in k.languages:
            if not i18n.pack(lang).reviewed:
                LOG.warning("language_pack_unreviewed", lang=lang, note=i18n.REVIEW_NOTE)

    def _speaker(self) -> Speaker:
        k = self.config.kiosk
        if k.speech and (self.display or k.speech_dir is not None):
            return EspeakSpeaker(k.speech_volume, k.speech_rate_wpm, k.espeak, k.voices, k.speech_dir)
        return NullSpeaker()

    # ------------------------------------------------------------ API

    def start(self) -> None:
        if self.display and self._thread is None:
            self._dir = player_dir(self.runtime_dir, "kiosk")
            self._thread = threading.Thread(target=self._run, name="kiosk", daemon=True)
            self._thread.start()
        self.show("idle")

    def show(self, screen: str, lang: str | None = None, **params: Any) -> ScreenSpec:
        """Show `screen` in `lang` (default language when None) and speak it. Params: take_kit(number,
        until), out_of_service(reason), hold_s (back to idle after; screens have defaults)."""
        lang = (
            lang if lang in self.ctx.languages or (lang and lang in i18n.available()) else self.default_lang
        )
        assert lang is not None
        now = self.clock.monotonic()
        hold = params.pop("hold_s", HOLD_S.get(screen))
        until = params.get("until") if screen == "take_kit" else None
        if until is None and hold is not None:
            until = now + float(hold)
        override = params.pop("override", None)
        spec = compose(screen, lang, self.ctx, **self._render_params(screen, params, now))
        if override:
            spec = _with_title(spec, override)
        with self._lock:
            self.current = Showing(screen, lang, params, now, until, spec=spec)
            self.shown.append((screen, lang))
            self._shows += 1
        LOG.info("screen", screen=screen, lang=lang, **{k: v for k, v in params.items() if k != "until"})
        if screen not in SILENT:
            self.speaker.say(spec.speech, lang)
        else:
            self.speaker.stop()
        if self.display:
            self._wake.set()
        else:
            self.player.show_text(spec.text, 10.0)
        return spec

    def hide(self) -> None:
        """The video's first frame is up: take the screen away so the clip and its captions show."""
        with self._lock:
            self.current.hidden = True
        if self.display:
            self._wake.set()

    def repeat(self) -> None:
        """Say the current screen again (a long press or the 'repeat' button)."""
        with self._lock:
            cur = self.current
        spec = cur.spec or compose(cur.name, cur.lang, self.ctx, **self._render_params(cur.name, cur.params))
        LOG.info("speech_repeat", screen=cur.name, lang=cur.lang)
        self.speaker.say(spec.speech, cur.lang)

    def set_out_of_service(self, holder: str, reason: str | None) -> None:
        """`holder` (e.g. "ledger") puts the unit's screen out of service for `reason` ("ledger_down",
        "board_down", "service"), or releases it with None. The screen shows while any holder holds."""
        with self._lock:
            if self.out_of_service.get(holder) == reason:
                return  # no change: leave the screen alone
            if reason is None:
                self.out_of_service.pop(holder, None)
            else:
                self.out_of_service[holder] = reason
            reasons = list(self.out_of_service.values())
            name = self.current.name
        if reasons and (name != "out_of_service" or self.current.params.get("reason") != reasons[0]):
            self.show("out_of_service", None, reason=reasons[0])
        elif not reasons and name == "out_of_service":
            self.show("idle")

    @property
    def screen(self) -> str:
        return self.current.name

    def tick(self) -> None:
        """From the daemon's loop: a held screen goes back to idle when its time is up."""
        with self._lock:
            cur = self.current
            expired = cur.until is not None and self.clock.monotonic() > cur.until
        if expired and not self.out_of_service:
            self.show("idle")

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.speaker.stop()
        if self._dir is not None:
            import shutil

            shutil.rmtree(self._dir, ignore_errors=True)

    # ------------------------------------------------------------ drawing thread

    def _render_params(self, screen: str, params: dict[str, Any], now: float | None = None) -> dict[str, Any]:
        out = {k: v for k, v in params.items() if k != "until"}
        if screen == "take_kit" and "until" in params:
            left = float(params["until"]) - (self.clock.monotonic() if now is None else now)
            out["seconds"] = max(0, math.ceil(left))
        return out

    def _run(self) -> None:
        self._prewarm()
        while not self._closed.is_set():
            try:
                self._draw()
            except Exception:
                LOG.exception("kiosk_draw_failed")
            self._wake.wait(0.25)
            self._wake.clear()

    def _prewarm(self) -> None:
        """Draw the screens a press needs at once (video in every language, idle), before any press."""
        for lang in self.ctx.languages:
            try:
                self._file(compose("video", lang, self.ctx), 0)
            except Exception:
                LOG.exception("kiosk_prewarm_failed", lang=lang)

    def _draw(self) -> None:
        with self._lock:
            cur = self.current
            shows = self._shows
        if cur.hidden:
            if self._on_screen is not None:
                self.player.clear_overlay()
                self._on_screen = None
            return
        now = self.clock.monotonic()
        spec = cur.spec
        if cur.name == "take_kit" or spec is None:
            spec = compose(cur.name, cur.lang, self.ctx, **self._render_params(cur.name, cur.params, now))
            if cur.spec is not None and cur.spec.title != spec.title:
                spec = _with_title(spec, cur.spec.title)
        frame = int((now - cur.since) / spec.frame_s) % spec.frames if spec.frames > 1 and spec.frame_s else 0
        key = (spec, frame)
        # the same picture again every few seconds: a relaunched mpv (after a crash) gets it back
        if key == self._on_screen and time.monotonic() - self._pushed_at < REFRESH_S:
            return
        path = self._file(spec, frame)
        self.player.overlay(path, *self.ctx.size)
        self._on_screen, self._pushed_at = key, time.monotonic()
        self.first_feedback.setdefault(shows, self.clock.monotonic())

    def _file(self, spec: ScreenSpec, frame: int) -> Path:
        key = (spec, frame)
        path = self._files.get(key)
        if path is not None:
            self._files.move_to_end(key)
            return path
        assert self._dir is not None
        from controller.kiosk.drawing import render  # Pillow only where screens are drawn

        img = render(spec, self.ctx.size, frame).convert("RGBA")
        self._n += 1
        path = self._dir / f"screen-{self._n}.bgra"
        path.write_bytes(img.tobytes("raw", "BGRA"))
        self._files[key] = path
        while len(self._files) > CACHE_FILES:
            _, old = self._files.popitem(last=False)
            old.unlink(missing_ok=True)  # mpv keeps its own mapping of a file still on screen
        return path


def _with_title(spec: ScreenSpec, title: str) -> ScreenSpec:
    from dataclasses import replace

    return replace(spec, title=title)
