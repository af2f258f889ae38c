"""Runs technician diagnostics by name against a DiagContext, builds the full report, and answers the
control socket's requests inside the daemon (diag checks and the blind-count restock)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date
from typing import Any

from pydantic import TypeAdapter
from typing_extensions import TypedDict  # pydantic validates only this TypedDict on Python 3.11

from controller.diag import board_checks as dc
from controller.diag import host_checks as dh
from controller.diag.result import Check, passed, report_dict, warned

CHECKS = ("ping", "sensors", "motor-test", "drop-test", "broker", "ledger", "video", "disk", "report")


class CheckArgs(TypedDict, total=False):
    """The options of a check (the `nalox diag` flags, or a control-socket request's `args`); each check
    reads its own and has a default for each."""

    count: int  # ping: round trips
    button: float  # sensors: seconds to wait for a button press (0: no button test)
    column: int  # motor-test
    columns: list[int]  # drop-test (none: every column)
    seconds: float  # video: seconds of each clip
    on_screen: bool  # video: on the display


_CHECK_ARGS = TypeAdapter(CheckArgs)


def check_args(given: Mapping[str, Any]) -> CheckArgs:
    """A check's options from JSON or the command line (None: not given; other keys ignored); a value
    of the wrong kind raises pydantic's ValidationError naming the option."""
    return _CHECK_ARGS.validate_python(
        {k: v for k, v in given.items() if k in CheckArgs.__annotations__ and v is not None})


def run_check(ctx: dc.DiagContext, check: str, args: CheckArgs) -> list[Check]:
    """One subcommand's checks. Board checks fail with a `link` check when no board answers."""
    if check == "ping":
        return dc.check_ping(ctx, count=args.get("count", 20))
    if check == "sensors":
        return dc.check_sensors(ctx, button_wait_s=args.get("button", 0.0))
    if check == "motor-test":
        return dc.check_motor(ctx, args["column"])
    if check == "drop-test":
        return dc.check_drop(ctx, args.get("columns") or None)
    if check == "broker":
        return dh.check_broker(ctx.config, ctx.clock)
    if check == "ledger":
        return dh.check_ledger(ctx.config, ctx.daemon.ledger if ctx.daemon else None, ctx.clock)
    if check == "video":
        return dh.check_video(ctx.config, seconds=args.get("seconds", 1.0),
                              on_screen=args.get("on_screen", False))
    if check == "disk":
        return dh.check_disk(ctx.config)
    if check == "report":
        return full_report(ctx, args)
    raise ValueError(f"check: expected one of {', '.join(CHECKS)}, got {check!r}")


def full_report(ctx: dc.DiagContext, args: CheckArgs) -> list[Check]:
    """Everything at once: the daemon's mode and alarms (when it runs), link, sensors, motors (door open
    only), broker, ledger, videos, disk."""
    unit = [check_unit(ctx.daemon)] if ctx.daemon is not None else []
    return unit + _board_part(ctx, args) + [
        *dh.check_broker(ctx.config, ctx.clock),
        *dh.check_ledger(ctx.config, ctx.daemon.ledger if ctx.daemon else None, ctx.clock),
        *dh.check_video(ctx.config, seconds=args.get("seconds", 1.0)),
        *dh.check_disk(ctx.config),
    ]


def _board_part(ctx: dc.DiagContext, args: CheckArgs) -> list[Check]:
    if ctx.board is None:
        board_checks = [dc.link_unreachable(ctx)]
    else:
        board_checks = dc.check_ping(ctx, count=args.get("count", 10))
        board_checks += dc.check_sensors(ctx, button_wait_s=args.get("button", 0.0))
        board_checks += dc.check_all_motors(ctx)
    return board_checks


def check_unit(daemon: dc.UnitView) -> Check:
    """The daemon's mode and active alarms: information for the technician (a warning, never the exit
    code: the checks below find the cause)."""
    state = daemon.snapshot_state()
    alarms = [f"{a.code} ({a.severity}): {a.message}" for a in state.alarms]
    data = {"mode": state.mode, "alarms": [a.model_dump(mode="json") for a in state.alarms],
            "stock": {str(c.column): c.stock for c in state.columns}}
    summary = f"mode {state.mode}, {len(alarms)} active alarm(s)"
    if alarms:
        return warned("unit", summary, expected="no active alarms", found="; ".join(alarms),
                      action="the checks below show the cause; alarms clear when it is fixed", **data)
    return passed("unit", summary, **data)


def report_context(ctx: dc.DiagContext) -> dict[str, object]:
    """Who the report is about: unit, site, board identity, where it ran, when."""
    out: dict[str, object] = {"ts": ctx.clock.now().isoformat(), "via": "daemon" if ctx.daemon else "port"}
    if ctx.config is not None:
        out["unit"] = ctx.config.unit.id
        out["site"] = ctx.config.unit.site
    info = ctx.info
    if info is not None:
        out["board"] = {"board_id": info.board_id, "firmware": info.firmware, "columns": info.columns,
                        "boot_count": info.boot_count, "protocol": info.protocol}
    if ctx.daemon is not None:
        out["mode"] = ctx.daemon.mode
    return out


def daemon_context(daemon: dc.UnitView) -> dc.DiagContext:
    return dc.DiagContext(board=daemon.board, config=daemon.config, daemon=daemon, clock=daemon.clock,
                          info=daemon.board_info)


def build_report(daemon: dc.UnitView, args: CheckArgs | None = None) -> dict[str, object]:
    """The full diagnostic report of the running daemon (its board, ledger and config) as a JSON-ready
    dict: `cmd/diag` over MQTT; `nalox diag report --json` prints the same shape."""
    ctx = daemon_context(daemon)
    return report_dict(full_report(ctx, args or {}), **report_context(ctx))


# ---------------------------------------------------------------- control socket requests (in the daemon)


def handle_request(daemon: dc.UnitView, req: dict[str, Any]) -> dict[str, object]:
    """One control-socket request (a JSON object from the wire) inside the daemon."""
    op = req["op"]
    if op == "hello":
        return {"ok": True, "unit": daemon.config.unit.id, "pid": os.getpid(), "mode": daemon.mode}
    if op == "diag":
        return _diag(daemon, req)
    if op == "restock":
        return restock(daemon, req)
    return {"ok": False, "error": f"expected op hello, diag or restock, got {op!r}", "code": "bad_request"}


def _diag(daemon: dc.UnitView, req: dict[str, Any]) -> dict[str, object]:
    check = req.get("check")
    if check not in CHECKS:
        return {"ok": False, "error": f"expected check one of {', '.join(CHECKS)}, got {check!r}",
                "code": "bad_request"}
    ctx = daemon_context(daemon)
    checks = run_check(ctx, str(check), check_args(req.get("args") or {}))
    return {"ok": True, "report": report_dict(checks, **report_context(ctx))}


def expected_stock(daemon: dc.UnitView, column: int) -> int:
    for col in daemon.snapshot_state().columns:
        if col.column == column:
            return int(col.stock)
    raise KeyError(column)


def restock(daemon: dc.UnitView, req: dict[str, Any]) -> dict[str, object]:
    """Blind count: the technician's count comes in first; only then is it compared with what the ledger
    expected. A discrepancy without a reason is refused with both numbers, so the technician can
    recount or explain, and the restock is recorded only once it is resolved."""
    try:
        column, count = int(req["column"]), int(req["count"])
        found = None if req.get("counted_before") is None else int(req["counted_before"])
        expiry = date.fromisoformat(req["expiry"]) if req.get("expiry") else None
    except (KeyError, TypeError, ValueError) as exc:
        return {"ok": False, "error": f"expected column, count (integers) and expiry YYYY-MM-DD, got {exc}",
                "code": "bad_request"}
    try:
        expected = expected_stock(daemon, column)
    except KeyError:
        return {"ok": False, "error": f"expected a configured column, got column {column}",
                "code": "bad_column"}
    reason = (req.get("reason") or "").strip() or None
    if found is not None and found != expected and reason is None:
        return {"ok": False, "code": "reason_required", "counted_before": found, "expected_before": expected,
                "error": f"expected a reason for the discrepancy: counted {found}, the ledger {expected}"}
    try:
        event = daemon.restock(column, count, counted_before=found, lot=req.get("lot"), expiry=expiry,
                               reason=reason, source="local")
    except Exception as exc:  # CommandRefused(reason) and validation errors say what is wrong
        return {"ok": False, "error": str(exc), "code": "refused"}
    return {"ok": True, "event": event.model_dump(mode="json"), "expected_before": expected}

