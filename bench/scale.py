"""`make bench-scale` / `python -m bench.scale`: the central service at state scale on PostgreSQL.

Loads a schema of its own in the test database with a state's fleet (2,000 units by default) and years
of history (10^7 events over five years by default: dispenses with their videos, failures, restocks
with lots and expiry, door, alarm and temperature events; alerts and their history), with COPY and the
indexes built after the load; then serves it with `nalox inventory serve` and measures with wrk at a
few concurrent users every page, report and JSON API call (p50/p95/p99), the ingest rate with all those
rows present against a bare paho subscriber in the same run, and the service's memory. A loaded schema
is reused by the next run of the same size (--reload to load again). Results go to
bench/results.json under "scale" (the other measures there are kept) and the table is printed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
import psycopg

from bench import baselines, rooms
from bench.run import RESULTS, guarded, machine, markdown_table, ratio
from nalox.access import demo_access
from nalox.broker import DEPLOY, Broker
from nalox.central_api import CentralApi
from nalox.supervision import NALOX, Proc
from nalox.waiting import wait_until

PG = "postgresql://postgres@127.0.0.1/test"
SCHEMA = "nalox_scale"
LUA = Path(__file__).resolve().parent / "wrk_report.lua"
FORMAT = "v4"
PROGRAM = "Jail vending"
PERSON_TYPES = ("dispense", "video", "vend_failed", "out_of_stock")
KIT_TIME_GRANULARITY_S = 3600  # the service's default (privacy.kit_time_granularity_s)
TEMPERATURE_DAYS = 90  # the temperature history the service keeps (temperature_history.keep_days)
BUCKET_S = 900  # bump when the generated data changes shape (a loaded schema of another format is reloaded)
YEARS = 5
COLUMNS = 4
SITE_SIZE = 8  # units per site


def url(schema: str = SCHEMA) -> str:
    return f"{PG}?options={quote(f'-csearch_path={schema}')}"


def progress(text: str) -> None:
    print(f"  [{datetime.now(UTC):%H:%M:%S}] {text}", file=sys.stderr, flush=True)


def unit_id(i: int) -> str:
    return f"st-{i:04d}"


# ------------------------------------------------------------------ generating


class Day:
    """Day strings by day number (a cache: formatting a datetime per event is the slow part)."""

    def __init__(self) -> None:
        self._cache: dict[int, str] = {}

    def __call__(self, n: int) -> str:
        s = self._cache.get(n)
        if s is None:
            s = self._cache[n] = (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=n)).strftime("%Y-%m-%d")
        return s


class UnitHistory:
    """One unit's five years: what the generator leaves behind besides the event rows."""

    def __init__(self) -> None:
        self.seq = 0
        self.stock = [0] * COLUMNS
        self.stock_seq = [0] * COLUMNS
        self.stock_ts = [""] * COLUMNS
        self.lot = [""] * COLUMNS
        self.expiry = [""] * COLUMNS
        self.last_ts = ""


def event_lines(
    ui: int,
    n: int,
    start: float,
    end: float,
    rng: random.Random,
    h: UnitHistory,
    day: Day,
    received: str,
    site: str,
) -> Iterator[str]:
    """About n COPY text lines for unit number ui (at `site`) between the epoch seconds start and end."""
    unit = unit_id(ui)
    cycles = max(1, n // 3)
    gap = (end - start) / cycles
    t = start + rng.random() * gap
    restock_n = 0

    def line(
        type_: str,
        body: str,
        *,
        col: str = "\\N",
        product: str = "\\N",
        doses: str = "\\N",
        stock_after: str = "\\N",
        via: str = "\\N",
        phase: str = "\\N",
        lang: str = "\\N",
        disc: str = "\\N",
        lot: str = "\\N",
    ) -> str:
        """One COPY line of type_ with its JSON body; the columns not given are NULL (\\N)."""
        h.seq += 1
        d = int(t // 86400)
        s = t - d * 86400
        if type_ in PERSON_TYPES:  # stored at the privacy granularity, as the service keeps them
            ts = f"{day(d)}T{int(s // 3600):02d}:00:00.000000Z"
        else:
            ts = f"{day(d)}T{int(s // 3600):02d}:{int(s % 3600 // 60):02d}:{s % 60:09.6f}Z"
        h.last_ts = ts
        eid = f"{rng.getrandbits(128):032x}"
        payload = (
            f'{{"schema_version":1,"event_id":"{eid}","seq":{h.seq},"ts":"{ts}","unit":"{unit}",'
            f'"type":"{type_}",{body}}}'
        )
        return (
            f"{unit}\t{eid}\t{h.seq}\t{type_}\t{ts}\t{ts[:7]}\t{col}\t{product}\t{doses}\t{stock_after}\t"
            f"{via}\t{phase}\t{lang}\t{disc}\t{payload}\t{received}\t{site}\t{PROGRAM}\t{lot}\n"
        )

    def restock(c: int, source: str) -> Iterator[str]:
        nonlocal restock_n
        restock_n += 1
        year = datetime.fromtimestamp(t, UTC).year
        h.lot[c] = f"L{year}-{ui:04d}-{restock_n}"
        h.expiry[c] = f"{year + 2}-{rng.randint(1, 12):02d}-28"
        counted = h.stock[c] + (rng.choice((-1, 1)) if rng.random() < 0.05 else 0)
        disc = counted - h.stock[c]
        before, h.stock[c] = h.stock[c], 30
        yield line("door", '"open":true')
        yield line(
            "restock",
            f'"column":{c + 1},"added":{30 - before},"stock_after":30,'
            f'"lot":"{h.lot[c]}","expiry":"{h.expiry[c]}",'
            f'"expected_before":{before},"counted_before":{counted},"discrepancy":{disc},'
            f'"reason":{"null" if not disc else chr(34) + "miscount" + chr(34)},"source":"{source}"',
            col=str(c + 1),
            stock_after="30",
            disc=str(disc),
            lot=h.lot[c],
        )
        h.stock_seq[c], h.stock_ts[c] = h.seq, h.last_ts
        yield line("door", '"open":false')

    for c in range(COLUMNS):
        yield from restock(c, "initial")
    while t < end:
        lang = "es" if rng.random() < 0.3 else "en"
        r = rng.random()
        if r < 0.004:
            celsius = rng.choice((2.5, 31.5))
            yield line(
                "temperature",
                f'"celsius":{celsius},"band":"storage","state":"entered","lots":["{h.lot[0]}"],"seconds_out_of_range":0.0',
            )
            t += 600
            yield line(
                "temperature",
                f'"celsius":20.0,"band":"storage","state":"left","lots":["{h.lot[0]}"],"seconds_out_of_range":600.0',
            )
        elif r < 0.006:
            yield line(
                "alarm",
                '"code":"jam","state":"raised","severity":"warning","message":"column jammed","column":1',
            )
        yield line("video", f'"phase":"started","language":"{lang}"', phase="started", lang=lang)
        if rng.random() < 0.08:
            yield line(
                "video",
                f'"phase":"abandoned","language":"{lang}","position_s":4.0',
                phase="abandoned",
                lang=lang,
            )
        else:
            t += 40
            yield line(
                "video",
                f'"phase":"completed","language":"{lang}","position_s":45.0',
                phase="completed",
                lang=lang,
            )
            c = rng.randrange(COLUMNS)
            if h.stock[c] == 0:
                yield line(
                    "out_of_stock",
                    f'"product":"nasal-4mg","language":"{lang}"',
                    product="nasal-4mg",
                    lang=lang,
                )
            elif rng.random() < 0.03:
                yield line("vend_failed", '"reason":"jammed","attempts":[]')
            else:
                via = "test" if rng.random() < 0.01 else "video"
                h.stock[c] -= 1
                yield line(
                    "dispense",
                    f'"column":{c + 1},"product":"nasal-4mg","doses":2,'
                    f'"lot":"{h.lot[c]}","expiry":"{h.expiry[c]}",'
                    f'"command_id":{h.seq},"language":"{lang}","via":"{via}","stock_after":{h.stock[c]}',
                    col=str(c + 1),
                    product="nasal-4mg",
                    doses="2",
                    stock_after=str(h.stock[c]),
                    via=via,
                    lang=lang,
                    lot=h.lot[c],
                )
                h.stock_seq[c], h.stock_ts[c] = h.seq, h.last_ts
        t += rng.expovariate(1 / gap)
        if t < end and min(h.stock) < 3 and rng.random() < 0.5:
            c = h.stock.index(min(h.stock))
            yield from restock(c, "local")


def state_json(unit: str, site: str, h: UnitHistory, now: datetime, online: bool) -> str:
    from schemas.models import ColumnState, UnitState

    return UnitState(
        unit=unit,
        site=site,
        ts=now,
        mode="vending" if online else "service",
        firmware_version="1.4.0",
        config_version="2026-11",
        columns=[
            ColumnState(
                column=c + 1,
                product="nasal-4mg",
                capacity=30,
                par=5,
                stock=h.stock[c],
                lot=h.lot[c],
                expiry=datetime.strptime(h.expiry[c], "%Y-%m-%d").date(),
            )
            for c in range(COLUMNS)
        ],
        outbox_depth=0,
        last_seq=h.seq,
    ).model_dump_json()


def load(units: int, events: int, schema: str) -> dict[str, Any]:
    """Drop and fill the schema; returns how long each step took."""
    from inventory import rollups
    from inventory.store import open_store

    took: dict[str, float] = {}
    t0 = time.monotonic()
    with psycopg.connect(PG, autocommit=True) as admin:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    store = open_store(PG, schema=schema)  # every migration applied, tables empty
    store.close()
    conn = psycopg.connect(url(schema), autocommit=True)
    conn.execute("SET maintenance_work_mem = '512MB'")
    conn.execute("SET work_mem = '256MB'")
    conn.execute("ALTER TABLE events DROP CONSTRAINT events_pkey")
    indexes = {
        r[0]: r[1]
        for r in conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = 'events'",
            (schema,),
        ).fetchall()
    }
    for name in indexes:
        conn.execute(f"DROP INDEX {name}")
    now = datetime.now(UTC).replace(microsecond=0)
    end = now.timestamp() - 3600
    start = (now - timedelta(days=365 * YEARS)).timestamp()
    received = now.strftime("%Y-%m-%dT%H:00:00.000000Z")
    rng, day = random.Random(15), Day()
    kinds = ("County Jail", "Detention Center", "Reentry Office")
    sites = [f"Site {i // SITE_SIZE + 1:03d} - {kinds[i // SITE_SIZE % 3]}" for i in range(units)]
    per_unit = events // units
    histories: list[UnitHistory] = []
    written, next_report, t1 = 0, 0, time.monotonic()
    cols = (
        "unit, event_id, seq, type, ts, month, col, product, doses, stock_after, via, phase, language, "
        "discrepancy, payload, received_at, site, program, lot"
    )
    with conn.cursor() as cur, cur.copy(f"COPY events ({cols}) FROM STDIN") as copy:
        for ui in range(1, units + 1):
            h = UnitHistory()
            histories.append(h)
            n = max(30, int(per_unit * rng.uniform(0.5, 1.5)) if ui < units else events - written)
            unit_start = start + rng.random() * (end - start) * 0.1  # some units came later
            chunk: list[str] = []
            for ln in event_lines(ui, n, unit_start, end, rng, h, day, received, sites[ui - 1]):
                chunk.append(ln)
                if len(chunk) >= 5000:
                    copy.write("".join(chunk))
                    chunk.clear()
            copy.write("".join(chunk))
            written += h.seq
            if written >= next_report:
                rate = written / max(time.monotonic() - t1, 1e-3)
                progress(f"events {written:,} of ~{events:,} ({ui} of {units} units, {rate:,.0f} rows/s)")
                next_report += max(events // 20, 1)
    took["copy_events_s"] = round(time.monotonic() - t1, 1)
    progress(f"copied {written:,} events in {took['copy_events_s']} s; building indexes")
    t2 = time.monotonic()
    conn.execute("ALTER TABLE events ADD PRIMARY KEY (unit, event_id)")
    progress("primary key built")
    for name, ddl in indexes.items():
        if name != "events_pkey":
            conn.execute(ddl)
            progress(f"index {name} built")
    took["indexes_s"] = round(time.monotonic() - t2, 1)
    t3 = time.monotonic()
    with conn.cursor() as cur:
        with cur.copy(
            "COPY units (unit, site, name, source, enrolled_at, "
            "status, status_session, status_ts, status_since, "
            "state_json, state_ts, telemetry_json, telemetry_ts, acked_seq, reported_last_seq) FROM STDIN"
        ) as copy:
            for i, h in enumerate(histories):
                u = unit_id(i + 1)
                online = rng.random() > 0.03
                ts = now.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
                tele = json.dumps(
                    {
                        "unit": u,
                        "ts": now.isoformat(),
                        "temperature_c": round(rng.uniform(18, 26), 1),
                        "uptime_s": 86400.0,
                        "link": {},
                        "outbox_depth": 0,
                    }
                )
                copy.write_row(
                    (
                        u,
                        sites[i],
                        f"Release lobby {i + 1}",
                        "config",
                        ts,
                        "online" if online else "offline",
                        1,
                        ts,
                        ts,
                        state_json(u, sites[i], h, now, online),
                        ts,
                        tele,
                        ts,
                        h.seq,
                        h.seq,
                    )
                )
        with cur.copy("COPY stock (unit, col, stock, seq, ts) FROM STDIN") as copy:
            for i, h in enumerate(histories):
                for c in range(COLUMNS):
                    copy.write_row((unit_id(i + 1), c + 1, h.stock[c], h.stock_seq[c], h.stock_ts[c]))
        with cur.copy(
            "COPY unit_columns (unit, col, product, par, capacity, stock, lot, expiry, fault) FROM STDIN"
        ) as copy:
            for i, h in enumerate(histories):
                for c in range(COLUMNS):
                    copy.write_row(
                        (unit_id(i + 1), c + 1, "nasal-4mg", 5, 30, h.stock[c], h.lot[c], h.expiry[c], None)
                    )
        with cur.copy(
            "COPY alert_history (alert_key, raised_at, unit, site, "
            "kind, severity, message, cleared_at) FROM STDIN"
        ) as copy:
            for k in range(units * 20):  # about 20 alerts per unit over five years, all cleared
                i = rng.randrange(units)
                raised = datetime.fromtimestamp(rng.uniform(start, end), UTC)
                kind = rng.choice(("low_stock", "offline", "temperature", "expiry", "vend_failure_rate"))
                copy.write_row(
                    (
                        f"{kind}:{unit_id(i + 1)}:{k}",
                        raised.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                        unit_id(i + 1),
                        sites[i],
                        kind,
                        "warning",
                        f"{unit_id(i + 1)}: {kind}",
                        (raised + timedelta(hours=rng.uniform(1, 48))).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                    )
                )
        with cur.copy("COPY temperature_history (unit, bucket, n, sum_c, min_c, max_c) FROM STDIN") as copy:
            first_bucket = int((end - TEMPERATURE_DAYS * 86400) // BUCKET_S) * BUCKET_S
            for i in range(units):
                base, lines = rng.uniform(18, 24), []
                for b in range(first_bucket, int(end), BUCKET_S):
                    d = b // 86400
                    s_ = b - d * 86400
                    bucket = f"{day(d)}T{s_ // 3600:02d}:{s_ % 3600 // 60:02d}:00.000000Z"
                    temp = base + 2 * math.sin(b / 86400 * 2 * math.pi)
                    lines.append(
                        f"{unit_id(i + 1)}\t{bucket}\t15\t{15 * temp:.2f}\t"
                        f"{temp - 0.3:.2f}\t{temp + 0.3:.2f}\n"
                    )
                copy.write("".join(lines))
    took["units_alerts_s"] = round(time.monotonic() - t3, 1)
    progress(
        f"units, stock, columns, alert history and {TEMPERATURE_DAYS} days of temperature history loaded; "
        "computing the report counts"
    )
    t4 = time.monotonic()
    with conn.transaction(), conn.cursor() as cur:
        from inventory.store import Tx

        rows = rollups.rebuild(Tx(cur, "pg"), "postgresql", "UTC")
    took["rollups_s"] = round(time.monotonic() - t4, 1)
    progress(f"{rows:,} (day, unit) report rows; vacuum analyze")
    t5 = time.monotonic()
    for table in (
        "events",
        "units",
        "stock",
        "unit_columns",
        "report_day",
        "report_month",
        "alert_history",
        "temperature_history",
    ):
        conn.execute(f"VACUUM ANALYZE {table}")
    took["vacuum_analyze_s"] = round(time.monotonic() - t5, 1)
    conn.execute(
        "INSERT INTO settings (name, value) VALUES ('bench_scale', %s), ('kit_time_granularity_s', %s)",
        (f"{FORMAT}:{units}:{events}", str(KIT_TIME_GRANULARITY_S)),
    )
    conn.close()
    took["total_s"] = round(time.monotonic() - t0, 1)
    took["events"] = written
    return took


def loaded(units: int, events: int, schema: str) -> bool:
    """The schema holds this size, loaded by this generator, and every migration it recorded is the
    one of that number now (a renumbered migration on a rebase means: load again)."""
    from inventory.migrations import MIGRATIONS

    try:
        with psycopg.connect(url(schema), autocommit=True) as conn:
            row = conn.execute("SELECT value FROM settings WHERE name = 'bench_scale'").fetchone()
            applied: dict[int, str] = dict(
                conn.execute("SELECT version, description FROM schema_version").fetchall()
            )
    except psycopg.Error:
        return False
    known = {v: d for v, d, _ in MIGRATIONS}
    same = all(known.get(v) == d for v, d in applied.items())
    return same and row is not None and row[0] == f"{FORMAT}:{units}:{events}"


def sizes(schema: str) -> dict[str, Any]:
    with psycopg.connect(url(schema), autocommit=True) as conn:
        q = conn.execute
        out = {
            "events": q("SELECT COUNT(*) FROM events").fetchone()[0],  # type: ignore[index]
            "units": q("SELECT COUNT(*) FROM units").fetchone()[0],  # type: ignore[index]
            "report_day_rows": q("SELECT COUNT(*) FROM report_day").fetchone()[0],  # type: ignore[index]
            "alert_history_rows": q("SELECT COUNT(*) FROM alert_history").fetchone()[0],  # type: ignore[index]
            "events_table_mb": round(
                q("SELECT pg_total_relation_size('events')").fetchone()[0] / 1e6  # type: ignore[index]
            ),
            "first_event": q("SELECT MIN(ts) FROM events").fetchone()[0],  # type: ignore[index]
            "last_event": q("SELECT MAX(ts) FROM events").fetchone()[0],  # type: ignore[index]
        }
    return out


# ------------------------------------------------------------------ measuring


def serve_toml(work: Path, http_port: int, mqtt_port: int, db: str) -> str:
    return f"""# generated by bench.scale
[server]
host = "127.0.0.1"
port = {http_port}

[store]
db = "{db}"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
client_id = "bench-scale-{uuid.uuid4().hex[:6]}"

[enrollment]
from_state = true
"""


def wrk(
    base: str, path: str, seconds: int, connections: int, units: int = 0, token: str = ""
) -> dict[str, Any]:
    argv = [
        "wrk",
        "-H",
        f"Authorization: Bearer {token}",
        f"-t{min(2, connections)}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        base + path.split("%")[0] if units else base + path,
    ]
    if token:
        argv[1:1] = ["-H", f"Authorization: Bearer {token}"]
    if units:
        argv += ["--", path, str(units)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"^WRK_JSON (.*)$", out.stdout, re.M)
    if not m:
        raise baselines.BenchError(
            f"expected a WRK_JSON line from wrk, got {out.stdout[-300:]!r} {out.stderr[-300:]!r}"
        )
    res: dict[str, Any] = json.loads(m.group(1))
    res["rps"] = round(res["requests"] / max(res["duration_s"], 1e-3), 1)
    return res


def alone(base: str, path: str, token: str, count: int = 7) -> float:
    """p50 of `count` requests one after another on one connection: what one request costs the
    service when nothing else asks it anything (the wrk figures add queueing behind the others)."""
    import http.client

    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    took = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
            conn.getresponse().read()
            took.append(time.perf_counter() - start)
    finally:
        conn.close()
    return round(sorted(took)[len(took) // 2] * 1000, 1)


def targets(name: str) -> float:
    return 300.0 if name.startswith("report") else 150.0


def pages(units: int, year: int) -> list[tuple[str, str, int]]:
    """(name, path, units for a random %04d in the path, or 0)."""
    fy = year
    return [
        ("fleet first page", "/", 0),
        ("fleet site filter", "/?site=" + quote("Site 007 - County Jail"), 0),
        ("fleet search", "/?q=st-012", 0),
        ("fleet page 20 (table)", "/?view=table&page=20", 0),
        ("unit page", "/units/st-%04d", units),
        ("alerts page", "/alerts", 0),
        ("lots page", "/lots", 0),
        ("lots page, one site", "/lots?site=" + quote("Site 007 - County Jail"), 0),
        ("report year (page)", f"/reports?year={year}", 0),
        ("report fiscal year (page)", f"/reports?fy={fy}", 0),
        ("report range (page)", f"/reports?start={year - 1}-03-15&end={year}-02-10", 0),
        ("report year, one site (page)", f"/reports?year={year}&site=" + quote("Site 007 - County Jail"), 0),
        ("report year (api)", f"/api/reports/year/{year}", 0),
        ("report fiscal year (api)", f"/api/reports/fiscal-year/{fy}", 0),
        ("report range (api)", f"/api/reports/period?start={year - 1}-03-15&end={year}-02-10", 0),
        ("api units (default page: 100, the most)", "/api/units", 0),
        ("api units (a page of 100)", "/api/units?limit=100&offset=500", 0),
        ("api unit", "/api/units/st-%04d", units),
        ("api unit events", "/api/units/st-%04d/events?limit=100", units),
        ("api alerts", "/api/alerts", 0),
    ]


def measure(
    units: int, schema: str, seconds: int, connections: int, ingest_events: int, only: str | None = None
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="nalox-bench-scale-"))
    out: dict[str, Any] = {"connections": connections, "seconds_each": seconds, "pages": {}}
    year = datetime.now(UTC).year - 1
    with Broker(DEPLOY / "dev.conf") as broker:
        http_port = rooms._free_port()
        (work / "central.toml").write_text(serve_toml(work, http_port, broker.port, url(schema)))
        token = demo_access(url(schema), login="bench").api_token  # the pages need a token since issue 12
        proc = Proc(
            "inventory",
            [*NALOX, "inventory", "serve", "--config", str(work / "central.toml")],
            work / "inventory.log",
        ).start()
        try:
            central = CentralApi(http_port, token)
            wait_until("the inventory service's /healthz", central.healthy, 600)
            ps = psutil.Process(proc.pid)
            base = f"http://127.0.0.1:{http_port}"
            for name, path, n in pages(units, year):
                if only is not None and only not in name:
                    continue
                code = subprocess.run(
                    [
                        "curl",
                        "-s",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        "-H",
                        f"Authorization: Bearer {token}",
                    ]
                    + [base + (path % 1 if n else path)],
                    capture_output=True,
                    text=True,
                    timeout=120,
                ).stdout
                if code != "200":
                    out["pages"][name] = {"path": path, "skipped": f"HTTP {code}"}
                    progress(f"{name}: HTTP {code}, not measured")
                    continue
                r = wrk(base, path, seconds, connections, n, token)
                r["alone_p50_ms"] = alone(base, path % 1 if n else path, token)
                r["path"], r["target_p95_ms"] = path, targets(name)
                r["met"] = (
                    r["requests"] > 0
                    and r["errors_socket"] == 0
                    and r["errors_status"] == 0
                    and r["p95_ms"] <= r["target_p95_ms"]
                )
                out["pages"][name] = r
                progress(
                    f"{name}: p50 {r['p50_ms']} p95 {r['p95_ms']} p99 {r['p99_ms']} ms, {r['rps']} req/s"
                )
            out["central_rss_mb"] = round(ps.memory_info().rss / 1e6)
            out["central_rss_peak_mb"] = round(_peak_kb(proc.pid) / 1e3)
        finally:
            proc.stop()
        if only is None:
            out["ingest"] = guarded(
                "ingest with the rows present", lambda: ingest(broker.port, schema, ingest_events)
            )
    shutil.rmtree(work, ignore_errors=True)
    return out


def _peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def ingest(port: int, schema: str, count: int) -> dict[str, Any]:
    """The bench's usual ingest run (bounded-window publisher, time until the last ack) into the loaded
    schema, against a bare paho subscriber measured just before."""
    base = baselines.live_subscribe(port, count)
    work = Path(tempfile.mkdtemp(prefix="nalox-bench-scale-ingest-"))
    unit = f"bench-ing-{uuid.uuid4().hex[:6]}"
    try:
        rate = rooms._ingest_run(port, count, work, unit, url(schema), 1)
    finally:
        with psycopg.connect(url(schema), autocommit=True) as conn:  # leave the loaded history as it was
            for table in ("events", "stock", "report_day", "report_month", "unit_columns", "units"):
                conn.execute(f"DELETE FROM {table} WHERE unit = %s", (unit,))
        shutil.rmtree(work, ignore_errors=True)
    return {
        "events": count,
        "baseline_subscriber_per_s": round(base),
        "ingest_postgresql_1w_per_s": round(rate),
        "ratio": ratio(rate, base),
        "target": "ratio >= 0.8",
        "met": rate >= 0.8 * base,
    }


OLD_RANK = (  # the fleet ranking as first written (EXPLAIN ANALYZE compares it with the one in use)
    "CASE WHEN u.status IS NULL OR u.status <> 'online' THEN 0 "
    "WHEN EXISTS (SELECT 1 FROM stock s WHERE s.unit = u.unit AND s.stock = 0) "
    "OR EXISTS (SELECT 1 FROM unit_columns c WHERE c.unit = u.unit AND c.stock = 0 AND NOT EXISTS "
    "(SELECT 1 FROM stock s WHERE s.unit = c.unit AND s.col = c.col)) THEN 1 "
    "WHEN EXISTS (SELECT 1 FROM unit_columns c LEFT JOIN stock s ON s.unit = c.unit AND s.col = c.col "
    "WHERE c.unit = u.unit AND COALESCE(s.stock, c.stock) < c.par) THEN 2 ELSE 3 END"
)


COLS = (
    "kits, doses, test_vends, extra_kits, emergency_kits, vend_failures, videos_started, videos_completed, "
    "kits_after_video, out_of_stock"
)
SUMS = ", ".join(f"SUM({c})" for c in COLS.split(", "))
SUMS_AS = ", ".join(f"SUM({c}) AS {c}" for c in COLS.split(", "))
INT_SUMS = ", ".join(f"CAST(COALESCE(SUM({c}), 0) AS BIGINT)" for c in COLS.split(", "))
FRESH = (
    "SUM(CASE WHEN e.type = 'dispense' AND e.via <> 'test' THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN e.type = 'dispense' AND e.via <> 'test' THEN e.doses ELSE 0 END), "
    "SUM(CASE WHEN e.type = 'video' AND e.phase = 'started' THEN 1 ELSE 0 END)"
)
PAGE = ", ".join(f"'st-{i:04d}'" for i in range(1, 2000, 40))


def explain(schema: str, year: int) -> dict[str, str]:
    """EXPLAIN ANALYZE of the queries behind the slowest pages, as the service runs them."""
    from inventory.store import Store

    out: dict[str, str] = {}
    months = f"{year}-01", f"{year}-12"
    rank = OLD_RANK
    queries = {
        "fleet ranking, first form (per-unit subqueries)": (
            f"SELECT u.unit FROM units u ORDER BY {rank}, u.site, u.unit LIMIT 50 OFFSET 0"
        ),
        "fleet ranking": f"SELECT u.unit, u.site, u.status, l.lvl, l.kits FROM units u "
        f"LEFT JOIN ({Store._LEVELS}) l ON l.unit = u.unit",
        "report year (kept counts)": (
            f"SELECT site, unit, {SUMS} FROM (SELECT month, unit, program, site, {COLS} FROM report_month "
            f"WHERE month >= '{months[0]}' AND month <= '{months[1]}') r "
            "GROUP BY site, unit ORDER BY site, unit"
        ),
        "report year counted fresh from events": (
            f"SELECT COALESCE(e.site, ''), e.unit, {FRESH} FROM events e "
            f"WHERE e.ts >= '{year}-01-01' AND e.ts < '{year + 1}-01-01' GROUP BY 1, 2 ORDER BY 1, 2"
        ),
        "kits per lot (kept counts)": "SELECT lot, dispensed FROM lot_counts WHERE dispensed > 0",
        "kits per lot counted fresh from events": (
            "SELECT lot, COUNT(*) FROM events WHERE type = 'dispense' AND lot IS NOT NULL GROUP BY lot"
        ),
        "hourly kits of one page of 50 units (fleet page)": (
            "SELECT unit, product, substr(ts, 1, 13), COUNT(*) FROM events WHERE type = 'dispense' "
            f"AND via <> 'test' AND ts >= '{year + 1}-11-01' AND unit IN ({PAGE}) "
            f" GROUP BY unit, product, substr(ts, 1, 13)"
        ),
        "unit page dispenses per day": (
            "SELECT unit, substr(ts, 1, 10), COUNT(*) FROM events WHERE type = 'dispense' "
            f"AND ts >= '{year}-11-01' AND unit = 'st-0042' GROUP BY unit, substr(ts, 1, 10)"
        ),
        "newest kit per unit (all units)": (
            "SELECT u.unit, (SELECT MAX(e.ts) FROM events e WHERE e.unit "
            "= u.unit AND e.type = 'dispense') FROM units u"
        ),
        "newest kit per unit, old form": (
            "SELECT unit, MAX(ts) FROM events WHERE type = 'dispense' GROUP BY unit"
        ),
        "unit events page": (
            "SELECT unit, event_id, seq FROM events WHERE unit = 'st-0042' ORDER BY seq DESC LIMIT 100"
        ),
        "fleet page alerts, first form (every active alert, counted in Python)": (
            "SELECT alert_key, unit, site, kind, severity, message, raised_at FROM active_alerts "
            "ORDER BY raised_at DESC"
        ),
        "fleet page alerts (counted in SQL)": (
            f"SELECT unit, COUNT(*) FROM active_alerts WHERE unit IN ({PAGE}) GROUP BY unit; "
            "SELECT severity, COUNT(*) FROM active_alerts GROUP BY severity"
        ),
        "report year per site (page; the 2,000 unit rows were summed per site in Python)": (
            f"SELECT site, COUNT(*), {INT_SUMS} FROM (SELECT site, unit, {SUMS_AS} FROM "
            f"(SELECT month, unit, program, site, {COLS} FROM report_month "
            f"WHERE month >= '{months[0]}' AND month <= '{months[1]}') r GROUP BY site, unit) r "
            "GROUP BY site ORDER BY site"
        ),
    }
    prune = (  # the alert loop's prune of the temperature history, every pass
        "DELETE FROM temperature_history WHERE bucket < "
        f"'{(datetime.now(UTC) - timedelta(days=TEMPERATURE_DAYS + 1)):%Y-%m-%dT%H:%M:%S}.000000Z'"
    )
    with psycopg.connect(url(schema), autocommit=True) as conn:
        conn.execute("SET jit = off")  # as the service runs them
        for name, sql in queries.items():
            out[name] = "\n\n".join(
                "\n".join(r[0] for r in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + part).fetchall())
                for part in sql.split("; ")
            )
        for name, scans in (
            ("temperature prune, first form (no index on bucket: a scan of every row)", "off"),
            ("temperature prune (index temperature_history_bucket)", "on"),
        ):
            with conn.transaction(force_rollback=True):  # measured, nothing deleted
                conn.execute(f"SET LOCAL enable_indexscan = {scans}")
                conn.execute(f"SET LOCAL enable_bitmapscan = {scans}")
                rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + prune).fetchall()
            out[name] = "\n".join(r[0] for r in rows)
    return out


def table(s: dict[str, Any]) -> str:
    rows = [("measure", "p50 ms", "p95 ms", "p99 ms", "req/s", "alone p50", "target p95", "met")]
    for name, r in s["pages"].items():
        if "skipped" in r:
            rows.append((name, "-", "-", "-", "-", "-", "", r["skipped"]))
            continue
        rows.append(
            (
                name,
                f"{r['p50_ms']:.1f}",
                f"{r['p95_ms']:.1f}",
                f"{r['p99_ms']:.1f}",
                f"{r['rps']:.0f}",
                f"{r.get('alone_p50_ms', '-')}",
                f"<= {r['target_p95_ms']:.0f}",
                "yes" if r["met"] else "NO",
            )
        )
    g = s.get("ingest", {})
    if "error" in g:
        rows.append(("ingest with rows present", "error", "", "", "", "", ">= 0.8x", g["error"][:40]))
    else:
        rows.append(
            (
                f"ingest (ev/s; bare subscriber {g['baseline_subscriber_per_s']:,})",
                f"{g['ingest_postgresql_1w_per_s']:,}",
                "",
                "",
                "",
                "",
                ">= 0.8x",
                f"{g['ratio']}x {'yes' if g['met'] else 'NO'}",
            )
        )
    rows.append(
        (
            "central RSS now / peak (MB)",
            f"{s.get('central_rss_mb')}",
            f"{s.get('central_rss_peak_mb')}",
            "",
            "",
            "",
            "<= 300",
            "yes" if (s.get("central_rss_peak_mb") or 1e9) <= 300 else "NO",
        )
    )
    d = s["data"]
    return markdown_table(
        rows,
        f"data: {d['units']:,} units, {d['events']:,} events "
        f"{d['first_event'][:10]}..{d['last_event'][:10]}, "
        f"events table {d['events_table_mb']:,} MB; {s['connections']} concurrent connections, "
        f"{s['seconds_each']} s each; {s['ran_at']}",
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.splitlines()[0])
    p.add_argument("--units", type=int, default=2000)
    p.add_argument("--events", type=int, default=10_000_000, help="events over five years (default 10^7)")
    p.add_argument("--schema", default=SCHEMA)
    p.add_argument("--reload", action="store_true", help="load again even when the schema holds this size")
    p.add_argument("--load-only", action="store_true")
    p.add_argument("--seconds", type=int, default=10, help="wrk run per page")
    p.add_argument("--connections", type=int, default=4, help="concurrent users")
    p.add_argument("--ingest-events", type=int, default=20_000)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--only",
        help="measure only the pages whose name holds this text (no ingest, EXPLAIN or results file): "
        "e.g. --only lots",
    )
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if shutil.which("wrk") is None:
        print(
            "bench.scale: expected wrk on PATH (Debian package wrk; `make setup` installs it), found none",
            file=sys.stderr,
        )
        return 2
    res: dict[str, Any] = {
        "machine": machine(),
        "ran_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "units": args.units,
        "events_asked": args.events,
    }
    if args.reload or not loaded(args.units, args.events, args.schema):
        progress(f"loading {args.units:,} units and {args.events:,} events into schema {args.schema}")
        res["load"] = load(args.units, args.events, args.schema)
    else:
        progress(f"schema {args.schema} already holds this size: reusing it (--reload to load again)")
    res["data"] = sizes(args.schema)
    if args.load_only:
        print(json.dumps(res, indent=2, default=str))
        return 0
    res.update(
        measure(args.units, args.schema, args.seconds, args.connections, args.ingest_events, args.only)
    )
    if args.only is not None:
        print(json.dumps(res["pages"], indent=1, default=str))
        return 0
    res["explain"] = explain(args.schema, datetime.now(UTC).year - 1)
    res["load_average_at_end"] = [round(x, 1) for x in os.getloadavg()]
    everything = json.loads(args.out.read_text()) if args.out.exists() else {}
    everything["scale"] = res
    args.out.write_text(json.dumps(everything, indent=2, sort_keys=True, default=str) + "\n")
    print(table(res))
    print(f"\nwrote {args.out} (key 'scale'; EXPLAIN ANALYZE of the main queries under scale.explain)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
