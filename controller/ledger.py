"""The unit's local ledger, the one home of its durable state: every event (with its stock change, in one
transaction), the outbox the reporter drains, the controller command ids, column stock/lots/faults,
active alarms, the reporter's MQTT session counter and the remote commands' answers (CommandMemory).
`read_census(path)` counts what a ledger file holds, read-only, for tools outside the daemon.

SQLite in WAL mode with synchronous=FULL: a committed row survives power loss. `seq` is allocated
here, persisted, and only increases. Thread-safe: the reporter reads from its own thread.
"""

from __future__ import annotations

import contextlib
import json
import math
import secrets
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

from controller.clock import Clock
from controller.errors import ControllerError
from firmware_py.codec import DIAG_COMMAND_BASE
from schemas.models import AlarmEvent, AlarmState, CommandBase, CommandResponse, EventBase, parse_event

E = TypeVar("E", bound=EventBase)
Row = tuple[Any, ...]  # a SQLite row as stored: each reader converts its values
U32 = 2**32

SCHEMA = """
CREATE TABLE IF NOT EXISTS events(seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL, payload BLOB NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox(seq INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS columns(col INTEGER PRIMARY KEY, product TEXT NOT NULL,
    stock INTEGER NOT NULL CHECK (stock >= 0), lot TEXT, expiry TEXT, fault TEXT);
CREATE TABLE IF NOT EXISTS commands(command_id INTEGER PRIMARY KEY, col INTEGER NOT NULL,
    language TEXT, via TEXT NOT NULL, state TEXT NOT NULL, outcome TEXT, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alarms(code TEXT PRIMARY KEY, severity TEXT NOT NULL, message TEXT NOT NULL,
    since TEXT NOT NULL, col INTEGER);
CREATE TABLE IF NOT EXISTS lot_excursions(lot TEXT PRIMARY KEY, seconds REAL NOT NULL);
"""
LEDGER_VERSION = 4
# version 2: a column is a queue of lot segments (front = lowest id), lot holds, temperature readings
SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS lot_segments(id INTEGER PRIMARY KEY AUTOINCREMENT, col INTEGER NOT NULL,
    lot TEXT, expiry TEXT, count INTEGER NOT NULL CHECK (count >= 0), loaded_at TEXT NOT NULL,
    out_s REAL NOT NULL DEFAULT 0, exc_s REAL NOT NULL DEFAULT 0,
    mkt_sum REAL NOT NULL DEFAULT 0, mkt_dt REAL NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS lot_segments_col ON lot_segments(col, id);
CREATE TABLE IF NOT EXISTS lot_holds(lot TEXT PRIMARY KEY, kind TEXT NOT NULL, reason TEXT NOT NULL,
    by_whom TEXT NOT NULL, since TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS temperature_samples(id INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL,
    celsius REAL NOT NULL);
"""
# version 3: the reporter's remote command answers (and its session counter, in meta) move into the
# ledger from the second SQLite file earlier versions kept next to it (<ledger>.mqtt.sqlite)
SCHEMA_V3 = """
CREATE TABLE IF NOT EXISTS command_answers(n INTEGER PRIMARY KEY AUTOINCREMENT,
    command_id TEXT UNIQUE NOT NULL, name TEXT NOT NULL, answer TEXT NOT NULL, issued_by TEXT, command TEXT,
    answered_at TEXT);
"""
MEMORY_LIMIT = 100_000  # live command answers (inside the age window); past it new commands are refused
MKT_DH_OVER_R = 83144.0 / 8.3144  # activation energy 83.144 kJ/mol over the gas constant, in kelvin


def mkt_c(mkt_sum: float, mkt_dt: float) -> float | None:
    """Mean kinetic temperature (Haynes) from the time-weighted sum of exp(-dH/RT)."""
    if mkt_dt <= 0 or mkt_sum <= 0:
        return None
    return MKT_DH_OVER_R / -math.log(mkt_sum / mkt_dt) - 273.15


class LedgerError(ControllerError):
    """The ledger refused a change (it would break an invariant) or its file is unusable."""


class LedgerUnavailable(LedgerError):
    """The ledger cannot be written now (disk full, file system read-only, database locked past the busy
    timeout, I/O error). Nothing was changed; nothing that needs a record may happen until it can."""


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    event_type: str
    payload: bytes
    created_at: datetime


@dataclass(frozen=True)
class ColumnRow:
    """A column; `lot`/`expiry` are its front kit's (the next to drop), `held` why that kit may not
    vend (its lot is on hold), None when it may."""

    column: int
    product: str
    stock: int
    lot: str | None
    expiry: date | None
    fault: str | None
    held: str | None = None


@dataclass(frozen=True)
class Segment:
    id: int
    column: int
    lot: str | None
    expiry: date | None
    count: int
    loaded_at: datetime
    seconds_outside_label: float
    seconds_in_excursion: float
    mkt_c: float | None


@dataclass(frozen=True)
class Hold:
    lot: str
    kind: str  # recall | heat
    reason: str
    by: str
    since: datetime


@dataclass(frozen=True)
class CommandRow:
    command_id: int
    column: int
    language: str | None
    via: str
    state: str  # "pending" until settled
    outcome: str | None


@dataclass(frozen=True)
class ColumnChange:
    """A change to one column applied in the same transaction as an event."""

    column: int
    stock_delta: int = 0
    stock: int | None = None
    lot: str | None = None
    expiry: date | None = None
    set_lot: bool = False
    fault: str | None = None
    set_fault: bool = False
    # a restock: the kits found in the column (blind count, or the ledger's), then the kits now in it;
    # kits added go behind the ones already in the spiral as a new segment of (lot, expiry)
    found: int | None = None


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA busy_timeout=5000")
    return db


def _read_view(path: Path, clock: Clock) -> sqlite3.Connection:
    """What can still be read of a ledger that cannot be written: the file read-only with its WAL, or
    without one (a full or read-only file system cannot give SQLite the shared-memory file a WAL
    reader needs) the file alone as it is; when nothing can be read, an empty ledger in memory (nothing
    to send, nothing on record: the unit still says it is out of service)."""
    wal = path.with_name(path.name + "-wal")
    uris = [path.resolve().as_uri() + "?mode=ro"]
    with contextlib.suppress(OSError):
        if not wal.exists() or wal.stat().st_size == 0:  # no WAL: the file alone is the whole ledger
            uris.append(path.resolve().as_uri() + "?immutable=1")
    for uri in uris:
        try:
            db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            db.execute("SELECT value FROM meta LIMIT 1").fetchall()  # a real read
            return db
        except sqlite3.Error:
            continue
    empty = Ledger(":memory:", clock)  # the full schema, migrated
    return empty._db


class Ledger:
    """Ledger(path, clock, unit_id). A file that cannot be opened for writing (disk full, file system
    read-only) raises LedgerUnavailable, or with `read_if_unwritable` opens for reading only: every write
    then raises LedgerUnavailable until probe() finds the file writable again (`read_only` says why)."""

    def __init__(
        self, path: str | Path, clock: Clock, unit_id: str | None = None, read_if_unwritable: bool = False
    ) -> None:
        self.path = Path(path)
        self.clock = clock
        self._lock = threading.RLock()
        self.read_only: str | None = None  # why writes are refused (None: the file takes writes)
        self._session_floor = 0  # the MQTT session numbers handed out by this process
        try:
            self._db = self._open_writable()
        except LedgerUnavailable as exc:
            if not read_if_unwritable:
                raise
            self.read_only = str(exc)
            self._db = _read_view(self.path, clock)
        self.unit_id = unit_id or self._meta("unit_id")
        if unit_id and self.read_only is None:
            self._check_unit(unit_id)

    # ------------------------------------------------------------ plumbing

    def _open_writable(self) -> sqlite3.Connection:
        """The ledger file opened for writing, its schema made and migrated (self._db becomes it)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = _connect(self.path)
            db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerUnavailable(f"{self.path}: expected to open the ledger for writing, found: {exc}") \
                from exc
        with self._lock:
            previous = getattr(self, "_db", None)
            self._db = db
            try:
                self._migrate()
            except LedgerUnavailable:
                self._db = previous  # type: ignore[assignment]  # None only while constructing
                db.close()
                raise
        return db

    def _migrate(self) -> None:
        """Version 1 ledgers kept one lot per column: each column's kits become one segment of that
        lot (history, events and stock untouched). Version 3 adds the remote command answers."""
        with self._tx() as db:
            version = int(self._meta("ledger_version", "1") or 1)
            if version >= LEDGER_VERSION:
                return
            if version < 2:
                for stmt in SCHEMA_V2.split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                now = self.clock.now().isoformat()
                for col, stock, lot, expiry in db.execute(
                    "SELECT col, stock, lot, expiry FROM columns WHERE stock > 0"
                ).fetchall():
                    db.execute(
                        "INSERT INTO lot_segments(col, lot, expiry, count, loaded_at) VALUES(?,?,?,?,?)",
                        (col, lot, expiry, stock, now),
                    )
            if version < 3:
                db.execute(SCHEMA_V3)
            if version < 4:  # answers keep their command's issued_at (kept while it may pass the age check)
                have = {r[1] for r in db.execute("PRAGMA table_info(command_answers)")}
                if "issued_at" not in have:
                    db.execute("ALTER TABLE command_answers ADD COLUMN issued_at TEXT NOT NULL "
                               "DEFAULT '9999-12-31T00:00:00.000000+00:00'")
            self._set_meta(db, "ledger_version", LEDGER_VERSION)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. A write the file system or SQLite refuses raises LedgerUnavailable
        (after rolling back), never leaves a transaction open."""
        with self._lock:
            if self.read_only is not None:
                raise LedgerUnavailable(f"{self.path}: open for reading only ({self.read_only})")
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise self._unavailable(exc) from exc
            try:
                yield self._db
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, sqlite3.OperationalError | sqlite3.InternalError) or (
                    type(exc) is sqlite3.DatabaseError
                ):
                    raise self._unavailable(exc) from exc
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise self._unavailable(exc) from exc

    def _rollback(self) -> None:
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the failed statement may have rolled back already

    def _unavailable(self, exc: BaseException) -> LedgerUnavailable:
        return LedgerUnavailable(f"{self.path}: expected to write the ledger, SQLite said: {exc}")

    def probe(self) -> None:
        """A small real write (and a fresh connection when the old one cannot write): returns when the
        ledger takes writes again, raises LedgerUnavailable while it does not. A ledger opened for reading
        only is opened for writing (schema, migration, unit check) once the file system lets it."""
        if self.read_only is not None:
            with self._lock:
                why, self.read_only = self.read_only, None
                view = self._db
                try:
                    self._open_writable()
                except LedgerUnavailable:
                    self.read_only = why
                    raise
                view.close()
            if self.unit_id:
                self._check_unit(self.unit_id)
            return
        try:
            with self._tx() as db:
                self._set_meta(db, "probe", self.clock.now().isoformat())
            return
        except LedgerUnavailable:
            pass
        with self._lock:  # a file system remounted read-only and back: the old handle may stay read-only
            try:
                fresh = _connect(self.path)
            except sqlite3.Error as exc:
                raise self._unavailable(exc) from exc
            old, self._db = self._db, fresh
            try:
                old.close()
            except sqlite3.Error:
                pass
        with self._tx() as db:
            self._set_meta(db, "probe", self.clock.now().isoformat())

    def _rows(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """What one read finds (under the connection's lock)."""
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _row(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        with self._lock:
            row: Row | None = self._db.execute(sql, params).fetchone()
        return row

    def _count(self, sql: str, params: Sequence[object] = ()) -> int:
        row = self._row(sql, params)
        return int(row[0]) if row else 0

    def _meta(self, key: str, default: str | None = None) -> str | None:
        row = self._row("SELECT value FROM meta WHERE key=?", (key,))
        return row[0] if row else default

    @staticmethod
    def _set_meta(db: sqlite3.Connection, key: str, value: object) -> None:
        db.execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, str(value)),
        )

    def _check_unit(self, unit_id: str) -> None:
        stored = self._meta("unit_id")
        if stored is None:
            with self._tx() as db:
                self._set_meta(db, "unit_id", unit_id)
        elif stored != unit_id:
            raise LedgerError(f"{self.path}: expected the ledger of unit {unit_id!r}, found unit {stored!r}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------ events

    def record(
        self,
        event_cls: type[E],
        *,
        changes: tuple[ColumnChange, ...] = (),
        settle: tuple[int, str] | None = None,
        **fields: object,
    ) -> E:
        """Append one event; apply its column changes and settle its command in the same transaction.
        `fields` are the event's own (the model checks each when the event is built: a wrong name or
        value raises before anything is written). A `stock_after` field, when the event has one, is
        filled from the first change's column."""
        if self.unit_id is None:
            raise LedgerError("expected a unit id before recording events, found none")
        with self._tx() as db:
            for change in changes:
                after = self._apply(db, change)
                if "stock_after" in event_cls.model_fields and "stock_after" not in fields:
                    fields["stock_after"] = after
            if settle is not None:
                self._settle(db, *settle)
            return self._append(db, event_cls, fields)

    def record_many(self, event_cls: type[E], many: Iterable[Mapping[str, object]]) -> int:
        """Append one event of `event_cls` per item of `many` (each an event's own fields), all in one
        transaction, without column changes or commands: how many (loading a ledger for a benchmark)."""
        if self.unit_id is None:
            raise LedgerError("expected a unit id before recording events, found none")
        with self._tx() as db:
            return sum(1 for fields in many if self._append(db, event_cls, fields))

    def _append(self, db: sqlite3.Connection, event_cls: type[E], fields: Mapping[str, object]) -> E:
        seq = int(self._meta("last_seq", "0") or 0) + 1
        now = self.clock.now()
        identity = {"event_id": uuid.uuid4().hex, "seq": seq, "ts": now, "unit": str(self.unit_id)}
        event = event_cls.model_validate({**identity, **fields})
        db.execute(
            "INSERT INTO events(seq, event_id, event_type, payload, created_at) VALUES(?,?,?,?,?)",
            (
                seq,
                event.event_id,
                getattr(event, "type", "event"),
                event.model_dump_json().encode(),
                now.isoformat(),
            ),
        )
        db.execute("INSERT INTO outbox(seq) VALUES(?)", (seq,))
        self._set_meta(db, "last_seq", seq)
        return event

    def _apply(self, db: sqlite3.Connection, c: ColumnChange) -> int:
        row = db.execute("SELECT stock FROM columns WHERE col=?", (c.column,)).fetchone()
        if row is None:
            raise LedgerError(f"expected a known column, found column {c.column}")
        stock = c.stock if c.stock is not None else row[0] + c.stock_delta
        if stock < 0:
            raise LedgerError(f"column {c.column}: expected stock >= 0 after the change, found {stock}")
        db.execute("UPDATE columns SET stock=? WHERE col=?", (stock, c.column))
        self._move_segments(db, c, int(row[0]), int(stock))
        if c.set_fault:
            db.execute("UPDATE columns SET fault=? WHERE col=?", (c.fault, c.column))
        return int(stock)

    def _move_segments(self, db: sqlite3.Connection, c: ColumnChange, before: int, after: int) -> None:
        """Keep the column's lot queue equal to its stock: a kit leaves from the front; a restock
        first sets what was found (missing kits leave from the front, extra ones join the back),
        then adds its kits behind them or takes the difference from the front; a lot set without a
        count relabels every kit. The column row mirrors the front segment's lot and expiry."""
        col = c.column
        expiry = c.expiry.isoformat() if c.expiry else None
        now = self.clock.now().isoformat()
        if c.found is not None:
            self._fit(db, col, c.found, c.lot, expiry, now)
            if after > c.found:
                db.execute(
                    "INSERT INTO lot_segments(col, lot, expiry, count, loaded_at) VALUES(?,?,?,?,?)",
                    (col, c.lot, expiry, after - c.found, now),
                )
            else:
                self._take_front(db, col, c.found - after)
        elif c.set_lot:
            db.execute("DELETE FROM lot_segments WHERE col=?", (col,))
            if after:
                db.execute(
                    "INSERT INTO lot_segments(col, lot, expiry, count, loaded_at) VALUES(?,?,?,?,?)",
                    (col, c.lot, expiry, after, now),
                )
        else:
            self._fit(db, col, before, None, None, now)
            if after < before:
                self._take_front(db, col, before - after)
            elif after > before:
                self._fit(db, col, after, None, None, now)
        front = db.execute(
            "SELECT lot, expiry FROM lot_segments WHERE col=? AND count > 0 ORDER BY id LIMIT 1", (col,)
        ).fetchone()
        if front is not None:
            db.execute("UPDATE columns SET lot=?, expiry=? WHERE col=?", (front[0], front[1], col))
        elif c.set_lot or c.found is not None:
            db.execute("UPDATE columns SET lot=?, expiry=? WHERE col=?", (c.lot, expiry, col))

    @staticmethod
    def _take_front(db: sqlite3.Connection, col: int, n: int) -> None:
        while n > 0:
            seg = db.execute(
                "SELECT id, count FROM lot_segments WHERE col=? AND count > 0 ORDER BY id LIMIT 1", (col,)
            ).fetchone()
            if seg is None:
                return
            take = min(n, int(seg[1]))
            db.execute("UPDATE lot_segments SET count = count - ? WHERE id=?", (take, seg[0]))
            n -= take
        db.execute("DELETE FROM lot_segments WHERE col=? AND count = 0", (col,))

    def _fit(
        self, db: sqlite3.Connection, col: int, want: int, lot: str | None, expiry: str | None, now: str
    ) -> None:
        """Make the queue hold `want` kits: fewer found leave from the front; more found join the last
        segment (or a new one of `lot` in an empty column)."""
        have = int(
            db.execute("SELECT COALESCE(SUM(count), 0) FROM lot_segments WHERE col=?", (col,)).fetchone()[0]
        )
        if have > want:
            self._take_front(db, col, have - want)
        elif have < want:
            last = db.execute(
                "SELECT id FROM lot_segments WHERE col=? ORDER BY id DESC LIMIT 1", (col,)
            ).fetchone()
            if last is not None:
                db.execute("UPDATE lot_segments SET count = count + ? WHERE id=?", (want - have, last[0]))
            else:
                db.execute(
                    "INSERT INTO lot_segments(col, lot, expiry, count, loaded_at) VALUES(?,?,?,?,?)",
                    (col, lot, expiry, want - have, now),
                )

    def events(self, after_seq: int = 0, event_type: str | None = None) -> list[EventBase]:
        sql = "SELECT payload FROM events WHERE seq > ?" + (" AND event_type=?" if event_type else "")
        args: tuple[object, ...] = (after_seq, event_type) if event_type else (after_seq,)
        rows = self._rows(sql + " ORDER BY seq", args)
        return [parse_event(r[0]) for r in rows]

    def count(self, event_type: str) -> int:
        return self._count("SELECT COUNT(*) FROM events WHERE event_type=?", (event_type,))

    # ------------------------------------------------------------ outbox (the reporter's API)

    def pending(self, after_seq: int, limit: int) -> list[OutboxRow]:
        rows = self._rows(
            "SELECT e.seq, e.event_type, e.payload, e.created_at FROM outbox o JOIN events e USING(seq)"
            " WHERE o.seq > ? ORDER BY o.seq LIMIT ?",
            (after_seq, limit),
        )
        return [OutboxRow(r[0], r[1], bytes(r[2]), datetime.fromisoformat(r[3])) for r in rows]

    def prune(self, acked_seq: int) -> int:
        """Drop outbox rows up to acked_seq (clamped to last_seq). Events stay in the ledger."""
        with self._tx() as db:
            acked = min(acked_seq, self.last_seq())
            if acked <= self.acked_seq():
                return 0
            removed = db.execute("DELETE FROM outbox WHERE seq <= ?", (acked,)).rowcount
            self._set_meta(db, "acked_seq", acked)
        return int(removed)

    def depth(self) -> int:
        return self._count("SELECT COUNT(*) FROM outbox")

    def oldest_pending_at(self) -> datetime | None:
        row = self._row("SELECT MIN(e.created_at) FROM outbox o JOIN events e USING(seq)")
        return datetime.fromisoformat(row[0]) if row and row[0] else None

    def last_seq(self) -> int:
        return int(self._meta("last_seq", "0") or 0)

    def acked_seq(self) -> int:
        return int(self._meta("acked_seq", "0") or 0)

    # ------------------------------------------------------------ columns

    def ensure_column(self, column: int, product: str) -> bool:
        """Create the column row (stock 0) if new; returns True when it was created."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO columns(col, product, stock) VALUES(?, ?, 0)", (column, product)
            )
            if cur.rowcount == 0:
                db.execute("UPDATE columns SET product=? WHERE col=?", (product, column))
            return bool(cur.rowcount)

    def columns(self) -> list[ColumnRow]:
        rows = self._rows(
            "SELECT c.col, c.product, c.stock, c.lot, c.expiry, c.fault, h.kind, h.reason FROM columns c "
            "LEFT JOIN lot_holds h ON h.lot = c.lot AND c.stock > 0 ORDER BY c.col"
        )
        return [
            ColumnRow(
                r[0],
                r[1],
                r[2],
                r[3],
                date.fromisoformat(r[4]) if r[4] else None,
                r[5],
                f"lot {r[3]} on {r[6]} hold: {r[7]}" if r[6] else None,
            )
            for r in rows
        ]

    def segments(self, column: int | None = None) -> list[Segment]:
        """Lot segments, front first per column."""
        sql = (
            "SELECT id, col, lot, expiry, count, loaded_at, out_s, exc_s, mkt_sum, mkt_dt FROM lot_segments "
            "WHERE count > 0" + (" AND col=?" if column is not None else "") + " ORDER BY col, id"
        )
        rows = self._rows(sql, (column,) if column is not None else ())
        return [
            Segment(
                r[0],
                r[1],
                r[2],
                date.fromisoformat(r[3]) if r[3] else None,
                r[4],
                datetime.fromisoformat(r[5]),
                r[6],
                r[7],
                mkt_c(r[8], r[9]),
            )
            for r in rows
        ]

    # ------------------------------------------------------------ lot holds

    def hold_lot(self, lot: str, kind: str, reason: str, by: str) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO lot_holds(lot, kind, reason, by_whom, since) VALUES(?,?,?,?,?)",
                (lot, kind, reason, by, self.clock.now().isoformat()),
            )
        return bool(cur.rowcount)

    def release_lot(self, lot: str) -> Hold | None:
        with self._tx() as db:
            row = db.execute(
                "SELECT lot, kind, reason, by_whom, since FROM lot_holds WHERE lot=?", (lot,)
            ).fetchone()
            db.execute("DELETE FROM lot_holds WHERE lot=?", (lot,))
        return Hold(row[0], row[1], row[2], row[3], datetime.fromisoformat(row[4])) if row else None

    def holds(self) -> list[Hold]:
        rows = self._rows("SELECT lot, kind, reason, by_whom, since FROM lot_holds ORDER BY lot")
        return [Hold(r[0], r[1], r[2], r[3], datetime.fromisoformat(r[4])) for r in rows]

    # ------------------------------------------------------------ temperature readings and exposure

    def record_temperature(
        self, celsius: float, seconds: float, outside_label: bool, beyond_excursion: bool, keep: int
    ) -> None:
        """One reading: kept (the newest `keep`), and `seconds` (since the last reading) added to the
        exposure of every lot in the columns."""
        weight = math.exp(-MKT_DH_OVER_R / (celsius + 273.15)) * seconds
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO temperature_samples(ts, celsius) VALUES(?, ?)",
                (self.clock.now().isoformat(), celsius),
            )
            db.execute("DELETE FROM temperature_samples WHERE id <= ?", (int(cur.lastrowid or 0) - keep,))
            if seconds > 0:
                db.execute(
                    "UPDATE lot_segments SET out_s = out_s + ?, exc_s = exc_s + ?, mkt_sum = mkt_sum + ?, "
                    "mkt_dt = mkt_dt + ? WHERE count > 0",
                    (
                        seconds if outside_label else 0.0,
                        seconds if beyond_excursion else 0.0,
                        weight,
                        seconds,
                    ),
                )

    def temperature_samples(self, after_id: int = 0, limit: int = 720) -> list[tuple[int, datetime, float]]:
        rows = self._rows(
            "SELECT id, ts, celsius FROM temperature_samples WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return [(int(r[0]), datetime.fromisoformat(r[1]), float(r[2])) for r in rows]

    # ------------------------------------------------------------ privacy

    def purge(self, older_than: datetime) -> int:
        """Delete events central has acknowledged (seq <= acked) recorded before `older_than`, and
        settled dispense commands as old; returns how many events went."""
        cutoff = older_than.isoformat()
        with self._tx() as db:
            n = db.execute(
                "DELETE FROM events WHERE seq <= ? AND created_at < ? "
                "AND seq NOT IN (SELECT seq FROM outbox)",
                (self.acked_seq(), cutoff),
            ).rowcount
            db.execute("DELETE FROM commands WHERE state = 'settled' AND created_at < ?", (cutoff,))
        return int(n)

    def column(self, number: int) -> ColumnRow:
        for row in self.columns():
            if row.column == number:
                return row
        raise LedgerError(f"expected a known column, found column {number}")

    def set_fault(self, column: int, fault: str | None) -> None:
        with self._tx() as db:
            db.execute("UPDATE columns SET fault=? WHERE col=?", (fault, column))

    # ------------------------------------------------------------ controller command ids

    def allocate_command(self, column: int, language: str | None, via: str) -> int:
        """A new u32 command id, persisted as pending BEFORE the DISPENSE goes to the board.
        The first id of a new ledger is random, so a wiped ledger never reuses ids the board journaled."""
        with self._tx() as db:
            raw = self._meta("next_command_id")
            cid = int(raw) if raw else secrets.randbelow(U32 // 2) + 1
            nxt = cid + 1 if cid + 1 < DIAG_COMMAND_BASE else 1
            db.execute(
                "INSERT INTO commands(command_id, col, language, via, state, created_at)"
                " VALUES(?,?,?,?,'pending',?)",
                (cid, column, language, via, self.clock.now().isoformat()),
            )
            self._set_meta(db, "next_command_id", nxt)
        return cid

    @staticmethod
    def _settle(db: sqlite3.Connection, command_id: int, outcome: str) -> None:
        cur = db.execute(
            "UPDATE commands SET state='settled', outcome=? WHERE command_id=? AND state='pending'",
            (outcome, command_id),
        )
        if cur.rowcount != 1:
            raise LedgerError(f"expected pending command {command_id} to settle, found none pending")

    def settle(self, command_id: int, outcome: str) -> None:
        with self._tx() as db:
            self._settle(db, command_id, outcome)

    def command_outcomes(self) -> dict[str, int]:
        """How many controller commands ended in each outcome (pending ones under "pending")."""
        rows = self._rows("SELECT COALESCE(outcome, state), COUNT(*) FROM commands GROUP BY 1")
        return {str(k): int(v) for k, v in rows}

    def pending_commands(self) -> list[CommandRow]:
        rows = self._rows(
            "SELECT command_id, col, language, via, state, outcome FROM commands"
            " WHERE state='pending' ORDER BY created_at"
        )
        return [CommandRow(*r) for r in rows]

    def command(self, command_id: int) -> CommandRow | None:
        r = self._row(
            "SELECT command_id, col, language, via, state, outcome FROM commands WHERE command_id=?",
            (command_id,),
        )
        return CommandRow(*r) if r else None

    # ------------------------------------------------------------ alarms and excursions

    def active_alarms(self) -> list[AlarmState]:
        rows = self._rows("SELECT code, severity, message, since, col FROM alarms ORDER BY since, code")
        return [
            AlarmState(
                code=r[0], severity=r[1], message=r[2], since=datetime.fromisoformat(r[3]), column=r[4]
            )
            for r in rows
        ]

    def alarm_active(self, code: str) -> bool:
        return self._row("SELECT 1 FROM alarms WHERE code=?", (code,)) is not None

    def upsert_alarm(
        self, db: sqlite3.Connection, code: str, severity: str, message: str, column: int | None
    ) -> None:
        db.execute(
            "INSERT OR REPLACE INTO alarms(code, severity, message, since, col) VALUES(?,?,?,?,?)",
            (code, severity, message, self.clock.now().isoformat(), column),
        )

    def record_alarm(
        self, code: str, message: str, *, raised: bool, severity: str = "warning", column: int | None = None
    ) -> AlarmEvent | None:
        """Record an AlarmEvent and update the active set in one transaction; None (nothing recorded)
        when the alarm is already in that state (raised twice, or cleared while not active)."""
        with self._tx() as db:
            active = db.execute("SELECT 1 FROM alarms WHERE code=?", (code,)).fetchone() is not None
            if active == raised:
                return None
            if raised:
                self.upsert_alarm(db, code, severity, message, column)
            else:
                db.execute("DELETE FROM alarms WHERE code=?", (code,))
            state = "raised" if raised else "cleared"
            said = {"code": code, "state": state, "severity": severity, "message": message, "column": column}
            return self._append(db, AlarmEvent, said)

    def add_excursion(self, lots: list[str], seconds: float) -> None:
        with self._tx() as db:
            for lot in lots:
                db.execute(
                    "INSERT INTO lot_excursions(lot, seconds) VALUES(?, ?) ON CONFLICT(lot)"
                    " DO UPDATE SET seconds = seconds + excluded.seconds",
                    (lot, seconds),
                )

    def excursions(self) -> dict[str, float]:
        return dict(self._rows("SELECT lot, seconds FROM lot_excursions"))

    def get_meta(self, key: str) -> str | None:
        return self._meta(key)

    def set_meta(self, key: str, value: object) -> None:
        with self._tx() as db:
            self._set_meta(db, key, value)

    # ------------------------------------------------------------ the reporter's session and commands

    def next_session(self) -> int:
        """The MQTT session counter, incremented and persisted (status and the Will carry it). While the
        ledger cannot write, the next number is handed out unpersisted: the unit must still connect to
        say it is out of service (a later persisted number continues above it)."""
        try:
            with self._tx() as db:
                session = max(int(self._meta("mqtt_session", "0") or 0), self._session_floor) + 1
                self._set_meta(db, "mqtt_session", session)
        except LedgerUnavailable:
            session = max(int(self._meta("mqtt_session", "0") or 0), self._session_floor) + 1
        self._session_floor = session
        return session

    def import_reporter_file(self, path: Path) -> bool:
        """Take the session counter and command answers from the reporter's own SQLite file of earlier
        versions (`<ledger>.mqtt.sqlite`), once; the file is left as it was. True when imported."""
        if not path.is_file() or self._meta("reporter_file_imported") is not None:
            return False
        src = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            tables = {r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            session = None
            if "reporter_meta" in tables:
                session = src.execute("SELECT value FROM reporter_meta WHERE key='session'").fetchone()
            answers: list[Row] = []
            if "command_answers" in tables:
                have = {r[1] for r in src.execute("PRAGMA table_info(command_answers)")}
                extra = [c if c in have else "NULL" for c in ("issued_by", "command", "answered_at")]
                answers = list(src.execute(f"SELECT command_id, name, answer, {', '.join(extra)} "
                                           "FROM command_answers ORDER BY n"))
        except sqlite3.Error as exc:
            raise LedgerError(f"{path}: expected the reporter's state file of an earlier version, "
                              f"found {exc}") from None
        finally:
            src.close()
        with self._tx() as db:
            if session is not None:
                current = int(self._meta("mqtt_session", "0") or 0)
                self._set_meta(db, "mqtt_session", max(current, int(session[0])))
            db.executemany("INSERT OR IGNORE INTO command_answers(command_id, name, answer, issued_by, "
                           "command, answered_at) VALUES(?,?,?,?,?,?)", answers)
            self._set_meta(db, "reporter_file_imported", path.name)
        return True

    def command_answer(self, command_id: str) -> CommandResponse | None:
        row = self._row("SELECT answer FROM command_answers WHERE command_id = ?", (command_id,))
        return CommandResponse.model_validate_json(row[0]) if row else None

    def remember_answer(self, command_id: str, name: str, answer: CommandResponse,
                        command: CommandBase | None = None, answered_at: datetime | None = None) -> None:
        """Store the answer to `command_id` with the command as received, who sent it (`issued_by`,
        DESIGN.md invariant 9) and its `issued_at` (kept while the age check could still accept it)."""
        issued = command.issued_at if command is not None else (answered_at or self.clock.now())
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO command_answers(command_id, name, answer, issued_by, command,"
                       " answered_at, issued_at) VALUES(?, ?, ?, ?, ?, ?, ?)",
                       (command_id, name, answer.model_dump_json(),
                        command.issued_by if command is not None else None,
                        command.model_dump_json() if command is not None else None,
                        answered_at.isoformat() if answered_at else None, _utc_text(issued)))

    def forget_answers_before(self, oldest: datetime) -> int:
        """Drop answers to commands issued before `oldest`: the age check refuses those anyway."""
        with self._tx() as db:
            cur = db.execute("DELETE FROM command_answers WHERE issued_at < ?", (_utc_text(oldest),))
            return cur.rowcount

    def answer_count(self) -> int:
        return self._count("SELECT COUNT(*) FROM command_answers")

    def command_history(self, limit: int = 100) -> list[RememberedCommand]:
        """The newest remembered commands first: who sent each, what it said and the answer given."""
        rows = self._rows("SELECT command_id, name, issued_by, command, answer, answered_at "
                          "FROM command_answers ORDER BY n DESC LIMIT ?", (limit,))
        return [RememberedCommand(r[0], r[1], r[2], json.loads(r[3]) if r[3] else None,
                                  CommandResponse.model_validate_json(r[4]), r[5]) for r in rows]

    # ------------------------------------------------------------ census

    def census(self) -> Census:
        with self._lock:
            return _census(self._db)


class CommandMemory:
    """Answers to remote commands by command_id, kept in the ledger: a repeated command_id (even after a
    restart) is answered again without acting. Every answer whose command is still inside the age window
    is kept, whatever the rate (a captured command can never run again while it could pass the age
    check); only answers the age check would refuse anyway are forgotten. Past `limit` live answers new
    commands are refused, old answers never dropped."""

    def __init__(self, ledger: Ledger, limit: int = MEMORY_LIMIT) -> None:
        self.ledger = ledger
        self.limit = limit

    def get(self, command_id: str) -> CommandResponse | None:
        return self.ledger.command_answer(command_id)

    def put(self, command_id: str, name: str, answer: CommandResponse, command: CommandBase | None = None,
            answered_at: datetime | None = None) -> None:
        self.ledger.remember_answer(command_id, name, answer, command, answered_at)

    def forget_before(self, oldest: datetime) -> int:
        return self.ledger.forget_answers_before(oldest)

    def count(self) -> int:
        return self.ledger.answer_count()

    def full(self) -> bool:
        return self.count() >= self.limit

    def history(self, limit: int = 100) -> list[RememberedCommand]:
        return self.ledger.command_history(limit)


@dataclass(frozen=True)
class RememberedCommand:
    command_id: str
    name: str
    issued_by: str | None
    command: dict[str, object] | None  # the command as it came (JSON)
    answer: CommandResponse
    answered_at: str | None


@dataclass(frozen=True)
class Census:
    """What a ledger holds, counted: events per type, stock and kits dispensed per column, dispense
    events per command id, controller commands still pending, the outbox. Read-only."""

    events: dict[str, int] = field(default_factory=dict)  # event type -> how many
    event_ids: list[str] = field(default_factory=list)  # in seq order
    stock: dict[int, int] = field(default_factory=dict)  # column -> kits the ledger counts
    dispensed_per_column: dict[int, int] = field(default_factory=dict)
    dispensed_per_command: dict[int, int] = field(default_factory=dict)  # command id -> dispense events
    pending_commands: list[int] = field(default_factory=list)  # DISPENSEs journaled, not yet settled
    command_outcomes: dict[str, int] = field(default_factory=dict)  # outcome ("pending" too) -> commands
    outbox_depth: int = 0  # events not yet acked by central
    last_seq: int = 0
    acked_seq: int = 0
    command_answers: int = 0  # remote command answers remembered

    @property
    def dispensed(self) -> int:
        return self.events.get("dispense", 0)


def read_census(path: str | Path, counts_only: bool = False) -> Census:
    """The census of the ledger file at `path`, read-only (SQLite WAL lets us read while the daemon
    writes); an empty Census before the file exists. `counts_only`: just events per type, pending
    commands and the outbox depth, cheap enough to poll on a ledger of many thousand events."""
    path = Path(path)
    if not path.exists():
        return Census()
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return _counts(con) if counts_only else _census(con)
    finally:
        con.close()


def _pairs(db: sqlite3.Connection, sql: str) -> list[Row]:
    return [(r[0], r[1]) for r in db.execute(sql)]


def _counts(db: sqlite3.Connection) -> Census:
    return Census(
        events={str(t): int(n) for t, n in _pairs(db, "SELECT event_type, COUNT(*) FROM events GROUP BY 1")},
        pending_commands=[int(r[0]) for r in db.execute(
            "SELECT command_id FROM commands WHERE state='pending' ORDER BY created_at")],
        outbox_depth=int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]),
    )


def _census(db: sqlite3.Connection) -> Census:
    def pairs(sql: str) -> list[Row]:
        return _pairs(db, sql)

    dispenses = ("SELECT json_extract(payload, '$.{0}'), COUNT(*) FROM events WHERE event_type='dispense'"
                 " GROUP BY 1")
    meta: dict[str, str] = dict(pairs("SELECT key, value FROM meta WHERE key IN ('last_seq', 'acked_seq')"))
    counts = _counts(db)
    return Census(
        events=counts.events,
        event_ids=[str(r[0]) for r in db.execute("SELECT event_id FROM events ORDER BY seq")],
        stock={int(c): int(n) for c, n in pairs("SELECT col, stock FROM columns ORDER BY col")},
        dispensed_per_column={int(c): int(n) for c, n in pairs(dispenses.format("column"))},
        dispensed_per_command={int(c): int(n) for c, n in pairs(dispenses.format("command_id"))},
        pending_commands=counts.pending_commands,
        command_outcomes={str(k): int(v) for k, v in pairs(
            "SELECT COALESCE(outcome, state), COUNT(*) FROM commands GROUP BY 1")},
        outbox_depth=counts.outbox_depth,
        last_seq=int(meta.get("last_seq", 0)),
        acked_seq=int(meta.get("acked_seq", 0)),
        command_answers=_count_if_table(db, "command_answers"),
    )


def _count_if_table(db: sqlite3.Connection, table: str) -> int:
    """Rows of `table`, 0 when a ledger of an earlier version has no such table yet."""
    known = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone()
    return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]) if known else 0


def _utc_text(ts: datetime) -> str:
    """A sortable text form of a time: UTC, fixed width (a naive time is taken as UTC)."""
    aware = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    u = aware.astimezone(UTC)
    return f"{u.year:04d}-" + u.strftime("%m-%dT%H:%M:%S.%f+00:00")
