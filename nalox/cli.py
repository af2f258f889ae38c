"""`nalox` entry point: a thin dispatcher over each room's own command-line module."""

from __future__ import annotations

import importlib
import sys

# subcommand -> module with a `main(argv: list[str]) -> int`
ROOMS = {
    "unit": ("controller.cli", "the unit daemon: run, config-example"),
    "diag": ("controller.diag.cli", "technician diagnostics: ping, sensors, motor-test, report, ..."),
    "sim": ("simulator.cli", "simulated dispenser board: board, ctl"),
    "inventory": ("inventory.cli", "central inventory service: serve"),
    "demo": ("nalox.demo", "broker + simulated board + unit + inventory on this machine"),
}


def usage() -> str:
    lines = ["usage: nalox COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in ROOMS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    if args[0] == "--version":
        from nalox import __version__

        print(__version__)
        return 0
    entry = ROOMS.get(args[0])
    if entry is None:
        print(f"nalox: unknown command {args[0]!r}; expected one of {', '.join(ROOMS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(entry[0])
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
