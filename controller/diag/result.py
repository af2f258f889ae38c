"""Results of technician diagnostics: one `Check` per thing looked at, the exit code per check family,
and the rendering as a terminal table, plain text or JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from controller.errors import ControllerError

Status = Literal["pass", "warn", "fail", "skipped"]

# Exit codes of `nalox diag`, one per check family (documented in docs/technician.md).
EXIT_OK = 0
EXIT_USAGE = 2   # the command line or the config is wrong
EXIT_INTERNAL = 70  # a bug in nalox diag (EX_SOFTWARE)
EXIT_CODES: dict[str, int] = {
    "link": 1,       # no board answers: port missing or busy, no HELLO reply, daemon socket refused
    "ping": 1,       # round trips lost or too slow (a link problem too)
    "sensors": 3,    # door, temperature, drop sensor, motor state, board faults, button test
    "motor": 4,      # motor-test: jam, dead motor
    "drop": 5,       # drop-test: no drop seen, jam
    "broker": 6,     # broker unreachable, TLS handshake, certificate expired
    "ledger": 7,     # outbox too deep or too old
    "video": 8,      # a clip missing or not playable
    "disk": 9,       # data disk nearly full
    "restock": 10,   # restock refused: discrepancy without a reason, bad column, daemon not running
}


class UsageError(ControllerError):
    """The command line or the unit config is wrong (which port, which column, a count); exit code 2."""


# Report order: the first failing family in this order gives the exit code of `report`.
FAMILY_ORDER = ("link", "ping", "sensors", "motor", "drop", "broker", "ledger", "video", "disk", "restock")


@dataclass
class Check:
    """One diagnostic result; a failing or warning check says what was expected, what was found and
    what the technician should do."""

    name: str  # "ping", "sensors.door", "motor.column3", "broker.tls", ...
    status: Status
    summary: str
    expected: str | None = None
    found: str | None = None
    action: str | None = None
    data: dict[str, object] = field(default_factory=dict)  # figures behind the verdict (JSON-ready)

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if v is not None and v != {}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Check:
        """A check from a report's JSON (the daemon's answer on the control socket)."""
        return cls(name=d["name"], status=d["status"], summary=d["summary"], expected=d.get("expected"),
                   found=d.get("found"), action=d.get("action"), data=d.get("data") or {})


def passed(name: str, summary: str, **data: object) -> Check:
    return Check(name, "pass", summary, data=data)


def failed(name: str, summary: str, expected: str, found: str, action: str, **data: object) -> Check:
    return Check(name, "fail", summary, expected=expected, found=found, action=action, data=data)


def warned(name: str, summary: str, expected: str, found: str, action: str, **data: object) -> Check:
    return Check(name, "warn", summary, expected=expected, found=found, action=action, data=data)


def skipped(name: str, reason: str) -> Check:
    return Check(name, "skipped", reason)


def exit_code(checks: list[Check]) -> int:
    """0 when nothing failed, else the code of the first failing family in FAMILY_ORDER."""
    failing = {c.family for c in checks if c.status == "fail"}
    for family in FAMILY_ORDER:
        if family in failing:
            return EXIT_CODES[family]
    return EXIT_INTERNAL if failing else EXIT_OK


def report_dict(checks: list[Check], **context: object) -> dict[str, object]:
    code = exit_code(checks)
    return {"ok": code == 0, "exit_code": code, **context, "checks": [c.as_dict() for c in checks]}


# ---------------------------------------------------------------- rendering

MARK = {"pass": "ok", "warn": "WARN", "fail": "FAIL", "skipped": "skip"}


def render_plain(checks: list[Check]) -> str:
    """One line per check, then the expected/found/do lines of anything not passing (for pipes, logs)."""
    lines = []
    for c in checks:
        lines.append(f"{c.name}: {c.status}: {c.summary}")
        lines += _advice(c, indent="  ")
    return "\n".join(lines)


def render_table(checks: list[Check]) -> str:
    """A readable table for a terminal; the advice of failing checks under it."""
    width = max([len(c.name) for c in checks] + [5])
    head = f"{'CHECK':<{width}}  {'RESULT':<6}  DETAIL"
    rows = [head, "-" * len(head)]
    rows += [f"{c.name:<{width}}  {MARK[c.status]:<6}  {c.summary}" for c in checks]
    advice = [c for c in checks if c.status in ("fail", "warn")]
    for c in advice:
        rows += ["", f"{MARK[c.status]} {c.name}: {c.summary}"] + _advice(c, indent="    ")
    rows += ["", verdict(checks)]
    return "\n".join(rows)


def verdict(checks: list[Check]) -> str:
    code = exit_code(checks)
    if code:
        return f"exit code {code}: see docs/technician.md"
    warnings = sum(c.status == "warn" for c in checks)
    return f"no check failed; {warnings} warning(s) above" if warnings else "all checks passed"


def _advice(c: Check, indent: str) -> list[str]:
    out = []
    if c.status in ("fail", "warn"):
        if c.expected:
            out.append(f"{indent}expected: {c.expected}")
        if c.found:
            out.append(f"{indent}found:    {c.found}")
        if c.action:
            out.append(f"{indent}do:       {c.action}")
    return out


def render(checks: list[Check], fmt: str, context: Mapping[str, object] | None = None) -> str:
    if fmt == "json":
        return json.dumps(report_dict(checks, **(context or {})), indent=2, default=str)
    if fmt == "table":
        return render_table(checks)
    return render_plain(checks)
