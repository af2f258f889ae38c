"""`nalox sim ...`: run a simulated dispenser board behind a pty (`board`) and drive it (`ctl`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from typing import Any

import serial
import structlog

from simulator.board import SimulatedBoard, SimulatorError, parse_faults
from simulator.control import ControlServer, ensure_free, request
from simulator.pty import PtyPort

log = structlog.get_logger("simulator")


def configure_logging(level: str = "info") -> None:
    """structlog JSON lines on stdout."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nalox sim", description="simulated dispenser board")
    sub = parser.add_subparsers(dest="command", required=True)
    board = sub.add_parser("board", help="run a simulated board behind a pty until SIGTERM/SIGINT")
    board.add_argument("--link", required=True, help="path of the pty symlink (control socket: PATH.ctl)")
    board.add_argument("--columns", type=int, default=6)
    board.add_argument("--stock", type=int, default=20, help="kits loaded in each column")
    board.add_argument("--faults", default="", help="e.g. jam=0.05,miss_drop=0.02@3,noise=0.01,slow=200")
    board.add_argument("--spin-ms", type=float, default=300, help="time for a coil to push one kit out")
    board.add_argument("--seed", type=int, default=0)
    board.add_argument("--state-dir", default=None, help="keep the board's non-volatile storage here")
    board.add_argument("--board-id", default="sim-0001")
    board.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    ctl = sub.add_parser("ctl", help="drive a running simulated board through its control socket")
    ctl.add_argument("--link", required=True, help="the board's --link PATH")
    ctl.add_argument("action", choices=["press", "door", "temp", "fault", "stock", "reboot", "stats"])
    ctl.add_argument("args", nargs="*", help="door open|close, temp C, fault NAME=P[@COL], stock COL N")
    ctl.add_argument("--lang", default="en", choices=["en", "es"])
    ctl.add_argument("--hold-ms", type=float, default=None,
                     help="press: hold the button this long, 0..120000 ms (default: a tap)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "board":
            return run_board(args)
        return run_ctl(args)
    except SimulatorError as exc:
        print(f"nalox sim: {exc}", file=sys.stderr)
        return 2


# ---------------------------------------------------------------- board


def run_board(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    parse_faults(args.faults)  # fail before creating anything
    nvs_path = os.path.join(args.state_dir, "nvs") if args.state_dir else None
    if args.state_dir:
        os.makedirs(args.state_dir, exist_ok=True)
    board = SimulatedBoard(columns=args.columns, stock=args.stock, faults=args.faults, seed=args.seed,
                           spin_ms=args.spin_ms, nvs_path=nvs_path, board_id=args.board_id)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    parent = os.path.dirname(os.path.abspath(args.link))
    os.makedirs(parent, exist_ok=True)
    ensure_free(args.link + ".ctl")
    try:
        port = PtyPort(args.link)
    except serial.SerialException as exc:
        raise SimulatorError(str(exc)) from exc
    control = None
    try:
        board.attach(port)
        board.start()
        # the control socket appears last: once it answers, the pty and the firmware are ready
        control = ControlServer(board, args.link + ".ctl")
        log.info("board_ready", link=args.link, pty=port.slave_name, control=args.link + ".ctl",
                 columns=args.columns, stock=args.stock, spin_ms=args.spin_ms, faults=args.faults)
        while not stop.wait(0.5):
            pass
    finally:
        if control is not None:
            control.close()
        board.stop()
        port.close()
        log.info("board_stopped", link=args.link, stats=board.stats())
    return 0


# ---------------------------------------------------------------- ctl


def ctl_request(action: str, rest: list[str], lang: str, hold_ms: float | None = None) -> dict[str, Any]:
    """Turn `nalox sim ctl` words into one control-socket request."""
    def need(n: int, usage: str) -> None:
        if len(rest) != n:
            raise SimulatorError(f"ctl {action}: expected {usage}, got {' '.join(rest) or 'nothing'}")

    if action in ("press", "reboot", "stats"):
        need(0, "no arguments")
        if action != "press":
            if hold_ms is not None:
                raise SimulatorError(f"ctl {action}: --hold-ms is for press only")
            return {"cmd": action}
        if hold_ms is not None and not 0 <= hold_ms <= 120_000:
            raise SimulatorError(f"ctl press: expected --hold-ms in 0..120000, got {hold_ms:g}")
        return {"cmd": action, "lang": lang, "hold_ms": hold_ms}
    if action == "door":
        need(1, "open|close")
        if rest[0] not in ("open", "close"):
            raise SimulatorError(f"ctl door: expected open or close, got {rest[0]!r}")
        return {"cmd": "door", "open": rest[0] == "open"}
    if action == "temp":
        need(1, "degrees C")
        return {"cmd": "temp", "c": _number(rest[0], "temp")}
    if action == "stock":
        need(2, "COL N")
        return {"cmd": "stock", "column": int(_number(rest[0], "COL")), "n": int(_number(rest[1], "N"))}
    need(1, "NAME=P[@COL]")
    (name, p, column), = parse_faults(rest[0])
    return {"cmd": "fault", "name": name, "p": p, "column": column}


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise SimulatorError(f"{what}: expected a number, got {text!r}") from None


def run_ctl(args: argparse.Namespace) -> int:
    message = ctl_request(args.action, args.args, args.lang, args.hold_ms)
    path = args.link + ".ctl"
    try:
        reply = request(path, message)
    except OSError as exc:
        raise SimulatorError(f"control socket {path}: expected a running `nalox sim board`, got {exc}") \
            from exc
    if not reply.get("ok"):
        print(f"nalox sim ctl: {reply.get('error')}", file=sys.stderr)
        return 1
    if args.action == "stats":
        print(json.dumps(reply["stats"], indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
