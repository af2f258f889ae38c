"""`nalox diag firmware keygen|sign|update`: signed firmware bundles sent to the board over the serial link.

    nalox diag firmware keygen --out signing.pem            # prints the public key for unit.toml
    nalox diag firmware sign --key signing.pem --version 0.3.0 --model nalox-esp32-6 --out fw-0.3.0.zip
    nalox diag firmware update --config unit.toml fw-0.3.0.zip     # keys and port from the config
    nalox diag firmware update --port /dev/nalox-dispenser --trusted-key BASE64 fw-0.3.0.zip

Exit codes: 0 done, 2 usage or config, 11 refused before sending (signature, model, downgrade,
door closed, protocol 1 board), 12 failed during or after sending (the board says what runs now),
1 the board did not answer.
"""

from __future__ import annotations

import argparse
import queue
import sys
from collections.abc import Callable
from pathlib import Path

import firmware_py
from controller.diag.firmware_bundle import BundleError, collect, keygen, load_private_key, read, sign, verify
from controller.diag.firmware_update import UpdateFailed, UpdateRefused, update_board
from controller.serial.board_api import BoardError, BoardEvent

EXIT_OK, EXIT_LINK, EXIT_USAGE, EXIT_REFUSED, EXIT_FAILED = 0, 1, 2, 11, 12
FIRMWARE_SRC = Path(firmware_py.__file__).resolve().parent  # the firmware this package ships


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nalox diag firmware", description="signed firmware bundles for the "
                                "dispenser board", epilog="exit codes: 0 done, 1 board link, 2 usage, "
                                "11 refused before sending, 12 failed (see the message)")
    sub = p.add_subparsers(dest="action", required=True)
    k = sub.add_parser("keygen", help="make a signing key; prints the public key for [firmware] trusted_keys")
    k.add_argument("--out", type=Path, required=True, help="new private key file (PEM)")
    s = sub.add_parser("sign", help="make a signed bundle of a firmware_py directory")
    s.add_argument("--key", type=Path, required=True, help="Ed25519 private key (PEM)")
    s.add_argument("--version", required=True, help="MAJOR.MINOR.PATCH the board will report")
    s.add_argument("--model", required=True, help="board model the bundle is for (HELLO_REPLY model)")
    s.add_argument("--src", type=Path, default=FIRMWARE_SRC, help="firmware_py directory (default: this one)")
    s.add_argument("--out", type=Path, required=True, help="bundle file to write")
    u = sub.add_parser("update", help="check a bundle and send it to the board (service door open)")
    where = u.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="unit.toml: its serial port and [firmware] trusted_keys")
    where.add_argument("--port", help="serial device or pyserial URL (daemon stopped)")
    u.add_argument("--trusted-key", action="append", default=[], dest="trusted",
                   help="with --port: a trusted public key (base64; repeat)")
    u.add_argument("--baudrate", type=int, default=None)
    u.add_argument("--force", action="store_true", help="allow a downgrade or the same version again")
    u.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the new firmware's HELLO")
    u.add_argument("image", type=Path)
    return p


def _port_and_keys(args: argparse.Namespace) -> tuple[str, int, list[str]]:
    if args.port:
        return args.port, args.baudrate or 115200, list(args.trusted)
    from controller.config import ConfigError, load_config
    from controller.diag.cli import daemon_serves

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise BundleError(str(exc)) from None
    if daemon_serves(config):
        raise UpdateRefused("firmware update refused: the unit daemon is running and owns the serial port; "
                            "stop it first (systemctl stop nalox-unit), then run the update")
    keys = list(config.firmware.trusted_keys) + list(args.trusted)
    return config.serial.port, args.baudrate or config.serial.baudrate, keys


def run_update(args: argparse.Namespace) -> int:
    from controller.serial.board_link import SerialBoard

    bundle = read(args.image)
    port, baudrate, keys = _port_and_keys(args)
    key = verify(bundle, keys)  # before the port is even opened
    print(f"bundle {bundle.version} for {bundle.model}: {len(bundle.files)} files, {bundle.size} bytes, "
          f"signed by {key[:12]}...")
    events: queue.Queue[BoardEvent] = queue.Queue()
    with SerialBoard(port, baudrate=baudrate) as board:
        board.start(events.put)
        result = update_board(board, bundle, events, force=args.force, timeout=args.timeout,
                              progress=_progress(bundle.size))
    print(f"\nupdated {result.old_version} -> {result.new_version} in {result.seconds:.1f} s "
          f"({result.chunks} chunks, {result.wire_bytes} bytes on the line)")
    return EXIT_OK


def _progress(total: int) -> Callable[[int, int], None]:
    last = [-1]

    def show(sent: int, _total: int) -> None:
        percent = sent * 100 // max(1, total)
        if percent // 10 != last[0] and sys.stdout.isatty():
            last[0] = percent // 10
            print(f"\rsent {sent}/{total} bytes ({percent} %)", end="", flush=True)
    return show


def main(argv: list[str]) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) and EXIT_USAGE
    try:
        if args.action == "keygen":
            print(keygen(args.out))
            return EXIT_OK
        if args.action == "sign":
            made = sign(collect(args.src), load_private_key(args.key), args.version, args.model, args.out)
            print(f"{args.out}: {made.version} for {made.model}, {len(made.files)} files, {made.size} bytes")
            return EXIT_OK
        return run_update(args)
    except UpdateRefused as exc:
        print(f"nalox diag firmware: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except BundleError as exc:
        print(f"nalox diag firmware: {exc}", file=sys.stderr)
        return EXIT_REFUSED if args.action == "update" else EXIT_USAGE
    except UpdateFailed as exc:
        print(f"nalox diag firmware: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BoardError as exc:
        print(f"nalox diag firmware: board link: {exc}", file=sys.stderr)
        return EXIT_LINK
