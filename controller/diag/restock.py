"""`nalox diag restock`: record kits loaded into a column through the running daemon, with a blind count.

The technician first counts the kits left in the column and enters that number (a prompt on a
terminal, `--found` otherwise) without being shown what the ledger expects. Only then are the two
compared; a discrepancy must be explained (`--reason`, or a prompt) and is recorded in the restock
event with both numbers."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import date
from typing import Any

from controller import control_socket
from controller.config import UnitConfig
from controller.diag.result import EXIT_CODES, EXIT_OK, EXIT_USAGE

EXIT_RESTOCK = EXIT_CODES["restock"]
Ask = Callable[[str], str]


def run_restock(args: argparse.Namespace, config: UnitConfig | None, ask: Ask | None = None,
                interactive: bool | None = None) -> int:
    interactive = sys.stdin.isatty() if interactive is None else interactive
    ask = ask or input
    problem = _usage_problem(args, config, interactive)
    if problem:
        print(f"nalox diag restock: {problem}", file=sys.stderr)
        return EXIT_USAGE
    assert config is not None  # _usage_problem refused a missing config
    try:
        return _restock(args, config, ask, interactive)
    except (EOFError, KeyboardInterrupt):
        print("\nnalox diag restock: cancelled, nothing recorded", file=sys.stderr)
        return EXIT_USAGE


def _restock(args: argparse.Namespace, config: UnitConfig, ask: Ask, interactive: bool) -> int:
    found = args.found if args.found is not None else ask_count(ask, args.column)
    sock = config.paths.control_socket
    assert sock is not None  # _usage_problem refused a config without one
    request = {"op": "restock", "column": args.column, "count": args.count, "counted_before": found,
               "lot": args.lot, "expiry": args.expiry, "reason": args.reason}
    try:
        answer = control_socket.request(sock, request)
        if answer.get("code") == "reason_required" and interactive:
            print(f"Ledger expected {answer['expected_before']} kits in column {args.column}; you counted "
                  f"{found}. Count again if unsure.")
            request["reason"] = ask_text(ask, "Reason for the difference: ")
            answer = control_socket.request(sock, request)
    except control_socket.DaemonNotRunning as exc:
        print(f"nalox diag restock: {exc}: a restock is recorded by the unit daemon in its ledger; "
              "start it (`systemctl start nalox-unit`) and run this again", file=sys.stderr)
        return EXIT_RESTOCK
    return _print_answer(answer, args)


def _usage_problem(args: argparse.Namespace, config: UnitConfig | None, interactive: bool) -> str | None:
    if config is None:
        return "expected --config unit.toml (a restock is recorded by the unit daemon), got only --port"
    if config.paths.control_socket is None:
        return f"expected paths.control_socket in {args.config}, found none"
    if args.found is None and not interactive:
        return "blind count: expected --found M (kits found in the column before loading), got none"
    if args.expiry:
        try:
            date.fromisoformat(args.expiry)
        except ValueError:
            return f"--expiry: expected YYYY-MM-DD, got {args.expiry!r}"
    for name in ("count", "found"):
        value = getattr(args, name)
        if value is not None and value < 0:
            return f"--{name}: expected 0 or more kits, got {value}"
    return None


def ask_count(ask: Ask, column: int) -> int:
    while True:
        raw = ask(f"Count the kits left in column {column} BEFORE loading. How many did you find? ").strip()
        if raw.isdigit():
            return int(raw)
        print(f"expected a whole number of kits, got {raw!r}")


def ask_text(ask: Ask, prompt: str) -> str:
    while True:
        text = ask(prompt).strip()
        if text:
            return text
        print("expected a reason (for example: 'kit taken from the open door', 'miscount last visit')")


def _print_answer(answer: dict[str, Any], args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(answer, indent=2, default=str))
    if not answer.get("ok"):
        if answer.get("code") == "reason_required":
            msg = (f"counted {answer['counted_before']} kits, ledger expected {answer['expected_before']}: "
                   "a discrepancy needs --reason TEXT (or recount and give the new --found)")
        else:
            msg = str(answer.get("error"))
        print(f"nalox diag restock: refused: {msg}", file=sys.stderr)
        return EXIT_RESTOCK
    if not args.json:
        print(describe(answer["event"]))
    return EXIT_OK


def describe(event: dict[str, Any]) -> str:
    line = (f"column {event['column']}: found {event.get('counted_before')}, ledger expected "
            f"{event.get('expected_before')}")
    if event.get("discrepancy"):
        line += f", discrepancy {event['discrepancy']:+d} (reason: {event.get('reason')})"
    line += f"; now {event['stock_after']} kits"
    if event.get("lot"):
        line += f", lot {event['lot']}"
    if event.get("expiry"):
        line += f", expiry {event['expiry']}"
    return line + f"; restock event seq {event['seq']} recorded"
