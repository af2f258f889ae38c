"""Every kiosk screen on a real display: mpv on Xvfb draws the kiosk's overlay; a screenshot of the X
screen is read back by tesseract, which must find the screen's key sentence in English and Spanish.

NALOX_SCREENSHOTS=DIR keeps the screenshots (docs/kiosk/ holds the ones the docs show)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from controller.clock import RealClock
from controller.config import UnitConfig
from controller.kiosk.display import Kiosk
from controller.kiosk.screens import SCREENS
from controller.kiosk.speech import NullSpeaker
from controller.vend.video import MpvPlayer
from tests.controller.conftest import make_config
from tests.kiosk.conftest import Xvfb, normalise, ocr
from tests.waiting import wait_for

ACCESS = [
    {"name": "County Health Clinic", "address": "1200 Main St", "hours": "Mon-Fri 8-5", "phone": "555-0100"},
    {"name": "Any pharmacy", "hours": "no prescription needed"},
]


def kiosk_config(tmp: Path, **policies: object) -> UnitConfig:
    return make_config(
        tmp,
        videos={
            "headless": False,
            "mpv_args": ["--no-config", "--vo=x11", "--ao=null"],
            "start_timeout_s": 30.0,  # a loaded test machine starts mpv slowly
        },
        kiosk={"access_points": ACCESS, "info_url": "https://example.org/naloxone", "speech": False},
        policies={"status_poll_s": 30.0, **policies},
    )


@pytest.fixture
def kiosk(xvfb: Xvfb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kiosk]:
    monkeypatch.setenv("DISPLAY", xvfb.display)
    config = kiosk_config(tmp_path)
    player = MpvPlayer(config.videos, tmp_path / "run")
    player.start(lambda e: None)
    k = Kiosk(config, player, RealClock(), speaker=NullSpeaker(), display=True, runtime_dir=tmp_path / "run")
    k.start()
    yield k
    k.close()
    player.close()


def shown(
    k: Kiosk, xvfb: Xvfb, name: str, lang: str, tmp: Path, full: bool = False, **params: object
) -> tuple[Image.Image, str]:
    """Show a screen; return the screenshot in which tesseract reads the screen's title."""
    spec = k.show(name, lang, **params)
    key = normalise(spec.title)
    found: dict[str, object] = {}
    # cheap first: the kiosk handed this very screen to mpv; then read the X screen until it shows
    wait_for(lambda: k._on_screen is not None and k._on_screen[0] == spec, 10, f"{name} sent to mpv")

    def readable() -> bool:
        img = xvfb.grab()
        # every screen's title is in its top part: read that (twice as fast), the whole when asked
        text = ocr(img if full else img.crop((0, 0, img.width, img.height * 45 // 100)), lang, tmp)
        found.update(img=img, text=text)
        return key in text

    try:
        wait_for(readable, timeout=20, what=f"{name}-{lang}: {spec.title!r} on the X screen", poll=0.1)
    except AssertionError:
        raise AssertionError(
            f"{name}-{lang}: expected {key!r} in the OCR text, found {found.get('text')!r}"
        ) from None
    img = found["img"]
    assert isinstance(img, Image.Image)
    keep = os.environ.get("NALOX_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        img.save(Path(keep) / f"{name}-{lang}.png")
    return img, str(found["text"])


def dark_share(img: Image.Image) -> float:
    """The share of pixels that are (near) black."""
    gray = img.convert("L")
    hist = gray.histogram()
    return sum(hist[:16]) / (img.width * img.height)


@pytest.mark.parametrize("lang", ["en", "es"])
def test_every_screen_readable_on_the_real_display(
    kiosk: Kiosk, xvfb: Xvfb, tmp_path: Path, lang: str
) -> None:
    for name in SCREENS:
        img, text = shown(kiosk, xvfb, name, lang, tmp_path, reason="service", number=1)
        assert dark_share(img) < 0.05, f"{name}-{lang} is mostly black"
    # a line beyond the title, to be sure the language is the person's: the out-of-stock offer
    _, text = shown(kiosk, xvfb, "out_of_stock", lang, tmp_path, full=True)
    assert ("watch" in text) if lang == "en" else ("video" in text and "pulse" in text)


def test_idle_is_never_black_and_moves(kiosk: Kiosk, xvfb: Xvfb, tmp_path: Path) -> None:
    first, _ = shown(kiosk, xvfb, "idle", "en", tmp_path)
    seen = {first.tobytes()}
    for _ in range(3):  # the idle screen animates (about one frame a second): it is never frozen

        def changed() -> bool:
            img = xvfb.grab()
            assert dark_share(img) < 0.05 and ImageStat.Stat(img.convert("L")).mean[0] > 30, "idle went black"
            new = img.tobytes() not in seen
            seen.add(img.tobytes())
            return new

        wait_for(changed, timeout=5, what="the idle screen's next frame", poll=0.1)


def test_out_of_stock_on_screen_before_any_video(
    xvfb: Xvfb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controller.cli import make_clips
    from controller.daemon import UnitDaemon
    from controller.fakes import FakeBoard

    monkeypatch.setenv("DISPLAY", xvfb.display)
    assert make_clips(tmp_path / "clips", 1.0, ["en", "es"]) == 0
    config = kiosk_config(tmp_path)
    config.videos.files = {lang: tmp_path / "clips" / f"{lang}.mp4" for lang in ("en", "es")}
    cols = [r for r in config.columns]
    for c in cols:
        c.initial_stock = 0
    board = FakeBoard(columns=len(cols), stock=0)
    player = MpvPlayer(config.videos, tmp_path / "run")
    daemon = UnitDaemon(config, board, player, RealClock(), runtime_dir=tmp_path / "run")
    daemon.kiosk.speaker = NullSpeaker()
    daemon.start()
    try:
        wait_for(lambda: dark_share(xvfb.grab()) < 0.05, 30, "the idle screen on the display")
        before = xvfb.grab().tobytes()
        board.press("es")
        wait_for(lambda: daemon.kiosk.screen == "out_of_stock", 10, "the out-of-stock screen")
        wait_for(lambda: xvfb.grab().tobytes() != before, 10, "the screen to change")
        key = normalise(daemon.kiosk.current.spec.title if daemon.kiosk.current.spec else "")
        wait_for(lambda: key in ocr(xvfb.grab(), "es", tmp_path), 20, "the Spanish out-of-stock title")
        assert player.get_property("path") is None, "no clip was loaded before the person was told"
        assert daemon.ledger.events(event_type="video") == []
        board.press("es")  # "watch the training anyway"
        wait_for(lambda: player.get_property("path") == str(config.videos.files["es"]), 10, "the clip")
    finally:
        daemon.stop()
