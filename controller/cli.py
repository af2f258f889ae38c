"""`nalox unit ...`: run the daemon, print a commented example configuration, make test clips."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

from controller import log
from controller.config import ConfigError, UnitConfig, load_config
from controller.serial.board_api import BoardError

EXIT_CONFIG = 2
EXIT_FAILED = 1


def example_text() -> str:
    return resources.files("controller").joinpath("unit.example.toml").read_text(encoding="utf-8")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nalox unit", description="the naloxone vending unit daemon")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon in the foreground (JSON log lines on stdout)")
    run.add_argument("--config", required=True, type=Path, help="unit.toml")
    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("--config", required=True, type=Path)
    sub.add_parser("config-example", help="print a commented example configuration")
    clips = sub.add_parser(
        "demo-clips", help="make short test clips with captions (<lang>.mp4 + <lang>.srt) with ffmpeg"
    )
    clips.add_argument("--out", required=True, type=Path)
    clips.add_argument("--seconds", type=float, default=3.0)
    clips.add_argument("--langs", default="en,es", help="comma-separated languages (default en,es)")
    screens = sub.add_parser(
        "screens", help="render every kiosk screen in every configured language (or one) to PNG"
    )
    screens.add_argument("--config", required=True, type=Path)
    screens.add_argument("--out", required=True, type=Path)
    screens.add_argument("--lang", help="one language code (default: every configured language)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "config-example":
        sys.stdout.write(example_text())
        return 0
    if args.command == "demo-clips":
        return make_clips(args.out, args.seconds, [x for x in args.langs.split(",") if x])
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"nalox unit: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        print(f"{args.config}: ok (unit {config.unit.id}, {len(config.columns)} columns)")
        return 0
    if args.command == "screens":
        return render_screens(config, args.out, args.lang)
    return run(config)


def render_screens(config: UnitConfig, out: Path, lang: str | None) -> int:
    """Every screen as the unit draws it, one PNG per screen and language: `<screen>-<lang>.png`."""
    from controller.kiosk import i18n
    from controller.kiosk.display import context_of
    from controller.kiosk.drawing import render
    from controller.kiosk.screens import SCREENS, compose

    langs = config.kiosk.languages
    if lang is not None and lang not in langs:
        print(
            f"nalox unit screens: --lang: expected one of the configured languages {', '.join(langs)}, "
            f"found {lang!r}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    ctx = context_of(config)
    out.mkdir(parents=True, exist_ok=True)
    for code in [lang] if lang else langs:
        if not i18n.pack(code).reviewed:
            print(f"nalox unit screens: {code}: {i18n.REVIEW_NOTE}", file=sys.stderr)
        for name in SCREENS:
            spec = compose(name, code, ctx, number=1, reason="service")
            path = out / f"{name}-{code}.png"
            render(spec, ctx.size).save(path)
            print(path)
    return 0


def run(config: UnitConfig) -> int:
    from controller.clock import RealClock
    from controller.daemon import UnitDaemon
    from controller.vend.video import MpvPlayer

    log.configure(config.log_level)
    logger = log.get("cli")
    try:
        board = open_board(config)
        run_dir = config.paths.runtime_path()
        daemon = UnitDaemon(
            config, board, MpvPlayer(config.videos, run_dir), RealClock(), runtime_dir=run_dir
        )
    except Exception as exc:
        logger.error("start_failed", error=str(exc), expected="a reachable board and a usable ledger")
        return EXIT_FAILED
    try:
        daemon.run_forever()
    except BoardError as exc:  # the board is absent or does not answer: systemd restarts us
        logger.error(
            "board_unavailable",
            error=str(exc),
            expected="a dispenser board answering on " + config.serial.port,
        )
        return EXIT_FAILED
    except Exception as exc:
        logger.exception("daemon_failed", error=str(exc))
        return EXIT_FAILED
    return 0


def open_board(config: UnitConfig):  # type: ignore[no-untyped-def]
    from controller.serial.board_link import SerialBoard

    s = config.serial
    return SerialBoard(
        s.port, baudrate=s.baudrate, ack_timeout=s.ack_timeout_s, reply_timeout=s.reply_timeout_s
    )


def make_clips(out: Path, seconds: float, langs: list[str] | None = None) -> int:
    from controller.kiosk import i18n

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        print("nalox unit demo-clips: expected ffmpeg on PATH, found none", file=sys.stderr)
        return EXIT_FAILED
    unknown = [lang for lang in langs or [] if lang not in i18n.available()]
    if unknown:
        print(
            f"nalox unit demo-clips: --langs: expected languages among {', '.join(i18n.available())}, "
            f"found {', '.join(unknown)}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    out.mkdir(parents=True, exist_ok=True)
    for lang in langs or ["en", "es"]:
        make_clip(out / f"{lang}.mp4", seconds, ffmpeg)
        write_captions(out / f"{lang}.srt", lang, seconds)
        print(out / f"{lang}.mp4")
        print(out / f"{lang}.srt")
    return 0


def write_captions(path: Path, lang: str, seconds: float) -> Path:
    """A SubRip caption file in `lang` for a demo clip of `seconds` (two cues, from the language pack)."""
    from controller.kiosk import i18n
    from controller.kiosk import messages as m

    p = i18n.pack(lang)
    half = seconds / 2

    def ts(t: float) -> str:
        ms = int(round(t * 1000))
        return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"

    cues = [(0.0, half, p.gettext(m.WATCH_VIDEO)), (half, seconds, p.gettext(m.KIT_AFTER_VIDEO))]
    text = "".join(f"{i}\n{ts(a)} --> {ts(b)}\n{t}\n\n" for i, (a, b, t) in enumerate(cues, 1))
    path.write_text(text, encoding="utf-8")
    return path


def make_clip(path: Path, seconds: float, ffmpeg: str = "ffmpeg") -> Path:
    """A test pattern with a tone: lets a real mpv play something of a known length."""
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc=duration={seconds}:size=160x120:rate=10",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:duration={seconds}",
            "-shortest",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            str(path),
        ],
        check=True,
    )
    return path
