"""Report counts kept at ingest: per (day, unit) and per (month, unit), in the reporting time zone.

Each row is added to in the same transaction that inserted its events (only the copies that
transaction really inserted), so a report read from these tables equals a fresh count over the events
table at every commit; `rebuild()` recomputes both tables from the events (migration, time zone change)
and the tests compare the two ways of counting.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any

COUNTS = (
    "events",
    "kits",
    "doses",
    "test_vends",
    "extra_kits",
    "emergency_kits",
    "vend_failures",
    "videos_started",
    "videos_completed",
    "kits_after_video",
    "out_of_stock",
)

# the definition of every count, as SQL over the events table (the fresh count)
COUNT_SQL = (
    "COUNT(*)",
    "SUM(CASE WHEN type = 'dispense' AND via <> 'test' THEN 1 ELSE 0 END)",
    "SUM(CASE WHEN type = 'dispense' AND via <> 'test' THEN doses ELSE 0 END)",
    "SUM(CASE WHEN type = 'dispense' AND via = 'test' THEN 1 ELSE 0 END)",
    "SUM(CASE WHEN type = 'dispense' AND via = 'extra' THEN 1 ELSE 0 END)",
    "SUM(CASE WHEN type = 'dispense' AND via = 'emergency' THEN 1 ELSE 0 END)",
    "SUM(CASE WHEN type = 'vend_failed' THEN 1 ELSE 0 END)",
    "SUM(CASE WHEN type = 'video' AND phase = 'started' THEN 1 ELSE 0 END)",
    "SUM(CASE WHEN type = 'video' AND phase = 'completed' THEN 1 ELSE 0 END)",
    "SUM(CASE WHEN type = 'dispense' AND via = 'video' THEN 1 ELSE 0 END)",
    "SUM(CASE WHEN type = 'out_of_stock' THEN 1 ELSE 0 END)",
)

TABLES = {"report_day": "day", "report_month": "month"}

# rows are keyed by the unit and by the program and site recorded with each event ('' for none)
KEY = ("unit", "program", "site")

MIGRATION_SQL = [
    *(f"DROP TABLE {table}" for table in TABLES),
    *(
        f"""CREATE TABLE {table} (
            {key} TEXT NOT NULL,
            unit TEXT NOT NULL,
            program TEXT NOT NULL,
            site TEXT NOT NULL,
            {", ".join(f"{c} BIGINT NOT NULL" for c in COUNTS)},
            PRIMARY KEY ({key}, unit, program, site)
        )"""
        for table, key in TABLES.items()
    ),
]


def counts_of(type_: str | None, via: str | None, phase: str | None, doses: int | None) -> tuple[int, ...]:
    """One event's contribution to each count: the same rules as COUNT_SQL (a NULL via is neither
    'test' nor anything else, as in SQL)."""
    dispense = type_ == "dispense"
    kit = dispense and via is not None and via != "test"
    return (
        1,
        int(kit),
        (doses or 0) if kit else 0,
        int(dispense and via == "test"),
        int(dispense and via == "extra"),
        int(dispense and via == "emergency"),
        int(type_ == "vend_failed"),
        int(type_ == "video" and phase == "started"),
        int(type_ == "video" and phase == "completed"),
        int(dispense and via == "video"),
        int(type_ == "out_of_stock"),
    )


def local_day(ts: datetime, tz: tzinfo) -> str:
    d = ts.astimezone(tz)
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}"  # as PostgreSQL's to_char YYYY-MM-DD in rebuild()


class Pending:
    """Deltas of one transaction, written once just before it commits, in key order (the lock order
    every writer follows, after the ingest counters)."""

    def __init__(self) -> None:
        self.days: dict[tuple[str, str, str, str], list[int]] = {}
        self.lots: dict[str, int] = {}  # kits dispensed per lot (any via, as dispensed_by_lot counts)

    def add_lot(self, lot: str) -> None:
        self.lots[lot] = self.lots.get(lot, 0) + 1

    def add(self, day: str, unit: str, program: str | None, site: str | None, counts: Sequence[int]) -> None:
        key = (day, unit, program or "", site or "")
        acc = self.days.get(key)
        if acc is None:
            self.days[key] = list(counts)
        else:
            for i, n in enumerate(counts):
                acc[i] += n

    def months(self) -> dict[tuple[str, str, str, str], list[int]]:
        out: dict[tuple[str, str, str, str], list[int]] = {}
        for (day, *rest), counts in self.days.items():
            acc = out.setdefault((day[:7], *rest), [0] * len(COUNTS))  # type: ignore[arg-type]
            for i, n in enumerate(counts):
                acc[i] += n
        return out

    def rows(self, table: str) -> list[tuple[Any, ...]]:
        source = self.days if table == "report_day" else self.months()
        return [(*k, *counts) for k, counts in sorted(source.items())]


def upsert_sql(table: str, values: str) -> str:
    key = TABLES[table]
    return (
        f"INSERT INTO {table} ({key}, unit, program, site, {', '.join(COUNTS)}) {values} "
        f"ON CONFLICT ({key}, unit, program, site) DO UPDATE SET "
        + ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in COUNTS)
    )


SQLITE_UPSERT = {t: upsert_sql(t, f"VALUES ({', '.join(['?'] * (len(COUNTS) + 4))})") for t in TABLES}
PG_UPSERT = {  # one statement text for any number of rows: arrays unnested in order
    t: upsert_sql(
        t,
        "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], "
        + ", ".join(["%s::bigint[]"] * len(COUNTS))
        + ")",
    )
    for t in TABLES
}


def rebuild(tx: Any, dialect: str, tz_name: str) -> int:
    """Recompute both tables from the events table; returns the number of report_day rows."""
    for table in TABLES:
        tx.execute(f"DELETE FROM {table}")
    cols = f"day, unit, program, site, {', '.join(COUNTS)}"
    where = "COALESCE(program, ''), COALESCE(site, '')"
    if dialect == "postgresql":
        day = "to_char(ts::timestamptz AT TIME ZONE ?, 'YYYY-MM-DD')"
        tx.execute(
            f"INSERT INTO report_day ({cols}) SELECT {day}, unit, {where}, {', '.join(COUNT_SQL)} "
            "FROM events GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4",
            (tz_name,),
        )
    elif tz_name == "UTC":
        tx.execute(
            f"INSERT INTO report_day ({cols}) SELECT substr(ts, 1, 10), unit, {where}, "
            f"{', '.join(COUNT_SQL)} FROM events GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
        )
    else:  # SQLite has no time zones: days computed here (SQLite stores are the small ones)
        from zoneinfo import ZoneInfo

        tz, pending = ZoneInfo(tz_name), Pending()
        for unit, program, site, ts, type_, via, phase, doses in tx.rows(
            "SELECT unit, program, site, ts, type, via, phase, doses FROM events"
        ):
            when = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            pending.add(local_day(when, tz), unit, program, site, counts_of(type_, via, phase, doses))
        for row in pending.rows("report_day"):
            tx.execute(SQLITE_UPSERT["report_day"], row)
    tx.execute(
        f"INSERT INTO report_month (month, unit, program, site, {', '.join(COUNTS)}) "
        f"SELECT substr(day, 1, 7), unit, program, site, {', '.join(f'SUM({c})' for c in COUNTS)} "
        "FROM report_day GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4"
    )
    row = tx.one("SELECT COUNT(*) FROM report_day")
    return int(row[0]) if row else 0


LOT_SQL = [
    "CREATE TABLE lot_counts (lot TEXT PRIMARY KEY, dispensed BIGINT NOT NULL)",
]
_LOT_UPSERT = (
    "INSERT INTO lot_counts (lot, dispensed) {} ON CONFLICT (lot) DO UPDATE SET "
    "dispensed = lot_counts.dispensed + excluded.dispensed"
)


def rebuild_lots(tx: Any) -> None:
    tx.execute("DELETE FROM lot_counts")
    tx.execute(
        "INSERT INTO lot_counts (lot, dispensed) SELECT lot, COUNT(*) FROM events "
        "WHERE type = 'dispense' AND lot IS NOT NULL GROUP BY lot"
    )


def flush(tx: Any, dialect: str, pending: Pending) -> None:
    if pending.lots:
        lots = sorted(pending.lots.items())
        if dialect == "postgresql":
            tx.execute(
                _LOT_UPSERT.format("SELECT * FROM unnest(%s::text[], %s::bigint[])"),
                [[k for k, _ in lots], [n for _, n in lots]],
            )
        else:
            for row in lots:
                tx.execute(_LOT_UPSERT.format("VALUES (?, ?)"), row)
        pending.lots.clear()
    if not pending.days:
        return
    for table in TABLES:
        rows = pending.rows(table)
        if dialect == "postgresql":
            tx.execute(PG_UPSERT[table], [list(c) for c in zip(*rows, strict=True)])
        else:
            for row in rows:
                tx.execute(SQLITE_UPSERT[table], row)
    pending.days.clear()


def periods(start: str, end: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Split the days start..end (inclusive, YYYY-MM-DD) into whole months (read from report_month)
    and at most two partial stretches (read from report_day)."""
    from datetime import date, timedelta

    a, b = date.fromisoformat(start), date.fromisoformat(end)
    months: list[str] = []
    partial: list[tuple[str, str]] = []
    cur = a
    while cur <= b:
        first = cur.replace(day=1)
        nxt = (first + timedelta(days=32)).replace(day=1)
        last = nxt - timedelta(days=1)
        if cur == first and last <= b:
            months.append(first.strftime("%Y-%m"))
        else:
            partial.append((cur.isoformat(), min(last, b).isoformat()))
        cur = nxt
    return months, partial


def month_span(months: Iterable[str]) -> tuple[str, str] | None:
    ms = sorted(months)
    return (ms[0], ms[-1]) if ms else None
