"""`nalox diag ping` straight on a serial port (no daemon): the serial engineer's round-trip printout,
one line per ping, then p50/p99 and the link counters. The command line itself is controller.diag.cli."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypedDict

import structlog

from controller.config import UnitConfig
from controller.diag.result import EXIT_CODES, EXIT_OK, UsageError
from controller.serial.board_api import Board, BoardError
from controller.serial.board_link import SerialBoard

EXIT_LINK = EXIT_CODES["link"]


@dataclass(frozen=True)
class Target:
    port: str
    baudrate: int


def resolve_target(args: argparse.Namespace, config: UnitConfig | None) -> Target:
    """The port to ping: --port, else the unit config's serial port."""
    if args.port:
        return Target(args.port, args.baudrate or 115200)
    if config is None:
        raise UsageError("expected --port or --config to say which port to ping, got neither")
    return Target(config.serial.port, args.baudrate or config.serial.baudrate)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence: the one percentile of the tree
    (diag ping, the ping check, the serial noise run, the benchmarks)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


@dataclass
class RoundTrips:
    """What `count` PINGs found: round trips in ms of the answered ones, and how many got no PONG."""

    rtts_ms: list[float] = field(default_factory=list)
    lost: int = 0


OnPing = Callable[[int, float | None, BoardError | None], None]  # (i, rtt_s or None, error or None)


def round_trips(board: Board, count: int, timeout: float, interval: float = 0.0,
                on_ping: OnPing | None = None) -> RoundTrips:
    """The one ping loop: `count` PINGs on a started board, `interval` s apart."""
    found = RoundTrips()
    pause = threading.Event()
    for i in range(1, count + 1):
        try:
            rtt = board.ping(timeout)
        except BoardError as exc:
            found.lost += 1
            if on_ping is not None:
                on_ping(i, None, exc)
        else:
            found.rtts_ms.append(rtt * 1000.0)
            if on_ping is not None:
                on_ping(i, rtt, None)
        if interval > 0 and i < count:
            pause.wait(interval)
    return found


def run_ping(target: Target, count: int, interval: float, timeout: float, as_json: bool) -> int:
    board = SerialBoard(target.port, baudrate=target.baudrate)
    try:
        info = board.start(lambda event: None, timeout=max(timeout, 3.0))
    except BoardError as exc:
        return fail(f"no session with the board on {target.port}: expected HELLO_REPLY, got: {exc}", as_json)
    try:
        found = round_trips(board, count, timeout, interval, None if as_json else _print_ping)
    finally:
        board.close()
    summary = _summary(target.port, info.board_id, count, found, board.counters.as_dict())
    _print_summary(summary, as_json)
    return EXIT_OK if not found.lost else EXIT_LINK


def _print_ping(i: int, rtt: float | None, error: BoardError | None) -> None:
    if rtt is None:
        print(f"ping {i}: no pong ({error})", flush=True)
    else:
        print(f"ping {i}: pong in {rtt * 1000:.2f} ms", flush=True)


class RttSummary(TypedDict):
    min: float | None
    p50: float | None
    p99: float | None
    max: float | None


class PingSummary(TypedDict):
    """What `nalox diag ping --json` prints last."""

    check: str
    ok: bool
    port: str
    board_id: str
    sent: int
    received: int
    lost: int
    rtt_ms: RttSummary
    link: dict[str, int]


def _summary(port: str, board_id: str, count: int, found: RoundTrips, counters: dict[str, int]
             ) -> PingSummary:
    ms, lost = found.rtts_ms, found.lost
    return {
        "check": "ping",
        "ok": lost == 0,
        "port": port,
        "board_id": board_id,
        "sent": count,
        "received": len(ms),
        "lost": lost,
        "rtt_ms": {
            "min": round(min(ms), 3) if ms else None,
            "p50": round(percentile(ms, 50), 3) if ms else None,
            "p99": round(percentile(ms, 99), 3) if ms else None,
            "max": round(max(ms), 3) if ms else None,
        },
        "link": counters,
    }


def _print_summary(summary: PingSummary, as_json: bool) -> None:
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
    return EXIT_LINK


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


def run_direct_ping(args: argparse.Namespace, config: UnitConfig | None) -> int:
    """`ping` on the port itself (no daemon): one line per round trip, then the summary. UsageError
    when the command line does not say which port, or asks for fewer than one ping."""
    target = resolve_target(args, config)
    if args.count < 1:
        raise UsageError(f"--count: expected at least 1, got {args.count}")
    return run_ping(target, args.count, args.interval, args.timeout, args.json)

