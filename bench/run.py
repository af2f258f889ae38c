"""`make bench` / `python -m bench.run [--quick]`: every nalox figure beside a bare-library baseline
measured in the same run on the same machine; prints a table and writes bench/results.json.

Benchmarks are not tests: a measurement that cannot run records why and the run goes on.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import baselines, fleet, rooms
from nalox.broker import DEPLOY, Broker

RESULTS = Path(__file__).resolve().parent / "results.json"


@dataclass(frozen=True)
class Sizes:
    latency_samples: int
    drain_events: int
    ingest_events: int
    idle_seconds: float
    pings: int
    dispenses: int

    @classmethod
    def pick(cls, quick: bool) -> Sizes:
        if quick:
            return cls(200, 10_000, 5_000, 10, 300, 50)
        return cls(1000, 100_000, 20_000, 60, 2000, 200)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    mosq = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()[:1]
    return {
        "load_average_1_5_15": [round(x, 1) for x in os.getloadavg()],  # the machine is shared: say how busy
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1e6, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "mosquitto": mosq[0] if mosq else "unknown",
    }


def guarded(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one measurement; a failure becomes {"error": ...} in the results."""
    print(f"  measuring {name} ...", file=sys.stderr, flush=True)
    start = time.monotonic()
    try:
        out = fn()
    except Exception as e:  # a bench records what failed and goes on
        traceback.print_exc(file=sys.stderr)
        out = {"error": f"{type(e).__name__}: {e}"[:400]}
    out["took_s"] = round(time.monotonic() - start, 1)
    return out


# Measures other parts register (name -> fn(broker port, sizes) -> dict): the kiosk's press -> first
# on-screen feedback and press -> first video frame belong here (with the real player), printed as rows
# "<name> p50/p99 (ms)" when they return p50_ms/p99_ms, and written to results.json under their name.
EXTRA_MEASURES: dict[str, Callable[[int, Sizes], dict[str, Any]]] = {}


def _kiosk() -> Any:
    """bench.kiosk, imported when used (it pulls the kiosk's imaging packages)."""
    from bench import kiosk

    return kiosk


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


MEASURES = (
    "vend_overhead", "outbox_drain", "central_ingest", "unit_footprint", "serial_link", "kiosk", "fleet"
)


def measure_all(sizes: Sizes, quick: bool, only: Sequence[str] = MEASURES) -> dict[str, Any]:
    """Every measure named in `only` (all by default), with the machine and its load."""
    res: dict[str, Any] = {
        "machine": machine(),
        "quick": quick,
        "ran_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    broker_measures: dict[str, Callable[[int], dict[str, Any]]] = {
        "vend_overhead": lambda port: vend_overhead(port, sizes),
        "outbox_drain": lambda port: outbox_drain(port, sizes),
        "central_ingest": lambda port: central_ingest(port, sizes),
        "unit_footprint": lambda port: rooms.footprint(port, sizes.idle_seconds),
    }
    if any(name in only for name in broker_measures) or EXTRA_MEASURES:
        with Broker(DEPLOY / "dev.conf") as broker:
            for name, measure in broker_measures.items():
                if name in only:
                    res[name] = guarded(name.replace("_", " "), functools.partial(measure, broker.port))
            for name, extra in EXTRA_MEASURES.items():  # e.g. the kiosk's press -> first feedback
                res[name] = guarded(name, functools.partial(extra, broker.port, sizes))
    if "serial_link" in only:
        res["serial_link"] = guarded("serial link", lambda: serial_link(sizes))
    if "kiosk" in only:
        res["kiosk"] = guarded("kiosk press latency", lambda: _kiosk().measure(10 if quick else 40))
    if "fleet" in only:  # bench/fleet.py: units per core
        res["fleet"] = guarded("fleet: units per core", lambda: fleet.measure(quick))
    res["machine"]["load_average_after"] = [round(x, 1) for x in os.getloadavg()]
    return res


def vend_overhead(port: int, sizes: Sizes) -> dict[str, Any]:
    """Drop -> PUBACK of the dispense event, against the fair baseline of the same run: a bare SQLite
    synchronous=FULL commit of the rows a vend writes plus a bare paho publish -> PUBACK (paired
    samples summed)."""
    n = sizes.latency_samples
    pub = baselines.puback_samples(port, n)
    commit = baselines.sqlite_full_commits(n)
    base = baselines.summary_ms([a + b for a, b in zip(pub, commit, strict=True)])
    vend = rooms.vend_overhead(port, max(50, n // 5))
    from bench import inproc  # the unit's code, imported when measured

    video = inproc.video_to_dispense(port, max(10, n // 50))
    return {
        "video_complete_to_dispense_frame": video,
        "unit_drop_to_puback": vend,
        "baseline_commit_plus_puback": base,
        "baseline_publish_to_puback": baselines.summary_ms(pub),
        "baseline_sqlite_full_commit": baselines.summary_ms(commit),
        "ratio_p99": ratio(vend["p99_ms"], base["p99_ms"]),
        "target": "ratio_p99 <= 1.5",
        "met": vend["p99_ms"] <= 1.5 * base["p99_ms"],
    }


def outbox_drain(port: int, sizes: Sizes) -> dict[str, Any]:
    window = unit_inflight_window()
    base = baselines.window_publish(port, sizes.drain_events, window=window)
    drain = rooms.outbox_drain(port, sizes.drain_events)
    return {
        "events": sizes.drain_events,
        "drain_events_per_s": round(drain["events_per_s"]),
        "baseline_window_publisher_per_s": round(base),
        "window": window,
        "ratio": ratio(drain["events_per_s"], base),
        "target": "ratio >= 0.5",
        "met": drain["events_per_s"] >= 0.5 * base,
        "detail": drain,
    }


def unit_inflight_window() -> int:
    """The reporter's default in-flight window, so the baseline publisher gets the same one."""
    from controller.mqtt.client import MqttSettings

    return int(MqttSettings().inflight_window)


def central_ingest(port: int, sizes: Sizes) -> dict[str, Any]:
    n = sizes.ingest_events
    base = baselines.live_subscribe(port, n)
    out: dict[str, Any] = {"events": n, "baseline_subscriber_per_s": round(base)}
    for db in ("sqlite", "postgresql"):
        for workers in (1, 2):
            key = f"ingest_{db}_{workers}w_per_s"
            try:
                rate = rooms.central_ingest(port, n, db, workers)
                out[key] = round(rate)
                out[f"ratio_{db}_{workers}w"] = ratio(rate, base)
            except Exception as e:  # one store failing must not hide the other's figure
                out[key] = None
                out[f"error_{db}_{workers}w"] = f"{type(e).__name__}: {e}"[:300]
    out["target"] = "ratio with 1 worker >= 0.5"
    out["met"] = all((out.get(f"ratio_{db}_1w") or 0) >= 0.5 for db in ("sqlite", "postgresql"))
    return out


def serial_link(sizes: Sizes) -> dict[str, Any]:
    base = baselines.pty_echo_rtt(sizes.pings)
    cross = baselines.pty_echo_rtt(sizes.pings, process=True)
    link = rooms.serial_link(sizes.pings, sizes.dispenses)
    noisy = rooms.noisy_ping(sizes.pings // 2, 0.05)
    return {
        "noisy_ping_rtt": noisy,
        "noise": 0.05,
        "targets": {"ping_p99_ms": 1.0, "noisy_ping_p99_ms": 50.0},
        "met": link["ping"]["p99_ms"] <= 1.0 and noisy["p99_ms"] <= 50.0,
        "ping_rtt": link["ping"],
        "raw_pty_echo_rtt": base,
        "process_pty_echo_rtt": cross,
        "ratio_rtt_p99_process_echo": ratio(link["ping"]["p99_ms"], cross["p99_ms"]),
        "ratio_rtt_p50": ratio(link["ping"]["p50_ms"], base["p50_ms"]),
        "ratio_rtt_p99": ratio(link["ping"]["p99_ms"], base["p99_ms"]),
        "dispenses_per_s": link["dispenses_per_s"],
        "dispense_spin_ms": link["spin_ms"],
    }


# ------------------------------------------------------------------ table


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}" if v < 10 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


Row = tuple[str, str, str, str, str]  # measure, nalox, baseline, ratio, target


def _measured(
    name: str, figures: dict[str, Any], rows_of: Callable[[dict[str, Any]], list[Row]]
) -> list[Row]:
    """A measure's rows: none when it did not run, one error row when it failed, else rows_of(figures)."""
    if not figures:
        return []
    if "error" in figures:
        return [(name, "error", "", "", figures["error"][:60])]
    return rows_of(figures)


def _vend_rows(v: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    u = v["unit_drop_to_puback"]
    b: Any = v.get("baseline_commit_plus_puback", v.get("baseline_publish_to_puback"))
    rows.append(
        (
            "vend overhead p50 (ms)",
            fmt(u["p50_ms"]),
            fmt(b["p50_ms"]),
            fmt(ratio(u["p50_ms"], b["p50_ms"])),
            "",
        )
    )
    rows.append(
        ("vend overhead p99 (ms)", fmt(u["p99_ms"]), fmt(b["p99_ms"]), fmt(v["ratio_p99"]), "<= 1.5x")
    )
    for part, label in (
        ("drop_to_publish", "drop -> publish"),
        ("publish_to_puback", "publish -> PUBACK"),
    ):
        if part in u:
            p50, p99 = u[part]["p50_ms"], u[part]["p99_ms"]
            rows.append((f"  of which {label} p50/p99", f"{fmt(p50)} / {fmt(p99)}", "", "", ""))
    return rows


def _serial_rows(s: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for p, target in (("p50", ""), ("p99", "<= 1 ms")):
        rows.append(
            (
                f"serial ping rtt {p} (ms)",
                fmt(s["ping_rtt"][f"{p}_ms"]),
                fmt(s["raw_pty_echo_rtt"][f"{p}_ms"]),
                fmt(s[f"ratio_rtt_{p}"]),
                target,
            )
        )
    if "process_pty_echo_rtt" in s:
        e = s["process_pty_echo_rtt"]
        rows.append(
            (
                "  echo by another process p50/p99 (ms)",
                f"{fmt(e['p50_ms'])} / {fmt(e['p99_ms'])}",
                "",
                fmt(s.get("ratio_rtt_p99_process_echo")),
                "",
            )
        )
    if "noisy_ping_rtt" in s:
        n = s["noisy_ping_rtt"]
        rows.append(
            (
                f"serial ping p50/p99, {s['noise']:.0%} noise (ms)",
                f"{fmt(n['p50_ms'])} / {fmt(n['p99_ms'])}",
                "",
                "",
                "p99 <= 50 ms",
            )
        )
    rows.append(
        ("dispenses/s over a pty", fmt(s["dispenses_per_s"]), "", "", f"spin {s['dispense_spin_ms']} ms")
    )
    return rows


def table_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(measure, nalox, baseline, ratio, target) rows; missing figures show the error."""
    rows: list[tuple[str, str, str, str, str]] = []
    v = r.get("vend_overhead", {})
    rows += _measured("vend overhead drop->PUBACK", v, _vend_rows)
    if "video_complete_to_dispense_frame" in v:
        w = v["video_complete_to_dispense_frame"]
        rows.append(
            (
                "video complete -> DISPENSE frame p50/p99 (ms)",
                f"{fmt(w['p50_ms'])} / {fmt(w['p99_ms'])}",
                "",
                "",
                "p99 <= 20 ms",
            )
        )
    d = r.get("outbox_drain", {})
    rows.append(
        (
            "outbox drain (events/s)",
            fmt(d.get("drain_events_per_s", d.get("error", "")[:40])),
            fmt(d.get("baseline_window_publisher_per_s")),
            fmt(d.get("ratio")),
            ">= 0.5x",
        )
    )
    c = r.get("central_ingest", {})
    for db in ("sqlite", "postgresql"):
        for w in (1, 2):
            val = c.get(f"ingest_{db}_{w}w_per_s")
            shown = (
                fmt(val)
                if val is not None
                else "error: " + str(c.get(f"error_{db}_{w}w", c.get("error")))[:30]
            )
            rows.append(
                (
                    f"ingest {db} {w} worker{'s' if w > 1 else ''} (ev/s)",
                    shown,
                    fmt(c.get("baseline_subscriber_per_s")),
                    fmt(c.get(f"ratio_{db}_{w}w")),
                    ">= 0.5x" if w == 1 else "",
                )
            )
    f = r.get("unit_footprint", {})
    for key, label, target in (
        ("rss_mb", "unit daemon rss (MB)", "<= 40"),
        ("idle_cpu_percent_daemon", "unit idle cpu, daemon (% of a core)", "<= 0.3"),
        ("idle_cpu_percent", "unit idle cpu, with player (%)", ""),
        ("start_to_ready_s", "unit start-to-ready (s)", "<= 0.8"),
        ("cpu_to_ready_s", "  the daemon's own CPU until ready (s)", ""),
    ):
        value = f.get(key, f.get("error", "")[:40] if key == "rss_mb" else None)
        bare = f.get(f"baseline_bare_libraries_{key}")
        rows.append((label, fmt(value), fmt(bare), fmt(ratio(f.get(key), bare)), target))
    if "dev_venv_rss_mb" in f:
        rows.append(
            (
                "  same daemon in the dev venv: rss / ready / cpu",
                f"{fmt(f['dev_venv_rss_mb'])} MB / {fmt(f['dev_venv_start_to_ready_s'])} s / "
                f"{fmt(f.get('dev_venv_cpu_to_ready_s'))} s",
                "",
                "",
                "",
            )
        )
    s = r.get("serial_link", {})
    rows += _measured("serial link", s, _serial_rows)
    rows += _kiosk().table_rows(r.get("kiosk", {}))
    rows += fleet.table_rows(r.get("fleet", {}))
    for name in EXTRA_MEASURES:
        e = r.get(name, {})
        if "p99_ms" in e:
            rows.append(
                (
                    f"{name} p50/p99 (ms)",
                    f"{fmt(e.get('p50_ms'))} / {fmt(e['p99_ms'])}",
                    "",
                    "",
                    str(e.get("target", "")),
                )
            )
    return rows


def markdown_table(rows: Sequence[Sequence[str]], note: str) -> str:
    """Rows (the first is the head) as a Markdown table, each column padded to its widest cell, and a
    note under it after a blank line (what ran, where)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join([*lines, "", note])


def table(r: dict[str, Any]) -> str:
    head = ("measure", "nalox", "baseline", "ratio", "target")
    m = r["machine"]
    return markdown_table(
        [head, *table_rows(r)],
        f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, {m['os']}, "
        f"Python {m['python']}, {m['mosquitto']}; {'quick' if r['quick'] else 'full'} run {r['ran_at']}, "
        f"load average {m.get('load_average_1_5_15')} before, {m.get('load_average_after', '-')} after",
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes, 10 s idle window (about 2 minutes)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--show", action="store_true", help="print the table of the last results file and stop")
    p.add_argument(
        "--only",
        type=lambda v: [x for x in v.split(",") if x],
        default=list(MEASURES),
        help=f"comma-separated measures among {','.join(MEASURES)} (default all); the others keep "
        "their figures of the results file",
    )
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.show:
        print(table(json.loads(args.out.read_text())))
        return 0
    unknown = sorted(set(args.only) - set(MEASURES))
    if unknown:
        p.error(f"--only: expected measures among {', '.join(MEASURES)}, got {', '.join(unknown)}")
    results = measure_all(Sizes.pick(args.quick), args.quick, args.only)
    if args.out.exists():  # keep what `make bench-scale` wrote, and the measures not run this time
        kept = json.loads(args.out.read_text())
        keep = {"scale", *(set(MEASURES) - set(results))}
        results.update({k: v for k, v in kept.items() if k in keep})
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(table(results))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
