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
    clips = sub.add_parser("demo-clips", help="make short en/es test clips with ffmpeg (not real training)")
    clips.add_argument("--out", required=True, type=Path)
    clips.add_argument("--seconds", type=float, default=3.0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "config-example":
        sys.stdout.write(example_text())
        return 0
    if args.command == "demo-clips":
        return make_clips(args.out, args.seconds)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"nalox unit: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        print(f"{args.config}: ok (unit {config.unit.id}, {len(config.columns)} columns)")
        return 0
    return run(config)


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


def make_clips(out: Path, seconds: float) -> int:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        print("nalox unit demo-clips: expected ffmpeg on PATH, found none", file=sys.stderr)
        return EXIT_FAILED
    out.mkdir(parents=True, exist_ok=True)
    for lang in ("en", "es"):
        make_clip(out / f"{lang}.mp4", seconds, ffmpeg)
        print(out / f"{lang}.mp4")
    return 0


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
