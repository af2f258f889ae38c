"""The central store: one small interface, a SQLite and a PostgreSQL implementation sharing the SQL.

Counting rules (the point of this module):
- an event is inserted once per (unit, event_id); a duplicate is a no-op;
- a column's stock is the stock_after of its highest-seq dispense/restock event, so any delivery
  order, any duplication and any number of writer processes end with the same stock;
- a unit's acked seq is the highest seq with every seq from 1 to it committed, computed from the
  table after commit (so it is right with several processes) and only ever raised.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from inventory import rollups
from inventory.errors import InventoryError
from inventory.migrations import MIGRATIONS, put_unit_columns, put_unit_lots
from inventory.planning import SegmentRow
from schemas.models import EventBase, Status, Telemetry, UnitState

# events a person at the machine causes: central keeps their time only to the privacy granularity
PERSON_EVENT_TYPES = ("dispense", "video", "vend_failed", "out_of_stock", "alarm")  # alarms: a failed vend
REPORT_COUNTS = rollups.COUNTS[1:]  # every count a report shows (rollups defines them, "events" aside)
_REPORT_SUMS = (
    "SUM(CASE WHEN e.type = 'dispense' AND e.via <> 'test' THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN e.type = 'dispense' AND e.via <> 'test' THEN e.doses ELSE 0 END), "
    "SUM(CASE WHEN e.type = 'dispense' AND e.via = 'test' THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN e.type = 'dispense' AND e.via = 'extra' THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN e.type = 'dispense' AND e.via = 'emergency' THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN e.type = 'vend_failed' THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN e.type = 'video' AND e.phase = 'started' THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN e.type = 'video' AND e.phase = 'completed' THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN e.type = 'dispense' AND e.via = 'video' THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN e.type = 'out_of_stock' THEN 1 ELSE 0 END)"
)


def coarsen(dt: datetime, granularity_s: int) -> datetime:
    """`dt` rounded down to a multiple of `granularity_s` since the epoch (UTC)."""
    t = int(dt.timestamp())
    return datetime.fromtimestamp(t - t % granularity_s, UTC)


class GapBeyondUnit(ValueError):
    """accept-gap asked to give up on seqs the unit never reported."""


class StoreError(InventoryError):
    """The database refused an operation or holds something unexpected."""


def iso(dt: datetime) -> str:
    """One timestamp format everywhere, so text comparison is time comparison (the year always four
    digits: strftime writes year 226 as "226"). Formatted field by field: strftime was a fifth of
    the ingest's time."""
    u = dt.astimezone(UTC)
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}."
        f"{u.microsecond:06d}Z"
    )


def and_given(sql: str, params: list[Any], *conditions: tuple[str, Any]) -> tuple[str, list[Any]]:
    """`sql` with ` AND <condition>` for each (condition, value) whose value is given (not None), and
    `params` with those values, in order."""
    given = [(c, v) for c, v in conditions if v is not None]
    return sql + "".join(f" AND {c}" for c, _ in given), [*params, *(v for _, v in given)]


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text)  # iso()'s format, "Z" included (strptime took 10x as long)


@dataclass(frozen=True)
class UnitRow:
    unit: str
    site: str
    name: str | None
    source: str
    status: str | None
    status_session: int | None
    status_since: datetime | None
    state: UnitState | None
    telemetry: Telemetry | None
    acked_seq: int
    reported_last_seq: int
    stock: dict[int, int]
    seq_reset_at: datetime | None = None
    program: str = "Jail vending"


@dataclass(frozen=True)
class EventRow:
    unit: str
    event_id: str
    seq: int
    type: str
    ts: datetime
    col: int | None
    payload: str


@dataclass(frozen=True)
class SeqProgress:
    unit: str
    acked_seq: int
    max_seq: int  # highest seq known to exist: committed or announced by the unit's state
    paused: bool = False  # the unit's numbering restarted: no ack may be sent (it would prune new events)


class Tx:
    """One open transaction: execute() takes `?` placeholders on every backend."""

    def __init__(self, cur: Any, paramstyle: str) -> None:
        self._cur = cur
        self._pg = paramstyle == "pg"
        self.rollup = rollups.Pending()  # report counts of the events this transaction inserted

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._cur.execute(sql.replace("?", "%s") if self._pg else sql, tuple(params))
        return int(self._cur.rowcount)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.execute(sql, params)
        return list(self._cur.fetchall())

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        self.execute(sql, params)
        row = self._cur.fetchone()
        return tuple(row) if row is not None else None


class Store:
    """Base: everything but opening the connection and beginning a transaction is shared SQL."""

    dialect = "?"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.report_tz: tzinfo = UTC  # months of the reports are calendar months in this zone
        self.kit_time_granularity_s = 3600  # person-caused events are stored at this resolution

    # ------------------------------------------------------------------ backend hooks
    @contextmanager
    def tx(self) -> Iterator[Tx]:
        raise NotImplementedError
        yield  # pragma: no cover

    def _lock_migrations(self, tx: Tx) -> None:
        pass

    def close(self) -> None:
        raise NotImplementedError

    def is_retryable(self, exc: BaseException) -> bool:
        return False

    # ------------------------------------------------------------------ schema
    def migrate(self) -> int:
        """Apply every migration not yet recorded; returns the schema version now in force."""
        with self.tx() as tx:
            self._lock_migrations(tx)
            tx.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                "description TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            done = {int(r[0]) for r in tx.rows("SELECT version FROM schema_version")}
            for version, description, statements in MIGRATIONS:
                if version in done:
                    continue
                for step in statements:
                    if isinstance(step, str):
                        tx.execute(step)
                    else:
                        step(tx, self.dialect)
                tx.execute(
                    "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                    (version, description, iso(datetime.now(UTC))),
                )
        return self.schema_version()

    def schema_version(self) -> int:
        with self.tx() as tx:
            row = tx.one("SELECT MAX(version) FROM schema_version")
        return int(row[0]) if row and row[0] is not None else 0

    # ------------------------------------------------------------------ units
    def enroll(
        self, tx: Tx, unit: str, site: str, source: str, now: datetime, name: str | None = None
    ) -> bool:
        n = tx.execute(
            "INSERT INTO units (unit, site, name, source, enrolled_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (unit) DO NOTHING",
            (unit, site, name, source, iso(now)),
        )
        return n == 1

    def sync_config_units(self, units: Sequence[tuple[str | None, ...]], now: datetime) -> None:
        """(unit, site, name[, program]) from the config. A new site or program applies to events
        from now on: each stored event keeps the site and program recorded when it came in."""
        with self.tx() as tx:
            for unit, site, name, *rest in units:
                program = rest[0] if rest else "Jail vending"
                tx.execute(
                    "INSERT INTO units (unit, site, name, source, enrolled_at, program) "
                    "VALUES (?, ?, ?, 'config', ?, ?) "
                    "ON CONFLICT (unit) DO UPDATE SET site = excluded.site, name = excluded.name, "
                    "source = 'config', program = excluded.program",
                    (unit, site, name, iso(now), program),
                )

    def known_units(self) -> set[str]:
        with self.tx() as tx:
            return {r[0] for r in tx.rows("SELECT unit FROM units")}

    # ------------------------------------------------------------------ ingest writes
    def insert_event(self, tx: Tx, event: EventBase, raw: str, received_at: datetime) -> bool:
        """Insert once per (unit, event_id); True when this call inserted it. The caller then moves the
        column's stock with move_stock() (after all inserts, in key order, so writers never deadlock)."""
        return bool(self.insert_events(tx, [(event, raw)], received_at))

    def insert_events(
        self, tx: Tx, events: Sequence[tuple[EventBase, str]], received_at: datetime
    ) -> set[tuple[str, str]]:
        """Insert each event once per (unit, event_id) (on PostgreSQL in one statement, not one round
        trip per event); returns the (unit, event_id) keys this call inserted. Rows go in in the
        order given (the caller's (unit, event_id) order: the global lock order), duplicates within
        `events` are skipped after their first copy."""
        seen: set[tuple[str, str]] = set()
        rows: list[tuple[Any, ...]] = []
        kept: list[tuple[EventBase, datetime]] = []  # with its time as stored
        g = self.kit_time_granularity_s
        received = iso(coarsen(received_at, g))
        tz = self.report_tz
        units = sorted({e.unit for e, _ in events})
        where: dict[str, tuple[str, str]] = (
            {
                r[0]: (r[1], r[2])
                for r in tx.rows(
                    f"SELECT unit, site, program FROM units WHERE unit IN ({', '.join(['?'] * len(units))})",
                    units,
                )
            }
            if units
            else {}
        )
        for event, raw in events:
            key = (event.unit, event.event_id)
            if key in seen:
                continue
            seen.add(key)
            ts, f = event.ts, event.__dict__.get
            if f("type") in PERSON_EVENT_TYPES:
                ts = coarsen(ts, g)
                raw = _coarse_payload(event, ts, raw)
            site, program = where.get(event.unit, (None, None))
            rows.append(_event_row(event, ts, raw, received, tz) + (site, program, f("lot")))
            kept.append((event, ts))
        inserted = self._insert_event_rows(tx, rows)
        for event, ts in kept:
            if (event.unit, event.event_id) in inserted:
                site, program = where.get(event.unit, (None, None))
                f = event.__dict__.get
                lot = f("lot")
                if lot is not None and f("type") == "dispense":
                    tx.rollup.add_lot(lot)
                tx.rollup.add(
                    rollups.local_day(ts, tz),
                    event.unit,
                    program,
                    site,
                    rollups.counts_of(f("type"), f("via"), f("phase"), f("doses")),
                )
        return inserted

    def _insert_event_rows(self, tx: Tx, rows: list[tuple[Any, ...]]) -> set[tuple[str, str]]:
        """One prepared statement run per row (in-process SQLite: no round trip to save, and one
        statement text the connection's cache keeps, whatever the batch size)."""
        return {(r[0], r[1]) for r in rows if tx.execute(_INSERT_EVENT, r) == 1}

    def move_stock(self, tx: Tx, newest: dict[tuple[str, int], tuple[int, int, datetime]]) -> None:
        """(unit, column) -> (seq, stock_after, ts) of the newest stock event just inserted; a column
        takes it only when no higher seq has set it already (so order of arrival never matters).
        One statement, rows in (unit, column) order (the global lock order)."""
        if not newest:
            return
        items = sorted(newest.items())
        tx.execute(
            "INSERT INTO stock (unit, col, stock, seq, ts) VALUES "
            + ", ".join(["(?, ?, ?, ?, ?)"] * len(items))
            + " ON CONFLICT (unit, col) DO UPDATE SET stock = excluded.stock, seq = excluded.seq, "
            "ts = excluded.ts "
            "WHERE excluded.seq > stock.seq",
            [
                x
                for (unit, col), (seq, stock, ts) in items
                for x in (unit, col, stock, seq, iso(coarsen(ts, self.kit_time_granularity_s)))
            ],
        )

    def put_status(self, tx: Tx, unit: str, status: Status, now: datetime) -> bool:
        """A newer session wins; within one session `offline` (the Last Will) is final."""
        return (
            tx.execute(
                "UPDATE units SET status_since = CASE WHEN status = ? THEN status_since ELSE ? END, "
                "status = ?, status_session = ?, status_ts = ? "
                "WHERE unit = ? AND (status_session IS NULL OR status_session < ? "
                "OR (status_session = ? AND ? = 'offline'))",
                (
                    status.state,
                    iso(now),
                    status.state,
                    status.session,
                    iso(status.ts),
                    unit,
                    status.session,
                    status.session,
                    status.state,
                ),
            )
            == 1
        )

    def put_state(self, tx: Tx, state: UnitState, raw: str, now: datetime | None = None) -> bool:
        """Keep the newest state. Its time is kept only at the privacy granularity (the unit sends a
        state after each kit: its exact time would time the kit), so within one such period the last
        to arrive wins (one unit's retained states arrive in order). A newer state whose last_seq is
        below what we already acked means the unit's ledger restarted its numbering: acks to it stop
        (see SeqProgress.paused). The stored time is coarsened (privacy), so two states in the same
        period are ordered by their last_seq: a late, older state (a replay after a reconnect) is not
        taken for a restarted numbering. Only a state of a strictly later period can tell of a
        restart: the same state again (the broker's retained copy after central restarts, while the
        unit's newest events came after it) must not pause acks for good. A restart is caught at once
        by flag_reused_seq from the unit's first new event, or by the next period's state."""
        g = self.kit_time_granularity_s
        at = coarsen(state.ts, g)
        before = tx.one("SELECT state_ts FROM units WHERE unit = ?", (state.unit,))
        later_period = before is not None and before[0] is not None and before[0] < iso(at)
        kept = state.model_copy(
            update={
                "ts": at,
                "alarms": [a.model_copy(update={"since": coarsen(a.since, g)}) for a in state.alarms],
            }
        )
        newer = (
            tx.execute(
                "UPDATE units SET state_json = ?, state_ts = ?, "
                "reported_last_seq = CASE WHEN reported_last_seq > ? THEN reported_last_seq ELSE ? END "
                "WHERE unit = ? AND (state_ts IS NULL OR state_ts < ? "
                "OR (state_ts = ? AND reported_last_seq <= ?))",
                (
                    kept.model_dump_json(),
                    iso(at),
                    state.last_seq,
                    state.last_seq,
                    state.unit,
                    iso(at),
                    iso(at),
                    state.last_seq,
                ),
            )
            == 1
        )
        if newer:
            columns = [c.model_dump(mode="json") for c in state.columns]
            put_unit_columns(tx, state.unit, columns)
            put_unit_lots(tx, state.unit, columns, [h.model_dump(mode="json") for h in state.holds])
        if newer and later_period:
            tx.execute(
                "UPDATE units SET seq_reset_at = ? WHERE unit = ? AND acked_seq > ? AND seq_reset_at IS NULL",
                (iso(coarsen(now or state.ts, g)), state.unit, state.last_seq),
            )
        return newer

    def flag_reused_seq(self, tx: Tx, unit: str, seq: int, now: datetime) -> None:
        """A new event whose seq is already acked and taken by another event_id: the unit's numbering
        restarted (ledger wiped or replaced). Pause acks at once, before this batch's ack goes out."""
        tx.execute(
            "UPDATE units SET seq_reset_at = ? WHERE unit = ? AND seq_reset_at IS NULL AND acked_seq >= ? "
            "AND (SELECT COUNT(DISTINCT event_id) FROM events WHERE unit = ? AND seq = ?) > 1",
            (iso(now), unit, seq, unit, seq),
        )

    def put_telemetry(self, tx: Tx, telemetry: Telemetry, raw: str) -> bool:
        return (
            tx.execute(
                "UPDATE units SET telemetry_json = ?, telemetry_ts = ? "
                "WHERE unit = ? AND (telemetry_ts IS NULL OR telemetry_ts <= ?)",
                (raw, iso(telemetry.ts), telemetry.unit, iso(telemetry.ts)),
            )
            == 1
        )

    def count_reject(self, tx: Tx, reason: str, topic: str, detail: str, now: datetime) -> None:
        tx.execute(
            "INSERT INTO ingest_rejects (reason, count, last_at, last_topic, last_detail) "
            "VALUES (?, 1, ?, ?, ?) ON CONFLICT (reason) DO UPDATE SET count = ingest_rejects.count + 1, "
            "last_at = excluded.last_at, last_topic = excluded.last_topic, "
            "last_detail = excluded.last_detail",
            (reason, iso(now), topic[:200], detail[:500]),
        )

    def bump(self, tx: Tx, name: str, by: int = 1) -> None:
        tx.execute(
            "INSERT INTO ingest_counters (name, count) VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
            "SET count = ingest_counters.count + excluded.count",
            (name, by),
        )

    def bump_many(self, tx: Tx, counts: dict[str, int]) -> None:
        """Several counters in one statement, in name order (the global lock order)."""
        items = sorted(counts.items())
        if not items:
            return
        tx.execute(
            "INSERT INTO ingest_counters (name, count) VALUES "
            + ", ".join(["(?, ?)"] * len(items))
            + " ON CONFLICT (name) DO UPDATE SET count = ingest_counters.count + excluded.count",
            [x for item in items for x in item],
        )

    # ------------------------------------------------------------------ reporting time zone
    def use_report_timezone(self, name: str) -> int:
        """Months are counted in this zone from now on; when the stored events were counted in
        another one, their months are recomputed. Returns how many events were recomputed."""
        self.report_tz = ZoneInfo(name)
        with self.tx() as tx:
            row = tx.one("SELECT value FROM settings WHERE name = 'report_timezone'")
            if (row[0] if row else "UTC") == name:
                if row is None:
                    tx.execute("INSERT INTO settings (name, value) VALUES ('report_timezone', ?)", (name,))
                return 0
            events = tx.rows("SELECT unit, event_id, ts FROM events")
            for unit, event_id, ts in events:
                month = (parse_iso(ts) or datetime.min).astimezone(self.report_tz).strftime("%Y-%m")
                tx.execute(
                    "UPDATE events SET month = ? WHERE unit = ? AND event_id = ?", (month, unit, event_id)
                )
            tx.execute(
                "INSERT INTO settings (name, value) VALUES ('report_timezone', ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name,),
            )
            rollups.rebuild(tx, self.dialect, name)
        return len(events)

    # ------------------------------------------------------------------ seq tracking
    def accept_gap(self, unit: str, through_seq: int, reason: str, now: datetime) -> int:
        """An operator's decision: seqs up to `through_seq` that never came are given up on (the unit
        no longer has them). Recorded with the reason; returns how many seqs were given up on."""
        with self.tx() as tx:
            row = tx.one("SELECT acked_seq, reported_last_seq FROM units WHERE unit = ?", (unit,))
            if row is None:
                raise StoreError(f"expected a known unit id, got {unit!r}")
            acked = int(row[0])
            top = tx.one("SELECT MAX(seq) FROM events WHERE unit = ?", (unit,))
            bound = max(int(row[1] or 0), int(top[0]) if top and top[0] is not None else 0)
            if through_seq > bound:  # beyond what the unit has: it would refuse the ack (and prune nothing)
                raise GapBeyondUnit(
                    f"expected through_seq at most {bound} (the last seq unit {unit!r} reported or sent), "
                    f"got {through_seq}"
                )
            if through_seq <= acked:
                return 0
            have = tx.one(
                "SELECT COUNT(DISTINCT seq) FROM events WHERE unit = ? AND seq > ? AND seq <= ?",
                (unit, acked, through_seq),
            )
            tx.execute(
                "INSERT INTO accepted_gaps (unit, from_seq, through_seq, accepted_at, reason) "
                "VALUES (?, ?, ?, ?, ?)",
                (unit, acked + 1, through_seq, iso(now), reason),
            )
            tx.execute("UPDATE units SET acked_seq = ? WHERE unit = ?", (through_seq, unit))
        return through_seq - acked - (int(have[0]) if have else 0)

    # ------------------------------------------------------------------ quarantine
    def quarantine(
        self,
        tx: Tx,
        unit: str,
        topic: str,
        reason: str,
        detail: str,
        size: int,
        seq: int | None,
        event_id: str | None,
        now: datetime,
        per_unit: int,
    ) -> None:
        """Keep a refused message's reason, size and (when well-formed) seq and event_id. The same
        refusal again (same unit, reason, seq and event_id) counts up its open row; past `per_unit`
        open rows the unit's newest one counts up instead, so a flood cannot grow the table."""
        same = tx.one(
            "SELECT id FROM quarantine WHERE state = 'open' AND unit = ? AND reason = ? "
            "AND COALESCE(seq, -1) = ? AND COALESCE(event_id, '') = ?",
            (unit, reason, -1 if seq is None else seq, event_id or ""),
        )
        if same is None:
            n = tx.one("SELECT COUNT(*) FROM quarantine WHERE state = 'open' AND unit = ?", (unit,))
            if n is not None and int(n[0]) >= per_unit:
                same = tx.one("SELECT MAX(id) FROM quarantine WHERE state = 'open' AND unit = ?", (unit,))
        if same is not None and same[0] is not None:
            tx.execute(
                "UPDATE quarantine SET count = count + 1, last_at = ? WHERE id = ?", (iso(now), same[0])
            )
            return
        top = tx.one("SELECT MAX(id) FROM quarantine")
        new_id = (int(top[0]) if top and top[0] is not None else 0) + 1
        tx.execute(
            "INSERT INTO quarantine (id, unit, topic, reason, detail, size, seq, event_id, first_at, "
            "last_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (new_id, unit[:64], topic[:200], reason, detail[:500], size, seq, event_id, iso(now), iso(now)),
        )

    def quarantined(
        self, state: str | None = "open", unit: str | None = None, limit: int = 500, qid: int | None = None
    ) -> list[dict[str, Any]]:
        sql = (
            "SELECT id, unit, topic, reason, detail, size, seq, event_id, first_at, last_at, count, "
            "state, resolved_at, resolution FROM quarantine WHERE 1 = 1"
        )
        sql, args = and_given(sql, [], ("id = ?", qid), ("state = ?", state), ("unit = ?", unit))
        with self.tx() as tx:
            rows = tx.rows(sql + " ORDER BY id DESC LIMIT ?", (*args, limit))
        keys = (
            "id",
            "unit",
            "topic",
            "reason",
            "detail",
            "size",
            "seq",
            "event_id",
            "first_at",
            "last_at",
            "count",
            "state",
            "resolved_at",
            "resolution",
        )
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def quarantine_summary(self) -> dict[tuple[str, str], int]:
        """Open quarantine per (unit, reason): how many refusals."""
        with self.tx() as tx:
            rows = tx.rows(
                "SELECT unit, reason, SUM(count) FROM quarantine WHERE state = 'open' GROUP BY unit, reason"
            )
        return {(r[0], r[1]): int(r[2]) for r in rows}

    def gap_ends(self, gaps: dict[str, int]) -> dict[str, int]:
        """For each unit -> acked seq: the lowest committed seq above it, where its gap ends (units with
        nothing committed above their acked seq are left out): a replay asks only for what is missing."""
        out: dict[str, int] = {}
        with self.tx() as tx:
            for unit, acked in gaps.items():
                row = tx.one("SELECT MIN(seq) FROM events WHERE unit = ? AND seq > ?", (unit, acked))
                if row is not None and row[0] is not None:
                    out[unit] = int(row[0])
        return out

    def quarantined_seqs(self, units: Sequence[str]) -> dict[str, set[int]]:
        out: dict[str, set[int]] = {}
        with self.tx() as tx:
            for unit in units:
                rows = tx.rows(
                    "SELECT seq FROM quarantine WHERE state = 'open' AND unit = ? AND seq IS NOT NULL",
                    (unit,),
                )
                out[unit] = {int(r[0]) for r in rows}
        return out

    def resolve_quarantine(self, qid: int, state: str, resolution: str, now: datetime) -> dict[str, Any]:
        """`released` (central was upgraded: ask the unit for it again) or `accepted` (given up)."""
        if state not in ("released", "accepted"):
            raise StoreError(f"expected released or accepted, got {state!r}")
        with self.tx() as tx:
            row = tx.one("SELECT state FROM quarantine WHERE id = ?", (qid,))
            if row is None:
                raise StoreError(f"expected a quarantine id, got {qid}")
            if row[0] != "open":
                raise StoreError(f"quarantine {qid} is already {row[0]}")
            tx.execute(
                "UPDATE quarantine SET state = ?, resolved_at = ?, resolution = ? WHERE id = ?",
                (state, iso(now), resolution[:500], qid),
            )
        return self.quarantined(None, qid=qid)[0]

    def accepted_gaps(self, unit: str) -> list[dict[str, Any]]:
        with self.tx() as tx:
            rows = tx.rows(
                "SELECT from_seq, through_seq, accepted_at, reason FROM accepted_gaps WHERE unit = ? "
                "ORDER BY from_seq",
                (unit,),
            )
        return [{"from_seq": r[0], "through_seq": r[1], "accepted_at": r[2], "reason": r[3]} for r in rows]

    def advance_acked(self, unit: str) -> SeqProgress:
        """Raise the unit's acked seq over every consecutive committed seq; run after commit."""
        return self.advance_acked_many([unit])[0]

    def advance_acked_many(self, units: Sequence[str]) -> list[SeqProgress]:
        """advance_acked for several units in one transaction (in unit order: the global lock order)."""
        with self.tx() as tx:
            return [self._advance(tx, unit) for unit in sorted(units)]

    def _advance(self, tx: Tx, unit: str) -> SeqProgress:
        row = tx.one(
            "SELECT acked_seq, reported_last_seq, seq_reset_at, "
            "(SELECT MAX(seq) FROM events WHERE unit = ?) FROM units WHERE unit = ?",
            (unit, unit),
        )
        if row is None:
            return SeqProgress(unit, 0, 0)
        if row[2] is not None:
            return SeqProgress(unit, int(row[0]), int(row[0]), paused=True)
        stored, reported = int(row[0]), int(row[1])
        committed_max = int(row[3]) if row[3] is not None else 0
        acked = self._gap_free(tx, unit, stored) if committed_max > stored else stored
        if acked > stored:
            # another writer may have raised it meanwhile: keep the higher, read back what holds now
            final = tx.one(
                "UPDATE units SET acked_seq = CASE WHEN acked_seq < ? THEN ? ELSE acked_seq END "
                "WHERE unit = ? RETURNING acked_seq",
                (acked, acked, unit),
            )
            acked = int(final[0]) if final else acked
        return SeqProgress(unit, acked, max(committed_max, reported, acked))

    @staticmethod
    def _gap_free(tx: Tx, unit: str, acked: int, page: int = 5000) -> int:
        """The highest seq reachable from `acked` through consecutive committed seqs: among the next
        `page` distinct seqs above `acked`, the n-th one continues the run when it equals acked + n
        (computed in the database, one round trip per page)."""
        while True:
            row = tx.one(
                "SELECT MAX(seq), COUNT(*) FROM (SELECT seq, ROW_NUMBER() OVER (ORDER BY seq) AS n "
                "FROM (SELECT DISTINCT seq FROM events WHERE unit = ? AND seq > ? ORDER BY seq LIMIT ?) d"
                ") w WHERE seq = n + ?",
                (unit, acked, page, acked),
            )
            if row is None or not row[1]:
                return acked
            run = int(row[1])
            acked = int(row[0])
            if run < page:
                return acked

    # ------------------------------------------------------------------ reads
    _UNIT_COLUMNS = (
        "unit, site, name, source, status, status_session, status_since, state_json, "
        "telemetry_json, acked_seq, reported_last_seq, seq_reset_at, program"
    )

    def units(self, only: Sequence[str] | None = None) -> list[UnitRow]:
        """Every unit (or those named in `only`, in that order), with its counted stock."""
        with self.tx() as tx:
            if only is None:
                rows = tx.rows(f"SELECT {self._UNIT_COLUMNS} FROM units ORDER BY site, unit")
                stock_rows = tx.rows("SELECT unit, col, stock FROM stock")
            elif not only:
                return []
            else:
                marks = ", ".join("?" * len(only))
                found = {
                    r[0]: r
                    for r in tx.rows(f"SELECT {self._UNIT_COLUMNS} FROM units WHERE unit IN ({marks})", only)
                }
                rows = [found[u] for u in only if u in found]
                stock_rows = tx.rows(f"SELECT unit, col, stock FROM stock WHERE unit IN ({marks})", only)
        stock: dict[str, dict[int, int]] = {}
        for unit, col, n in stock_rows:
            stock.setdefault(unit, {})[int(col)] = int(n)
        return [_unit_row(r, stock.get(r[0], {})) for r in rows]

    def unit(self, unit: str) -> UnitRow | None:
        found = self.units([unit])
        return found[0] if found else None

    # Each column's level, in one pass of hash joins (no per-unit subqueries): 1 sold out, 2 under
    # par, 3 fine. A column's stock is the counted one (stock table), else the newest state's figure;
    # a counted column the state does not describe has no par.
    _LEVELS = (
        "SELECT unit, MIN(CASE WHEN stock = 0 THEN 1 WHEN stock < par THEN 2 ELSE 3 END) AS lvl, "
        "SUM(stock) AS kits FROM ("
        "SELECT c.unit, COALESCE(s.stock, c.stock) AS stock, c.par FROM unit_columns c "
        "LEFT JOIN stock s ON s.unit = c.unit AND s.col = c.col "
        "UNION ALL SELECT s.unit, s.stock, 0 FROM stock s WHERE NOT EXISTS "
        "(SELECT 1 FROM unit_columns c WHERE c.unit = s.unit AND c.col = s.col)"
        ") cols GROUP BY unit"
    )

    def fleet_page(
        self, site: str | None = None, search: str | None = None, offset: int = 0, limit: int = 50
    ) -> tuple[list[str], dict[str, int]]:
        """One page of unit ids, those needing attention first (not online, then a column sold out,
        then one under par; then by site and id), filtered by site and by a search over id, name and
        site; and the figures of the whole filtered fleet: units, online, needing attention, kits in
        the machines. One query over the filtered units' small rows (a state has thousands of units,
        not millions): the ranking and the sums are done here."""
        where, params = "WHERE 1 = 1", list[Any]()
        if site:
            where, params = where + " AND u.site = ?", [*params, site]
        if search:
            text = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            like = f"%{text}%"  # the search is text: LIKE's wildcards in it are escaped
            where += (
                " AND ("
                + " OR ".join(
                    f"LOWER({c}) LIKE ? ESCAPE '\\'" for c in ("u.unit", "u.site", "COALESCE(u.name, '')")
                )
                + ")"
            )
            params += [like, like, like]
        with self.tx() as tx:
            rows = tx.rows(
                f"SELECT u.unit, u.site, u.status, l.lvl, l.kits FROM units u "
                f"LEFT JOIN ({self._LEVELS}) l ON l.unit = u.unit {where}",
                params,
            )
        ranked = sorted(
            (
                (0 if status != "online" else int(lvl or 3), site_, unit)
                for unit, site_, status, lvl, _ in rows
            )
        )
        return [unit for _, _, unit in ranked[offset : offset + limit]], {
            "units": len(rows),
            "online": sum(r[2] == "online" for r in rows),
            "attention": sum(rank < 3 for rank, _, _ in ranked),
            "kits": sum(int(r[4] or 0) for r in rows),
        }

    def unit_ids(self, site: str | None = None, offset: int = 0, limit: int | None = None) -> list[str]:
        """Unit ids by site and id, of one site or all, one page of them or all."""
        where = " WHERE site = ?" if site is not None else ""
        sql = f"SELECT unit FROM units{where} ORDER BY site, unit"
        params: list[Any] = [site] if site is not None else []
        if limit is not None:
            sql, params = sql + " LIMIT ? OFFSET ?", [*params, limit, offset]
        with self.tx() as tx:
            return [r[0] for r in tx.rows(sql, params)]

    def sites(self) -> list[str]:
        with self.tx() as tx:
            return [r[0] for r in tx.rows("SELECT DISTINCT site FROM units ORDER BY site")]

    def events(
        self, unit: str, limit: int = 100, before_seq: int | None = None, type_: str | None = None
    ) -> list[EventRow]:
        sql = "SELECT unit, event_id, seq, type, ts, col, payload FROM events WHERE unit = ?"
        sql, params = and_given(sql, [unit], ("seq < ?", before_seq), ("type = ?", type_))
        with self.tx() as tx:
            rows = tx.rows(sql + " ORDER BY seq DESC LIMIT ?", [*params, limit])
        return [
            EventRow(r[0], r[1], int(r[2]), r[3], parse_iso(r[4]) or datetime.min, r[5], r[6]) for r in rows
        ]

    def count_events(self, type_: str | None = None, unit: str | None = None) -> int:
        # an empty type or unit counts as not given
        sql, params = and_given(
            "SELECT COUNT(*) FROM events WHERE 1 = 1",
            [],
            ("type = ?", type_ or None),
            ("unit = ?", unit or None),
        )
        with self.tx() as tx:
            row = tx.one(sql, params)
        return int(row[0]) if row else 0

    def daily_counts(
        self, type_: str, since: datetime, unit: str | None = None
    ) -> dict[tuple[str, str], int]:
        """(unit, YYYY-MM-DD) -> number of events of that type since `since` (of one unit: an index range)."""
        sql = "SELECT unit, substr(ts, 1, 10), COUNT(*) FROM events WHERE type = ? AND ts >= ?"
        params: list[Any] = [type_, iso(since)]
        if unit is not None:
            sql, params = sql + " AND unit = ?", [*params, unit]
        with self.tx() as tx:
            rows = tx.rows(sql + " GROUP BY unit, substr(ts, 1, 10)", params)
        return {(r[0], r[1]): int(r[2]) for r in rows}

    def last_event_ts(self, type_: str, only: Sequence[str] | None = None) -> dict[str, datetime]:
        """Each unit's newest event of a type: one backward index probe per unit (events_unit_type_ts),
        not a scan of every event of that type."""
        sql = (
            "SELECT u.unit, (SELECT MAX(e.ts) FROM events e WHERE "
            "e.unit = u.unit AND e.type = ?) FROM units u"
        )
        params: list[Any] = [type_]
        if only is not None:
            if not only:
                return {}
            sql, params = sql + f" WHERE u.unit IN ({', '.join('?' * len(only))})", [*params, *only]
        with self.tx() as tx:
            rows = tx.rows(sql, params)
        return {r[0]: parse_iso(r[1]) or datetime.min.replace(tzinfo=UTC) for r in rows if r[1]}

    def counts_since(
        self,
        since: datetime,
        types: Sequence[str] = ("dispense", "vend_failed"),
        only: Sequence[str] | None = None,
    ) -> dict[tuple[str, str], int]:
        """(unit, type) -> events of those types since `since` (ts of the event): index ranges on
        (type, ts), or (unit, type, ts) for a few units."""
        sql = (
            f"SELECT unit, type, COUNT(*) FROM events WHERE type "
            f"IN ({', '.join('?' * len(types))}) AND ts >= ?"
        )
        params: list[Any] = [*types, iso(since)]
        if only is not None:
            if not only:
                return {}
            sql, params = sql + f" AND unit IN ({', '.join('?' * len(only))})", [*params, *only]
        with self.tx() as tx:
            rows = tx.rows(sql + " GROUP BY unit, type", params)
        return {(r[0], r[1]): int(r[2]) for r in rows}

    _REPORT_KEYS = rollups.COUNTS[1:]
    # each kept count summed as an integer (SUM over BIGINT is NUMERIC in PostgreSQL: a Decimal per
    # cell, turned back into int in Python, was a fifth of a year's report)
    _REPORT_SUMS = ", ".join(f"CAST(COALESCE(SUM({c}), 0) AS BIGINT)" for c in _REPORT_KEYS)

    def _report_rows(self, keys: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        names = (*keys, *self._REPORT_KEYS)
        return [dict(zip(names, r, strict=True)) for r in rows]

    def monthly(self) -> list[dict[str, Any]]:
        """Per month, site (the unit's now) and unit: kits, doses, test vends, vend failures, video
        funnel (from the counts kept at ingest; monthly_fresh() counts the same from the events)."""
        with self.tx() as tx:
            rows = tx.rows(
                f"SELECT r.month, u.site, r.unit, {self._REPORT_SUMS.replace('SUM(', 'SUM(r.')} "
                "FROM report_month r JOIN units u ON u.unit = r.unit "
                "GROUP BY r.month, u.site, r.unit ORDER BY r.month, u.site, r.unit"
            )
        return self._report_rows(("month", "site", "unit"), rows)

    def monthly_fresh(self) -> list[dict[str, Any]]:
        """monthly(), counted from the events table now (the check of the kept counts)."""
        sums = ", ".join(rollups.COUNT_SQL[1:]).replace("type", "e.type").replace("via", "e.via")
        sums = sums.replace("phase", "e.phase").replace("doses", "e.doses")
        with self.tx() as tx:
            rows = tx.rows(
                f"SELECT e.month, u.site, e.unit, {sums} FROM events e JOIN units u ON u.unit = e.unit "
                "GROUP BY e.month, u.site, e.unit ORDER BY e.month, u.site, e.unit"
            )
        counted = [(*r[:3], *(int(x) for x in r[3:])) for r in rows]  # SUMs are NUMERIC in PostgreSQL
        return self._report_rows(("month", "site", "unit"), counted)

    def period(
        self, start: str, end: str, by: Sequence[str] = ("site", "unit"), site: str | None = None
    ) -> list[dict[str, Any]]:
        """Per site (recorded with each event) and unit (or grouped by `by`) over the days start..end
        (YYYY-MM-DD, inclusive, in the reporting time zone), of one site or all, from the counts kept
        at ingest. Grouped without the unit, each row also says how many units it sums (`units`)."""
        return self._period_kept(start, end, by, site, count_units="unit" not in by and bool(by))

    def period_fresh(self, start: str, end: str) -> list[dict[str, Any]]:
        """period(), counted from the events now: the day bounds turned into instants in the zone."""
        lo, hi = self._instants(start, end)
        return self.period_counts_fresh(lo, hi, ("site", "unit"))

    def _instants(self, start: str, end: str) -> tuple[datetime, datetime]:
        from datetime import date, time, timedelta

        tz = self.report_tz
        lo = datetime.combine(date.fromisoformat(start), time(), tz)
        hi = datetime.combine(date.fromisoformat(end) + timedelta(days=1), time(), tz)
        return lo, hi

    def _period_kept(
        self, start: str, end: str, by: Sequence[str], site: str | None = None, count_units: bool = False
    ) -> list[dict[str, Any]]:
        """Counts over the days start..end grouped by `by` (program, site, unit, month): whole months
        from report_month, the partial ones from report_day; summed in the database."""
        months, partial = rollups.periods(start, end)
        cols = ", ".join(self._REPORT_KEYS)
        of_site = " AND site = ?" if site is not None else ""
        parts, params = [], list[Any]()
        span = rollups.month_span(months)
        if span:
            parts.append(
                f"SELECT month, unit, program, site, {cols} FROM report_month "
                f"WHERE month >= ? AND month <= ?{of_site}"
            )
            params += [*span, *([site] if site is not None else [])]
        for a, b in partial:
            parts.append(
                f"SELECT substr(day, 1, 7) AS month, unit, program, site, {cols} FROM report_day "
                f"WHERE day >= ? AND day <= ?{of_site}"
            )
            params += [a, b, *([site] if site is not None else [])]
        keys = ", ".join(by)
        group = f" GROUP BY {keys} ORDER BY {keys}" if by else ""
        source = f"({' UNION ALL '.join(parts)}) r"
        if count_units:  # how many units each row sums: per unit first (COUNT(DISTINCT) sorts: 2x slower)
            named = ", ".join(f"SUM({c}) AS {c}" for c in self._REPORT_KEYS)
            source = f"(SELECT {keys}, unit, {named} FROM {source} GROUP BY {keys}, unit) r"
        select = ", ".join([*by, *(["COUNT(*)"] if count_units else []), self._REPORT_SUMS])
        if not parts:
            return []
        with self.tx() as tx:
            rows = tx.rows(f"SELECT {select} FROM {source}{group}", params)
        names = (*by, *(["units"] if count_units else []))
        return self._report_rows(names, [r for r in rows if by or any(r)])

    def monthly_by_site(
        self, start_month: str, end_month: str, site: str | None = None, by_site: bool = True
    ) -> list[dict[str, Any]]:
        """Per month and site (recorded with each event) over whole months start..end (YYYY-MM), of
        one site or all (or, by_site False, per month with the site "all sites")."""
        where = " AND site = ?" if site is not None else ""
        key = "site" if by_site else "'all sites'"
        with self.tx() as tx:
            rows = tx.rows(
                f"SELECT month, {key}, {self._REPORT_SUMS} FROM report_month "
                f"WHERE month >= ? AND month <= ?{where} GROUP BY month{', site' if by_site else ''}",
                (start_month, end_month) + ((site,) if site is not None else ()),
            )
        return self._report_rows(("month", "site"), sorted(rows, key=lambda r: (r[0], r[1])))

    def count_since(self, type_: str, since: datetime, site: str | None = None) -> int:
        """Events of a type since `since` (of one site's units): an index range on (type, ts)."""
        sql, params = "SELECT COUNT(*) FROM events e WHERE e.type = ? AND e.ts >= ?", [type_, iso(since)]
        if site is not None:
            sql += " AND e.unit IN (SELECT unit FROM units WHERE site = ?)"
            params.append(site)
        with self.tx() as tx:
            row = tx.one(sql, params)
        return int(row[0]) if row else 0

    def count_active_alerts(self) -> int:
        with self.tx() as tx:
            row = tx.one("SELECT COUNT(*) FROM active_alerts")
        return int(row[0]) if row else 0

    def restocks_with_discrepancy(self) -> list[tuple[EventRow, str | None]]:
        """Restock events whose blind count differed, each with its resolution time (None: still open)."""
        with self.tx() as tx:
            rows = tx.rows(
                "SELECT e.unit, e.event_id, e.seq, e.type, e.ts, e.col, e.payload, r.resolved_at "
                "FROM events e "
                "LEFT JOIN resolved_discrepancies r ON r.unit = e.unit AND r.event_id = e.event_id "
                "WHERE e.type = 'restock' AND e.discrepancy <> 0 ORDER BY e.ts DESC LIMIT 500"
            )
        return [
            (EventRow(r[0], r[1], int(r[2]), r[3], parse_iso(r[4]) or datetime.min, r[5], r[6]), r[7])
            for r in rows
        ]

    def resolve_discrepancy(self, unit: str, event_id: str, note: str | None, now: datetime) -> bool:
        with self.tx() as tx:
            return (
                tx.execute(
                    "INSERT INTO resolved_discrepancies (unit, event_id, resolved_at, note) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (unit, event_id) DO NOTHING",
                    (unit, event_id, iso(now), note),
                )
                == 1
            )

    def rejects(self) -> dict[str, dict[str, Any]]:
        with self.tx() as tx:
            rows = tx.rows("SELECT reason, count, last_at, last_topic, last_detail FROM ingest_rejects")
        return {
            r[0]: {"count": int(r[1]), "last_at": r[2], "last_topic": r[3], "last_detail": r[4]} for r in rows
        }

    def counters(self) -> dict[str, int]:
        with self.tx() as tx:
            return {r[0]: int(r[1]) for r in tx.rows("SELECT name, count FROM ingest_counters")}

    # ------------------------------------------------------------------ alerts
    def raise_alert(
        self,
        key: str,
        unit: str | None,
        site: str | None,
        kind: str,
        severity: str,
        message: str,
        now: datetime,
    ) -> bool:
        """True when this call raised it (so exactly one process publishes it)."""
        with self.tx() as tx:
            n = tx.execute(
                "INSERT INTO active_alerts (alert_key, unit, site, kind, severity, message, raised_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (alert_key) DO NOTHING",
                (key, unit, site, kind, severity, message, iso(now)),
            )
            if n == 1:
                tx.execute(
                    "INSERT INTO alert_history (alert_key, raised_at, unit, site, kind, severity, message) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (alert_key, raised_at) DO UPDATE SET "
                    "cleared_at = NULL, severity = excluded.severity, message = excluded.message",
                    (key, iso(now), unit, site, kind, severity, message),
                )
            else:
                tx.execute(
                    "UPDATE active_alerts SET message = ?, severity = ? WHERE alert_key = ?",
                    (message, severity, key),
                )
        return n == 1

    def clear_alert(self, key: str, now: datetime) -> tuple[Any, ...] | None:
        """Remove an active alert; returns its row when this call cleared it."""
        with self.tx() as tx:
            row = tx.one(
                "SELECT alert_key, unit, site, kind, severity, message, raised_at FROM active_alerts "
                "WHERE alert_key = ?",
                (key,),
            )
            if row is None or tx.execute("DELETE FROM active_alerts WHERE alert_key = ?", (key,)) != 1:
                return None
            tx.execute(
                "UPDATE alert_history SET cleared_at = ? WHERE alert_key = ? AND raised_at = ?",
                (iso(now), key, row[6]),
            )
        return row

    def active_alerts(self) -> list[dict[str, Any]]:
        with self.tx() as tx:
            rows = tx.rows(
                "SELECT alert_key, unit, site, kind, severity, message, raised_at FROM active_alerts "
                "ORDER BY raised_at DESC"
            )
        keys = ("alert_key", "unit", "site", "kind", "severity", "message", "raised_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def alert_counts(
        self, units: Sequence[str], site: str | None = None
    ) -> tuple[dict[str, int], dict[str, int]]:
        """Active alerts per unit of `units`, and per severity (of one site's, or all): counted in the
        database (a state has a thousand active alerts; the fleet page shows counts of them)."""
        with self.tx() as tx:
            per_unit = (
                tx.rows(
                    f"SELECT unit, COUNT(*) FROM active_alerts WHERE unit IN ({', '.join('?' * len(units))}) "
                    "GROUP BY unit",
                    units,
                )
                if units
                else []
            )
            sql, params = and_given(
                "SELECT severity, COUNT(*) FROM active_alerts WHERE 1 = 1", [], ("site = ?", site)
            )
            per_severity = tx.rows(sql + " GROUP BY severity", params)
        return {r[0]: int(r[1]) for r in per_unit}, {r[0]: int(r[1]) for r in per_severity}

    def alert_history(self, limit: int = 200) -> list[dict[str, Any]]:
        with self.tx() as tx:
            rows = tx.rows(
                "SELECT alert_key, unit, site, kind, severity, message, raised_at, cleared_at "
                "FROM alert_history ORDER BY raised_at DESC LIMIT ?",
                (limit,),
            )
        keys = ("alert_key", "unit", "site", "kind", "severity", "message", "raised_at", "cleared_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # ------------------------------------------------------------------ privacy
    def use_kit_time_granularity(self, seconds: int) -> int:
        """Person-caused events are kept at this resolution from now on; stored ones finer than it
        (older data, or a finer setting before) are rounded down too. Returns how many were."""
        self.kit_time_granularity_s = seconds
        from schemas.models import parse_event

        changed = 0
        with self.tx() as tx:
            row = tx.one("SELECT value FROM settings WHERE name = 'kit_time_granularity_s'")
            if row is not None and int(row[0]) % seconds == 0:
                return 0  # everything stored is already at least this coarse
            tx.execute(
                "INSERT INTO settings (name, value) VALUES ('kit_time_granularity_s', ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (str(seconds),),
            )
            rows = tx.rows(
                "SELECT unit, event_id, ts, payload, received_at FROM events WHERE type IN "
                f"({', '.join(['?'] * len(PERSON_EVENT_TYPES))})",
                PERSON_EVENT_TYPES,
            )
            for unit, event_id, ts, payload, received in rows:
                at = parse_iso(ts) or datetime.min.replace(tzinfo=UTC)
                rec = parse_iso(received) or at
                if coarsen(at, seconds) == at and coarsen(rec, seconds) == rec:
                    continue
                ev, raw = _coarsened(parse_event(payload), seconds)
                tx.execute(
                    "UPDATE events SET ts = ?, payload = ?, received_at = ? WHERE unit = ? AND event_id = ?",
                    (iso(ev.ts), raw, iso(coarsen(rec, seconds)), unit, event_id),
                )
                changed += 1
        return changed

    # ------------------------------------------------------------------ lots
    def hold_lot(self, lot: str, kind: str, reason: str, by: str, now: datetime) -> bool:
        """Put a lot on hold (True when this call did; a lot already held keeps its first reason)."""
        with self.tx() as tx:
            n = tx.execute(
                "INSERT INTO lot_holds (lot, kind, reason, held_by, held_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (lot) DO NOTHING",
                (lot, kind, reason, by, iso(now)),
            )
            if n == 1:
                tx.execute(
                    "INSERT INTO lot_hold_log (lot, at, action, by_whom, reason) VALUES (?, ?, 'hold', ?, ?)",
                    (lot, iso(now), by, f"{kind}: {reason}"),
                )
        return n == 1

    def release_lot(self, lot: str, reason: str, by: str, now: datetime) -> bool:
        with self.tx() as tx:
            n = tx.execute("DELETE FROM lot_holds WHERE lot = ?", (lot,))
            if n == 1:
                tx.execute(
                    "INSERT INTO lot_hold_log (lot, at, action, by_whom, reason) "
                    "VALUES (?, ?, 'release', ?, ?)",
                    (lot, iso(now), by, reason),
                )
        return n == 1

    def lot_holds(self) -> dict[str, dict[str, Any]]:
        with self.tx() as tx:
            rows = tx.rows("SELECT lot, kind, reason, held_by, held_at FROM lot_holds ORDER BY lot")
        return {r[0]: {"lot": r[0], "kind": r[1], "reason": r[2], "by": r[3], "since": r[4]} for r in rows}

    def lot_hold_log(self, lot: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        sql = "SELECT lot, at, action, by_whom, reason FROM lot_hold_log"
        params: list[Any] = []
        if lot is not None:
            sql, params = sql + " WHERE lot = ?", [lot]
        with self.tx() as tx:
            rows = tx.rows(sql + " ORDER BY at DESC LIMIT ?", [*params, limit])
        return [dict(zip(("lot", "at", "action", "by", "reason"), r, strict=True)) for r in rows]

    def dispensed_by_lot(self) -> dict[str, int]:
        """Kits dispensed per lot (kept at ingest; dispensed_by_lot_fresh() counts the events)."""
        with self.tx() as tx:
            rows = tx.rows("SELECT lot, dispensed FROM lot_counts WHERE dispensed > 0")
        return {r[0]: int(r[1]) for r in rows}

    def dispensed_by_lot_fresh(self) -> dict[str, int]:
        with self.tx() as tx:
            rows = tx.rows(
                "SELECT lot, COUNT(*) FROM events WHERE type = 'dispense' AND lot IS NOT NULL GROUP BY lot"
            )
        return {r[0]: int(r[1]) for r in rows}

    # Every lot segment in the fleet's columns, from the tables kept from each unit's newest state:
    # the reported lot queue (unit_lots), else the column's one lot with its counted stock, else (a
    # counted column no state describes) no lot and no product ("?": _product). Zero-count segments
    # left out. No '?' literal in the SQL: the PostgreSQL store turns ? into placeholders.
    _LOT_NAME = "COALESCE(NULLIF(lot, ''), '(no lot)')"  # as fleet_lots() names a segment's lot
    _SEGMENTS = (
        "SELECT u.site, c.unit, c.col, l.pos, c.product, l.lot, l.expiry, l.n, "
        "l.outside_s, l.excursion_s, l.mkt_c FROM unit_columns c JOIN units u ON u.unit = c.unit "
        "JOIN unit_lots l ON l.unit = c.unit AND l.col = c.col WHERE l.n <> 0 "
        "UNION ALL SELECT u.site, c.unit, c.col, 0, c.product, c.lot, c.expiry, "
        "COALESCE(s.stock, c.stock), NULL, NULL, NULL FROM unit_columns c JOIN units u ON u.unit = c.unit "
        "LEFT JOIN stock s ON s.unit = c.unit AND s.col = c.col "
        "WHERE COALESCE(s.stock, c.stock) <> 0 "
        "AND NOT EXISTS (SELECT 1 FROM unit_lots l WHERE l.unit = c.unit AND l.col = c.col) "
        "UNION ALL SELECT u.site, s.unit, s.col, 0, NULL, NULL, NULL, s.stock, NULL, NULL, NULL "
        "FROM stock s JOIN units u ON u.unit = s.unit WHERE s.stock <> 0 "
        "AND NOT EXISTS (SELECT 1 FROM unit_columns c WHERE c.unit = s.unit AND c.col = s.col)"
    )

    def lot_list(self) -> list[tuple[str, str, date | None]]:
        """(lot, product, soonest expiry) of every lot in a column: the product is the one of its
        first segment in fleet order (site, unit, column, front first), as fleet_lots() has it. One
        pass of SQL over the kept tables (both windows share one sort); a few rows per unit (the page
        sorts, filters and slices them)."""
        sql = (
            "SELECT name, product, expiry FROM (SELECT name, product, "
            "MIN(expiry) OVER (PARTITION BY name) AS expiry, "
            "ROW_NUMBER() OVER (PARTITION BY name ORDER BY site, unit, col, pos) AS rn FROM ("
            f"SELECT {self._LOT_NAME} AS name, product, expiry, site, unit, col, pos "
            f"FROM ({self._SEGMENTS}) seg) named) firsts WHERE rn = 1"
        )
        with self.tx() as tx:
            rows = tx.rows(sql)
        return [(r[0], _product(r[1]), date.fromisoformat(r[2]) if r[2] else None) for r in rows]

    def lot_sites(self, site: str | None = None) -> list[str]:
        """Every site with a kit in a column (site None); or the lots lying at `site`."""
        with self.tx() as tx:
            if site is None:
                return sorted(r[0] for r in tx.rows(f"SELECT DISTINCT site FROM ({self._SEGMENTS}) seg"))
            return [
                r[0]
                for r in tx.rows(
                    f"SELECT DISTINCT {self._LOT_NAME} FROM ({self._SEGMENTS}) seg WHERE site = ?",
                    (site,),
                )
            ]

    def lot_segments(
        self, lots: Sequence[str] | None
    ) -> tuple[list[SegmentRow], list[tuple[str, str, str, str]], dict[str, int]]:
        """The segments of these lots (None: of every lot) in fleet order, the units' own holds on
        them (unit, lot, kind, reason) and their kits dispensed (lot_counts)."""
        if lots is not None and not lots:
            return [], [], {}
        marks = ", ".join("?" * len(lots)) if lots is not None else ""
        params = list(lots) if lots is not None else []
        named = f"{self._LOT_NAME} IN ({marks})" if lots is not None else "1 = 1"
        literal = f"IN ({marks})" if lots is not None else "IS NOT NULL"  # a hold, a count: the lot as named
        with self.tx() as tx:
            segs = tx.rows(
                f"SELECT * FROM ({self._SEGMENTS}) seg WHERE {named} ORDER BY site, unit, col, pos", params
            )
            held = tx.rows(
                "SELECT h.unit, h.lot, h.kind, h.reason FROM unit_holds h JOIN units u ON u.unit = h.unit "
                f"WHERE h.lot {literal} ORDER BY u.site, u.unit, h.pos",
                params,
            )
            given = tx.rows(f"SELECT lot, dispensed FROM lot_counts WHERE lot {literal}", params)
        rows = [
            SegmentRow(
                site,
                unit,
                int(col),
                _product(product),
                lot,
                date.fromisoformat(expiry) if expiry else None,
                int(n),
                int(pos) == 0,
                outside,
                excursion,
                mkt,
            )
            for site, unit, col, pos, product, lot, expiry, n, outside, excursion, mkt in segs
        ]
        return rows, [tuple(h) for h in held], {r[0]: int(r[1]) for r in given if int(r[1]) > 0}  # type: ignore[misc]

    # ------------------------------------------------------------------ temperature history
    def add_temperatures(
        self, tx: Tx, unit: str, samples: Sequence[tuple[datetime, float]], bucket_s: int
    ) -> None:
        """Fold readings into per-bucket count/sum/min/max rows (bounded: one row per bucket)."""
        acc: dict[str, list[float]] = {}
        for at, c in samples:
            b = iso(coarsen(at, bucket_s))
            a = acc.setdefault(b, [0, 0.0, c, c])
            a[0] += 1
            a[1] += c
            a[2], a[3] = min(a[2], c), max(a[3], c)
        for b, (n, total, lo, hi) in sorted(acc.items()):
            tx.execute(
                "INSERT INTO temperature_history (unit, bucket, n, sum_c, min_c, max_c) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (unit, bucket) DO UPDATE SET "
                "n = temperature_history.n + excluded.n, "
                "sum_c = temperature_history.sum_c + excluded.sum_c, "
                "min_c = CASE WHEN excluded.min_c < temperature_history.min_c THEN excluded.min_c "
                "ELSE temperature_history.min_c END, "
                "max_c = CASE WHEN excluded.max_c > temperature_history.max_c THEN excluded.max_c "
                "ELSE temperature_history.max_c END",
                (unit, b, int(n), total, lo, hi),
            )

    def temperatures(self, unit: str, since: datetime) -> list[tuple[datetime, float, float, float]]:
        """(bucket start, min, mean, max) for one unit since `since`, oldest first."""
        with self.tx() as tx:
            rows = tx.rows(
                "SELECT bucket, min_c, sum_c / n, max_c FROM temperature_history "
                "WHERE unit = ? AND bucket >= ? ORDER BY bucket",
                (unit, iso(since)),
            )
        return [(parse_iso(r[0]) or since, float(r[1]), float(r[2]), float(r[3])) for r in rows]

    def prune_temperatures(self, before: datetime) -> int:
        with self.tx() as tx:
            return tx.execute("DELETE FROM temperature_history WHERE bucket < ?", (iso(before),))

    # ------------------------------------------------------------------ reports
    def period_counts(
        self, start: datetime, end: datetime, by: Sequence[str] = ("program", "site", "unit")
    ) -> list[dict[str, Any]]:
        """Counts of events with start <= ts < end, grouped by any of program, site, unit, month (the
        program and site recorded with each event; months in the reporting zone). From the counts kept
        at ingest when start and end are midnights of the reporting zone (every calendar period is),
        else counted from the events."""
        allowed = ("program", "site", "unit", "month", "language")
        if any(b not in allowed for b in by):
            raise StoreError(f"expected grouping by {allowed}, got {tuple(by)}")
        if "language" in by:  # the counts kept at ingest have no language: count the events
            return self.period_counts_fresh(start, end, by)
        tz = self.report_tz
        first, after = start.astimezone(tz), end.astimezone(tz)
        midnight = (first.hour, first.minute, first.second, first.microsecond) == (0, 0, 0, 0)
        if (
            midnight
            and (after.hour, after.minute, after.second, after.microsecond) == (0, 0, 0, 0)
            and after > first
        ):
            from datetime import timedelta

            last = (after - timedelta(days=1)).date()
            return self._period_kept(first.date().isoformat(), last.isoformat(), by)
        return self.period_counts_fresh(start, end, by)

    def period_counts_fresh(
        self, start: datetime, end: datetime, by: Sequence[str] = ("program", "site", "unit")
    ) -> list[dict[str, Any]]:
        """period_counts() counted from the events table now (the check of the kept counts, and the
        way for a period that does not start and end at the zone's midnights)."""
        allowed = ("program", "site", "unit", "month", "language")
        if any(b not in allowed for b in by):
            raise StoreError(f"expected grouping by {allowed}, got {tuple(by)}")
        cols = [f"COALESCE(e.{b}, '')" for b in by]
        group = (" GROUP BY " + ", ".join(cols) + " ORDER BY " + ", ".join(cols)) if cols else ""
        select = ", ".join([*cols, _REPORT_SUMS])
        with self.tx() as tx:
            rows = tx.rows(
                f"SELECT {select} FROM events e WHERE e.ts >= ? AND e.ts < ?{group}", (iso(start), iso(end))
            )
        keys = (*by, *REPORT_COUNTS)
        n = len(by)
        return [
            dict(zip(keys, (*r[:n], *(int(x or 0) for x in r[n:])), strict=True))
            for r in rows
            if n or any(x for x in r)
        ]

    def hourly_dispenses(
        self, since: datetime, only: Sequence[str] | None = None
    ) -> list[tuple[str, str | None, datetime, int]]:
        """(unit, product, hour, kits) of kits to people since `since` (test vends left out)."""
        sql = "SELECT unit, product, substr(ts, 1, 13), COUNT(*) FROM events WHERE type = 'dispense' "
        sql += "AND via <> 'test' AND ts >= ?"
        params: list[Any] = [iso(since)]
        if only is not None:
            if not only:
                return []
            sql += f" AND unit IN ({', '.join('?' * len(only))})"
            params += list(only)
        with self.tx() as tx:
            rows = tx.rows(sql + " GROUP BY unit, product, substr(ts, 1, 13)", params)
        hours: dict[str, datetime] = {}  # "YYYY-MM-DDTHH" -> datetime, parsed once (strptime was 70% of it)
        out = []
        for unit, product, hour, n in rows:
            at = hours.get(hour)
            if at is None:
                at = hours[hour] = datetime(
                    int(hour[0:4]), int(hour[5:7]), int(hour[8:10]), int(hour[11:13]), tzinfo=UTC
                )
            out.append((unit, product, at, int(n)))
        return out


_EVENT_COLUMNS = (
    "unit, event_id, seq, type, ts, month, col, product, doses, stock_after, "
    "via, phase, language, discrepancy, payload, received_at, site, program, lot"
)
_INSERT_EVENT = (
    f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES ({', '.join(['?'] * 19)}) "
    "ON CONFLICT (unit, event_id) DO NOTHING"
)
_EVENT_TYPES = (
    "text text bigint text text text integer text integer integer text text text integer text text "
    "text text text"
)
_PG_INSERT_EVENTS = (  # %b: arrays sent in binary (no text escaping of each JSON payload)
    f"INSERT INTO events ({_EVENT_COLUMNS}) SELECT * FROM unnest("
    + ", ".join(f"%b::{t}[]" for t in _EVENT_TYPES.split(" "))
    + ") ON CONFLICT (unit, event_id) DO NOTHING RETURNING unit, event_id"
)


def _product(name: str | None) -> str:
    return "?" if name is None else name  # a column no state describes (fleet.columns_of)


def _event_row(event: EventBase, ts: datetime, raw: str, received: str, tz: tzinfo) -> tuple[Any, ...]:
    """The events table's columns for one event stored with time `ts` (plain attribute reads: no
    model_dump per event)."""
    g = event.__dict__.get  # a field the event's type lacks: None (getattr raised inside pydantic)
    local = ts.astimezone(tz)
    return (
        event.unit,
        event.event_id,
        event.seq,
        g("type"),
        iso(ts),
        f"{local.year:04d}-{local.month:02d}",
        g("column"),
        g("product"),
        g("doses"),
        g("stock_after"),
        g("via"),
        g("phase"),
        g("language"),
        g("discrepancy"),
        raw,
        received,
    )


_TS_FIELD = re.compile(r'"ts"\s*:\s*"[^"]*"')


def _coarsened(event: EventBase, granularity_s: int, raw: str | None = None) -> tuple[EventBase, str]:
    """The event with its time rounded down, and the payload text central keeps for it (the unit's
    exact time is never stored). The top-level "ts" of the received text is replaced in place (these
    event types have no other "ts", and a "ts" inside a string is escaped, so it never matches)."""
    at = coarsen(event.ts, granularity_s)
    ev = event.model_copy(update={"ts": at})
    return ev, ev.model_dump_json() if raw is None else _coarse_payload(event, at, raw)


def _coarse_payload(event: EventBase, at: datetime, raw: str) -> str:
    """The received text with its top-level "ts" replaced by `at` (else the event written again)."""
    u = at.astimezone(UTC)
    z = f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}Z"
    text, n = _TS_FIELD.subn(f'"ts":"{z}"', raw, count=1)
    return text if n == 1 else event.model_copy(update={"ts": at}).model_dump_json()


def _unit_row(r: tuple[Any, ...], stock: dict[int, int]) -> UnitRow:
    state = UnitState.model_validate_json(r[7]) if r[7] else None
    telemetry = Telemetry.model_validate_json(r[8]) if r[8] else None
    return UnitRow(
        unit=r[0],
        site=r[1],
        name=r[2],
        source=r[3],
        status=r[4],
        status_session=int(r[5]) if r[5] is not None else None,
        status_since=parse_iso(r[6]),
        state=state,
        telemetry=telemetry,
        acked_seq=int(r[9]),
        reported_last_seq=int(r[10]),
        stock=stock,
        seq_reset_at=parse_iso(r[11]),
        program=r[12] or "Jail vending",
    )


class SqliteStore(Store):
    """A SQLite file: WAL, synchronous=FULL (these are medicine counts), one writer at a time."""

    dialect = "sqlite"

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = str(path)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=60)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA busy_timeout=60000")

    @contextmanager
    def tx(self) -> Iterator[Tx]:
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                t = Tx(cur, "sqlite")
                yield t
                rollups.flush(t, self.dialect, t.rollup)
            except BaseException:
                self._conn.rollback()
                raise
            self._conn.commit()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


POOL_SIZE = 4  # connections one PostgreSQL store opens at most (the web's requests read side by side)
# a statement that only reads: run on its own, no transaction opened for it (see PostgresStore.tx)
_READ_ONLY = re.compile(
    r"\s*SELECT\b(?!.*\b(?:FOR\s+(?:UPDATE|SHARE|NO\s+KEY|KEY)|pg_advisory))", re.IGNORECASE | re.DOTALL
)


class _PgTx(Tx):
    """A PostgreSQL transaction opened at its first statement that writes or locks: the reads before
    it run on their own (under READ COMMITTED each statement sees its own snapshot in a transaction
    too, so they see the same), and a transaction that only reads costs no BEGIN and COMMIT round
    trips (a fleet page runs a dozen of them)."""

    def __init__(self, cur: Any) -> None:
        super().__init__(cur, "pg")
        self.began = False

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        if not self.began and not _READ_ONLY.match(sql):
            self._cur.execute("BEGIN")
            self.began = True
        return super().execute(sql, params)


class PostgresStore(Store):
    """PostgreSQL via psycopg 3. `schema` (tests) puts every table in its own schema. Up to
    `pool_size` connections, opened when threads ask at once (the web's); a transaction runs on one
    of them, and a tx() inside another in the same thread joins it. A connection the server dropped
    is replaced on the next transaction (the failed one raised, nothing committed)."""

    dialect = "postgresql"

    def __init__(self, url: str, schema: str | None = None, pool_size: int = POOL_SIZE) -> None:
        super().__init__()
        self.url, self.schema, self.pool_size = url, schema, pool_size
        self._pool = threading.Condition()
        self._free: list[Any] = [self._connect()]
        self._opened = 1  # connections free or in use
        self._closed = False
        self._here = threading.local()  # the transaction this thread has open

    def _connect(self) -> Any:
        import psycopg

        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        # short queries over indexes and kept counts: compiling them (JIT) costs more than it saves
        # (40-50 ms of a 150 ms page at state scale, see docs/inventory.md)
        conn.execute("SET jit = off")
        # statements are prepared after a few runs (psycopg); a generic plan for "these units since
        # then" scans every unit's recent events (600 ms at state scale): plan each run with its values
        conn.execute("SET plan_cache_mode = force_custom_plan")
        conn.execute("SET work_mem = '32MB'")  # a year's report sorts 24,000 kept rows: in memory
        if self.schema:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            conn.execute(f'SET search_path TO "{self.schema}"')
        return conn

    def _take(self) -> Any:
        with self._pool:
            while not self._free and self._opened >= self.pool_size and not self._closed:
                self._pool.wait()
            if self._closed:
                raise StoreError("expected an open store, got one already closed")
            conn = self._free.pop() if self._free else None
            if conn is None:
                self._opened += 1
        if conn is None or conn.closed or conn.broken:
            try:
                conn = self._connect()
            except BaseException:
                with self._pool:
                    self._opened -= 1
                    self._pool.notify()
                raise
        return conn

    def _give(self, conn: Any) -> None:
        """Back to the pool; a connection found dropped goes, and the idle ones with it (the server
        restarted or ended them all, most likely: each would fail one more transaction)."""
        with self._pool:
            gone = [conn] if self._closed or conn.closed or conn.broken else []
            if gone and not self._closed:
                gone, self._free = gone + self._free, []
            elif not gone:
                self._free.append(conn)
            self._opened -= len(gone)
            self._pool.notify_all()
        for c in gone:
            c.close()

    @contextmanager
    def tx(self) -> Iterator[Tx]:
        outer: _PgTx | None = getattr(self._here, "tx", None)
        if outer is not None:
            yield outer
            return
        conn = self._take()
        try:
            with conn.cursor() as cur:
                t = self._here.tx = _PgTx(cur)
                try:
                    yield t
                    rollups.flush(t, self.dialect, t.rollup)
                    if t.began:
                        conn.commit()
                except BaseException:
                    if t.began and not conn.closed:
                        with suppress(Exception):  # the error that got us here is the one to raise
                            conn.rollback()
                    raise
                finally:
                    self._here.tx = None
        finally:
            self._give(conn)

    def _insert_event_rows(self, tx: Tx, rows: list[tuple[Any, ...]]) -> set[tuple[str, str]]:
        """One statement of fixed text for any number of rows (one array per column, unnested in
        order), so it is parsed and planned once per connection instead of once per batch."""
        if not rows:
            return set()
        columns = [list(c) for c in zip(*rows, strict=True)]
        return {(r[0], r[1]) for r in tx.rows(_PG_INSERT_EVENTS, columns)}

    def backend_pid(self) -> int:
        """The server process of one of this store's connections (the only one, for a store one
        thread uses)."""
        with self.tx() as tx:
            row = tx.one("SELECT pg_backend_pid()")
        return int(row[0]) if row else 0

    def _lock_migrations(self, tx: Tx) -> None:
        tx.execute("SELECT pg_advisory_xact_lock(7461)")

    def is_retryable(self, exc: BaseException) -> bool:
        import psycopg.errors

        return isinstance(exc, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure)

    def close(self) -> None:
        with self._pool:
            self._closed = True
            free, self._free = self._free, []
            self._opened -= len(free)
            self._pool.notify_all()
        for conn in free:
            conn.close()


def open_store(db: str, schema: str | None = None) -> Store:
    """`postgresql://...` (or postgres://) opens PostgreSQL, anything else is a SQLite file path
    (`sqlite:///path` also accepted). Migrations are applied before returning."""
    if db.startswith(("postgresql://", "postgres://")):
        store: Store = PostgresStore(db, schema=schema)
    else:
        store = SqliteStore(db.removeprefix("sqlite://") if db.startswith("sqlite://") else db)
    try:
        store.migrate()
    except Exception:
        store.close()
        raise
    return store
