"""The command line of `nalox demo` (DESIGN.md: `nalox demo [--vends N] [--duration S]`, `--summary FILE`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

DESCRIPTION = "broker + simulated board + unit + inventory on this machine, for a new user to see it work"


@dataclass(frozen=True)
class DemoArgs:
    vends: int = 0  # press N times, wait for the central store, stop (0: keep pressing)
    duration: float = 0  # stop after S seconds (0: until Ctrl-C)
    units: int = 1
    mqtt_port: int = 0
    http_port: int = 0
    headless: bool = False
    summary: Path | None = None
    seed: int = 1
    interval: float = 4.0
    workdir: Path | None = None


def _count(text: str) -> int:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0, got {text}")
    return n


def _seconds(text: str) -> float:
    s = float(text)
    if not s >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text}")
    return s


def _interval(text: str) -> float:
    s = float(text)
    if not s > 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text}")
    return s


def _units(text: str) -> int:
    n = int(text)
    if not 1 <= n <= 200:
        raise argparse.ArgumentTypeError(f"expected 1..200 units, got {text}")
    return n


def _port(text: str) -> int:
    n = int(text)
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port 0..65535, got {text}")
    return n


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nalox demo", description=DESCRIPTION)
    p.add_argument("--vends", type=_count, default=0, help="press N times, wait for the central store, stop")
    p.add_argument(
        "--duration", type=_seconds, default=0, help="stop after S seconds (default: until Ctrl-C)"
    )
    p.add_argument("--units", type=_units, default=1, help="K simulated units (K>1: a fleet in one process)")
    p.add_argument("--mqtt-port", type=_port, default=0, help="broker port (default: a free one)")
    p.add_argument("--http-port", type=_port, default=0, help="dashboard port (default 8080, or a free one)")
    p.add_argument("--headless", action="store_true", help="video through mpv with no window and no sound")
    p.add_argument("--summary", type=Path, help="write the JSON summary here at the end")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--interval", type=_interval, default=4.0, help="mean seconds between presses")
    p.add_argument("--workdir", type=Path, help="keep configs, ledgers and logs here (default: a temp dir)")
    return p


def parse_args(argv: list[str]) -> DemoArgs:
    return DemoArgs(**vars(parser().parse_args(argv)))  # each option's dest is a field of DemoArgs
