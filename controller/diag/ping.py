"""`nalox diag ping` straight on a serial port (no daemon): the serial engineer's round-trip printout,
one line per ping, then p50/p99 and the link counters. The command line itself is controller.diag.cli."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from controller.serial.board_api import BoardError
from controller.serial.board_link import SerialBoard

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2  # EXIT_FAILED is the link family's code


class UsageError(Exception):
    """The command line or the unit config does not say which port to use."""


@dataclass(frozen=True)
class Target:
    port: str
    baudrate: int


def resolve_target(args: argparse.Namespace) -> Target:
    if args.port:
        return Target(args.port, args.baudrate or 115200)
    try:
        from controller.config import load_config
    except ImportError as exc:
        raise UsageError(f"--config needs controller.config, which is not available: {exc}") from exc
    try:
        cfg: Any = load_config(args.config)
    except Exception as exc:  # ConfigError carries the one clear message
        raise UsageError(str(exc)) from exc
    return Target(cfg.serial.port, args.baudrate or cfg.serial.baudrate)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def run_ping(target: Target, count: int, interval: float, timeout: float, as_json: bool) -> int:
    board = SerialBoard(target.port, baudrate=target.baudrate)
    try:
        info = board.start(lambda event: None, timeout=max(timeout, 3.0))
    except BoardError as exc:
        return fail(f"no session with the board on {target.port}: expected HELLO_REPLY, got: {exc}", as_json)
    try:
        rtts, lost = _ping_loop(board, count, interval, timeout, as_json)
    finally:
        board.close()
    summary = _summary(target.port, info.board_id, count, rtts, lost, board.counters.as_dict())
    _print_summary(summary, as_json)
    return EXIT_OK if not lost else EXIT_FAILED


def _ping_loop(
    board: SerialBoard, count: int, interval: float, timeout: float, as_json: bool
) -> tuple[list[float], int]:
    rtts: list[float] = []
    lost = 0
    pause = threading.Event()
    for i in range(1, count + 1):
        try:
            rtt = board.ping(timeout)
        except BoardError as exc:
            lost += 1
            if not as_json:
                print(f"ping {i}: no pong ({exc})", flush=True)
        else:
            rtts.append(rtt)
            if not as_json:
                print(f"ping {i}: pong in {rtt * 1000:.2f} ms", flush=True)
        if interval > 0 and i < count:
            pause.wait(interval)
    return rtts, lost


def _summary(
    port: str, board_id: str, count: int, rtts: list[float], lost: int, counters: dict[str, int]
) -> dict[str, Any]:
    ms = [r * 1000 for r in rtts]
    return {
        "check": "ping",
        "ok": lost == 0,
        "port": port,
        "board_id": board_id,
        "sent": count,
        "received": len(rtts),
        "lost": lost,
        "rtt_ms": {
            "min": round(min(ms), 3) if ms else None,
            "p50": round(percentile(ms, 50), 3) if ms else None,
            "p99": round(percentile(ms, 99), 3) if ms else None,
            "max": round(max(ms), 3) if ms else None,
        },
        "link": counters,
    }


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, sort_keys=True), flush=True)
        return
    rtt = summary["rtt_ms"]
    link = " ".join(f"{k}={v}" for k, v in summary["link"].items())
    print(f"{summary['sent']} sent, {summary['received']} received, {summary['lost']} lost; "
          f"rtt p50 {rtt['p50']} ms, p99 {rtt['p99']} ms, max {rtt['max']} ms", flush=True)
    print(f"link: {link}", flush=True)
    if not summary["ok"]:
        print(f"FAILED: expected {summary['sent']} pongs from the board on {summary['port']}, "
              f"got {summary['received']}", file=sys.stderr, flush=True)


def fail(message: str, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"ok": False, "error": message}), flush=True)
    print(f"nalox diag: {message}", file=sys.stderr, flush=True)
    return EXIT_FAILED


def quiet_logs() -> None:
    """Diagnostics talk to a person on stdout; warnings and errors go to stderr as JSON lines."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def run_direct_ping(args: argparse.Namespace) -> int:
    """`ping` on the port itself (no daemon): one line per round trip, then the summary."""
    try:
        target = resolve_target(args)
    except UsageError as exc:
        print(f"nalox diag: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.count < 1:
        print(f"nalox diag: --count: expected at least 1, got {args.count}", file=sys.stderr)
        return EXIT_USAGE
    return run_ping(target, args.count, args.interval, args.timeout, args.json)

