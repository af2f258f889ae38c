"""Captions, speech and language packs with the real tools: mpv loads the chosen language's caption
file; espeak-ng speaks a screen in each language into a file that sox finds non-silent; every pack has
every text; `nalox unit screens` writes every screen in every configured language."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from controller.cli import main as unit_main
from controller.cli import make_clips
from controller.clock import RealClock
from controller.daemon import UnitDaemon
from controller.fakes import FakeBoard
from controller.kiosk import i18n
from controller.kiosk import messages as m
from controller.kiosk.screens import SCREENS, ScreenContext, compose
from controller.kiosk.speech import EspeakSpeaker
from controller.vend.video import MpvPlayer
from tests.controller.conftest import make_config
from tests.waiting import wait_for


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clips")
    assert make_clips(out, 2.0, ["en", "es"]) == 0
    return out


@pytest.mark.parametrize("lang", ["en", "es"])
def test_captions_loaded_for_the_chosen_language(tmp_path: Path, clips: Path, lang: str) -> None:
    files = {"en": str(clips / "en.mp4"), "es": str(clips / "es.mp4")}
    config = make_config(tmp_path, videos={"files": files, "headless": True, "mpv_args": ["--no-config"]})
    board = FakeBoard()
    player = MpvPlayer(config.videos, tmp_path / "run")
    daemon = UnitDaemon(config, board, player, RealClock(), runtime_dir=tmp_path / "run")
    daemon.start()
    try:
        board.press(lang)
        wait_for(lambda: daemon.flow.session is not None and player.get_property("path"), 10, "the clip")

        def caption_file() -> object:
            return player.get_property("current-tracks/sub/external-filename")

        wait_for(caption_file, 10, "a caption track")
        assert caption_file() == str(clips / f"{lang}.srt")
        assert i18n.pack(lang).gettext(m.WATCH_VIDEO) in (clips / f"{lang}.srt").read_text()
        wait_for(lambda: board.stats()["dropped"] == 1, 15, "the kit after the clip")
    finally:
        daemon.stop()


def test_captions_off_by_config(tmp_path: Path, clips: Path) -> None:
    files = {"en": str(clips / "en.mp4"), "es": str(clips / "es.mp4")}
    config = make_config(
        tmp_path,
        videos={"files": files, "headless": True, "mpv_args": ["--no-config"]},
        kiosk={"captions": False},
    )
    board = FakeBoard()
    player = MpvPlayer(config.videos, tmp_path / "run")
    daemon = UnitDaemon(config, board, player, RealClock(), runtime_dir=tmp_path / "run")
    daemon.start()
    try:
        board.press("es")
        wait_for(lambda: player.get_property("track-list"), 10, "the clip's tracks")
        tracks = player.get_property("track-list")
        assert [t for t in tracks if t.get("type") == "sub"] == []
        wait_for(lambda: board.stats()["dropped"] == 1, 15, "the kit after the clip")
    finally:
        daemon.stop()


def sox_stats(wav: Path) -> dict[str, float]:
    out = subprocess.run(["sox", str(wav), "-n", "stat"], capture_output=True, timeout=30).stderr.decode()
    stats = {}
    for line in out.splitlines():
        name, _, value = line.partition(":")
        try:
            stats[name.strip()] = float(value.strip())
        except ValueError:
            continue
    return stats


@pytest.mark.parametrize("lang", ["en", "es", "zh", "tl", "vi", "ko", "hy"])
def test_speech_of_a_screen_in_each_language_is_not_silent(tmp_path: Path, lang: str) -> None:
    spec = compose("out_of_stock", lang, ScreenContext(buttons=((1, lang),)))
    speaker = EspeakSpeaker(volume=100, out_dir=tmp_path)
    wav = speaker.say(spec.speech, lang)
    speaker.wait()
    assert wav is not None and wav.is_file()
    stats = sox_stats(wav)
    assert stats["Length (seconds)"] > 1.0, stats
    assert stats["RMS     amplitude"] > 0.01, f"{lang}: expected speech, found silence {stats}"
    quiet = EspeakSpeaker(volume=20, out_dir=tmp_path / "quiet")
    wav2 = quiet.say(spec.speech, lang)
    quiet.wait()
    assert wav2 is not None and sox_stats(wav2)["RMS     amplitude"] < stats["RMS     amplitude"], "volume"


def test_speech_cut_short_by_the_next_screen(tmp_path: Path) -> None:
    speaker = EspeakSpeaker(out_dir=None)
    speaker.command = lambda lang, wav=None: ["sleep", "30"]  # type: ignore[method-assign]
    speaker.say("one", "en")
    started = time.monotonic()
    speaker.say("two", "en")
    speaker.stop()
    assert time.monotonic() - started < 5


def test_every_pack_has_every_text_and_keeps_placeholders() -> None:
    assert set(i18n.available()) >= {"en", "es", "zh", "tl", "vi", "ko", "hy"}
    for lang in i18n.available():
        p = i18n.pack(lang)
        assert p.missing == [], f"{lang}: untranslated {p.missing}"
        for msgid in m.ALL:
            for placeholder in ("{seconds}", "{number}", "{limit}", "{total}"):
                if placeholder in msgid:
                    assert placeholder in p.texts[msgid], f"{lang}: {msgid!r} lost {placeholder}"
        assert p.reviewed == (lang in ("en", "es")), f"{lang}: review status"
    for lang in ("zh", "tl", "vi", "ko", "hy"):
        head = (i18n.locale_dir() / f"{lang}.po").read_text(encoding="utf-8")[:400].lower()
        assert i18n.REVIEW_NOTE in head


def test_compiled_packs_match_their_po_files() -> None:
    packs = i18n.compiled()
    assert {p.stem for p in packs} == set(i18n.available()) >= {"en", "es"}
    for path, text in packs.items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.name} is stale: run `python -m controller.kiosk.i18n` and commit it"
        )
    assert i18n.pack("es").name == "Español" and i18n.pack("zh").name == "中文"


def test_check_mode_names_a_stale_pack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    po = (i18n.locale_dir() / "es.po").read_text(encoding="utf-8")
    (tmp_path / "es.po").write_text(po.replace('msgstr "Naloxona gratis"', 'msgstr "Naloxona"'), "utf-8")
    (tmp_path / "es.json").write_text((i18n.locale_dir() / "es.json").read_text("utf-8"), "utf-8")
    monkeypatch.setattr(i18n, "locale_dir", lambda: tmp_path)
    assert i18n.main(["--check"]) == 1
    assert "es.json is stale" in capsys.readouterr().err
    assert i18n.main([]) == 0 and i18n.main(["--check"]) == 0
    assert '"Free naloxone": "Naloxona"' in (tmp_path / "es.json").read_text("utf-8")


def test_unit_screens_renders_every_screen_in_every_language(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "unit.toml"
    text = (Path(__file__).parents[2] / "controller" / "unit.example.toml").read_text()
    cfg.write_text(
        text.replace('buttons = ["en", "es"]', 'buttons = ["en", "es", "zh", "emergency"]').replace(
            'es = "/tmp/nalox/videos/es.mp4"',
            'es = "/tmp/nalox/videos/es.mp4"\nzh = "/tmp/nalox/videos/zh.mp4"',
        )
    )
    out = tmp_path / "shots"
    assert unit_main(["screens", "--config", str(cfg), "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{s}-{lang}.png" for s in SCREENS for lang in ("en", "es", "zh"))
    assert "zh: to be reviewed by a native speaker" in capsys.readouterr().err
    one = tmp_path / "one"
    assert unit_main(["screens", "--config", str(cfg), "--out", str(one), "--lang", "es"]) == 0
    assert sorted(p.name for p in one.iterdir()) == sorted(f"{s}-es.png" for s in SCREENS)
    assert unit_main(["screens", "--config", str(cfg), "--out", str(one), "--lang", "fr"]) == 2
    assert "expected one of the configured languages en, es, zh, found 'fr'" in capsys.readouterr().err
