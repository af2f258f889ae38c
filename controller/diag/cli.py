"""`nalox diag`: the technician's command line (entry point).

    nalox diag --port /dev/nalox-dispenser ping|sensors|motor-test COL|drop-test|report [--json]
    nalox diag --config /etc/nalox/unit.toml ping|sensors|...|broker|ledger|video|disk|report|restock

Straight on the serial port (`--port`, daemon stopped) or for a configured unit (`--config`):
through the running daemon's control socket, or on the configured port when no daemon runs, so the two
never fight over the port. Exit codes: controller.diag.result."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from controller import control_socket
from controller.config import ConfigError, UnitConfig, load_config
from controller.diag.board_checks import DiagContext
from controller.diag.ping import quiet_logs, run_direct_ping
from controller.diag.result import (
    EXIT_CODES,
    EXIT_INTERNAL,
    EXIT_USAGE,
    Check,
    UsageError,
    exit_code,
    render,
)
from controller.diag.run import CheckArgs, check_args, report_context, run_check
from controller.serial.board_api import BoardError
from controller.serial.board_link import SerialBoard

if TYPE_CHECKING:  # argparse's subparsers action is generic only to the type checker
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]
EPILOG = ("exit codes: 0 all passed, 1 board link or ping, 2 usage or config, " + ", ".join(
    f"{code} {family}" for family, code in EXIT_CODES.items() if code > 2) + ", 70 internal error; "
    "see docs/technician.md")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nalox diag", description="technician diagnostics of a nalox unit",
                                epilog=EPILOG)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="serial device, udev symlink or pyserial URL (daemon stopped)")
    where.add_argument("--config", help="unit.toml: asks the running daemon, else opens its port")
    p.add_argument("--baudrate", type=int, default=None, help="default 115200 (or the config's)")
    p.add_argument("--json", action="store_true", help="print one JSON object (for a support ticket)")
    sub = p.add_subparsers(dest="check", required=True, metavar="CHECK")
    _board_parsers(sub)
    _host_parsers(sub)
    for each in sub.choices.values():  # --json also after the subcommand: `report --json`
        each.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    return p


def _board_parsers(sub: Subparsers) -> None:
    ping = sub.add_parser("ping", help="round trips over the serial link: p50/p99, link counters")
    ping.add_argument("--count", type=int, default=10, help="pings to send (default 10)")
    ping.add_argument("--interval", type=float, default=0.0, help="seconds between pings (default 0)")
    ping.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each pong (default 2)")
    sensors = sub.add_parser("sensors", help="door, temperature, drop sensors, motors, a live button test")
    sensors.add_argument("--button", type=float, default=0.0, metavar="SECONDS",
                         help="wait this long for a button press (default: no button test)")
    motor = sub.add_parser("motor-test", help="turn one column's motor (door open only); finds jams")
    motor.add_argument("column", type=int)
    drop = sub.add_parser("drop-test", help="drop one kit per column, see the drop sensor (door open)")
    drop.add_argument("--column", type=int, action="append", dest="columns", help="only this column (repeat)")
    report = sub.add_parser("report", help="everything at once")
    report.add_argument("--button", type=float, default=0.0, metavar="SECONDS", help="include a button test")
    restock = sub.add_parser("restock", help="record kits loaded into a column, with a blind count")
    restock.add_argument("--column", type=int, required=True)
    restock.add_argument("--count", type=int, required=True, help="kits in the column after loading")
    restock.add_argument("--lot", help="lot number of the kits loaded")
    restock.add_argument("--expiry", help="expiry date of the kits loaded, YYYY-MM-DD")
    restock.add_argument("--found", type=int, help="kits found in the column before loading (blind count; "
                         "asked interactively on a terminal)")
    restock.add_argument("--reason", help="why the count differs from the expected number")


def _host_parsers(sub: Subparsers) -> None:
    sub.add_parser("broker", help="broker reachability, TLS handshake, days until the certificate expires")
    sub.add_parser("ledger", help="outbox depth, oldest unacknowledged event, last seq acked by central")
    video = sub.add_parser("video", help="play one second of each configured clip")
    video.add_argument("--seconds", type=float, default=1.0)
    video.add_argument("--on-screen", action="store_true", dest="on_screen",
                       help="show the clips on the display (daemon stopped; default: no screen)")
    sub.add_parser("disk", help="free space on the data disk")


BOARD_CHECKS = {"ping", "sensors", "motor-test", "drop-test", "report"}


# ---------------------------------------------------------------- targets


def load_unit_config(path: str) -> UnitConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def via_daemon(config: UnitConfig, check: str, cargs: CheckArgs) -> dict[str, Any] | None:
    """The daemon's report, or None when no daemon serves the configured control socket."""
    sock = config.paths.control_socket
    if sock is None:
        return None
    try:
        answer = control_socket.request(sock, {"op": "diag", "check": check, "args": cargs})
    except control_socket.DaemonNotRunning:
        return None
    if not answer.get("ok"):
        raise control_socket.ControlError(f"the daemon refused the check: {answer.get('error')}")
    return dict(answer["report"])


@contextmanager
def direct_context(port: str, baudrate: int, config: UnitConfig | None, need_board: bool
                   ) -> Iterator[DiagContext]:
    """A DiagContext with our own SerialBoard on `port` (closed on exit)."""
    ctx = DiagContext(board=None, config=config)
    if not need_board:
        yield ctx
        return
    board = SerialBoard(port, baudrate=baudrate)
    try:
        ctx.info = board.start(ctx.on_event, timeout=3.0)
        ctx.board = board
    except BoardError as exc:
        ctx.link_error = f"{port}: {exc}"
    try:
        yield ctx
    finally:
        if ctx.board is not None:
            board.close()


def run(args: argparse.Namespace, config: UnitConfig | None) -> tuple[list[Check], dict[str, object]]:
    cargs = check_args(vars(args))
    if config is not None:
        report = via_daemon(config, args.check, cargs)
        if report is not None:
            context = {k: v for k, v in report.items() if k not in ("checks", "ok", "exit_code")}
            return [Check.from_dict(c) for c in report["checks"]], context
    port = args.port or (config.serial.port if config else "")
    baud = args.baudrate or (config.serial.baudrate if config else 115200)
    with direct_context(port, baud, config, args.check in BOARD_CHECKS) as ctx:
        checks = run_check(ctx, args.check, cargs)
        return checks, report_context(ctx)


def output_format(args: argparse.Namespace) -> str:
    if args.json:
        return "json"
    return "table" if sys.stdout.isatty() else "plain"


def daemon_serves(config: UnitConfig | None) -> bool:
    sock = config.paths.control_socket if config is not None else None
    return sock is not None and control_socket.is_served(sock)


def main(argv: list[str] | None = None) -> int:
    quiet_logs()
    argv = sys.argv[1:] if argv is None else argv
    if "firmware" in argv[:3] and (argv[0] == "firmware" or argv[0] in ("--config", "--port")):
        from controller.diag.firmware_cli import main as firmware_main  # nalox diag [--config X] firmware

        at = argv.index("firmware")
        rest = argv[:at] + argv[at + 1:]
        return firmware_main(rest[at:at + 1] + rest[:at] + rest[at + 1:] if at else rest)
    try:
        args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return int(exc.code or 0) and EXIT_USAGE
    try:
        config = load_unit_config(args.config) if args.config else None
        if args.check == "restock":
            from controller.diag.restock import run_restock

            return run_restock(args, config)
        if args.check == "ping" and not daemon_serves(config):
            return run_direct_ping(args, config)
        checks, context = run(args, config)
    except UsageError as exc:
        print(f"nalox diag: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except control_socket.ControlError as exc:
        print(f"nalox diag: {exc}", file=sys.stderr)
        return EXIT_CODES["link"]
    except Exception as exc:  # a bug: say so plainly, with the type, and a distinct exit code
        print(f"nalox diag: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    print(render(checks, output_format(args), context))
    return exit_code(checks)


def print_json(obj: Mapping[str, object]) -> None:
    print(json.dumps(obj, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())
