"""Schema migrations for the central store: a versioned list applied in order, shared by SQLite and
PostgreSQL (only portable SQL here), each recorded in the schema_version table. A step may also be a
function of (transaction, dialect) for what portable SQL cannot say (a backfill that parses JSON)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from inventory import rollups

Step = str | Callable[[Any, str], None]


def _rebuild_rollups(tx: Any, dialect: str) -> None:
    row = tx.one("SELECT value FROM settings WHERE name = 'report_timezone'")
    rollups.rebuild(tx, dialect, row[0] if row else "UTC")


def _append_only_audit(tx: Any, dialect: str) -> None:
    """The database itself refuses to change or remove an audit entry (not only the code's habit)."""
    if dialect == "postgresql":
        tx.execute(
            "CREATE OR REPLACE FUNCTION nalox_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION USING MESSAGE = 'audit_log is append-only: ' || TG_OP || ' refused'; "
            "END $$"
        )
        tx.execute(
            "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION nalox_audit_append_only()"
        )
        tx.execute(
            "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
            "FOR EACH STATEMENT EXECUTE FUNCTION nalox_audit_append_only()"
        )
        return
    for op in ("UPDATE", "DELETE"):
        tx.execute(
            f"CREATE TRIGGER audit_log_no_{op.lower()} BEFORE {op} ON audit_log "
            f"BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: {op} refused'); END"
        )


def _first_report_table(table: str, key: str) -> str:
    """The CREATE TABLE that migration 6 ran for a report table (migration 8 replaced both), to the byte."""
    return f"""CREATE TABLE {table} (
            {key} TEXT NOT NULL,
            unit TEXT NOT NULL,
            events BIGINT NOT NULL,
            kits BIGINT NOT NULL,
            doses BIGINT NOT NULL,
            test_vends BIGINT NOT NULL,
            vend_failures BIGINT NOT NULL,
            videos_started BIGINT NOT NULL,
            videos_completed BIGINT NOT NULL,
            kits_after_video BIGINT NOT NULL,
            out_of_stock BIGINT NOT NULL,
            PRIMARY KEY ({key}, unit)
        )"""


def _fill_unit_columns(tx: Any, dialect: str) -> None:
    for unit, state_json in tx.rows("SELECT unit, state_json FROM units WHERE state_json IS NOT NULL"):
        put_unit_columns(tx, unit, json.loads(state_json).get("columns") or [])


def _fill_unit_lots(tx: Any, dialect: str) -> None:
    for unit, state_json in tx.rows("SELECT unit, state_json FROM units WHERE state_json IS NOT NULL"):
        state = json.loads(state_json)
        put_unit_lots(tx, unit, state.get("columns") or [], state.get("holds") or [])


def put_unit_lots(tx: Any, unit: str, columns: list[dict[str, Any]], holds: list[dict[str, Any]]) -> None:
    """The lot queue of each column (front first) and the unit's own lot holds, as its newest state
    reports them: what the lots page reads in SQL instead of parsing every unit's state."""
    tx.execute("DELETE FROM unit_lots WHERE unit = ?", (unit,))
    tx.execute("DELETE FROM unit_holds WHERE unit = ?", (unit,))
    for c in columns:
        for pos, seg in enumerate(c.get("lots") or []):
            exp = seg.get("exposure") or None
            tx.execute(
                "INSERT INTO unit_lots (unit, col, pos, lot, expiry, n, outside_s, excursion_s, mkt_c) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    unit,
                    int(c["column"]),
                    pos,
                    seg.get("lot"),
                    str(seg["expiry"]) if seg.get("expiry") else None,
                    int(seg.get("count") or 0),
                    float(exp["seconds_outside_label"]) if exp else None,
                    float(exp["seconds_in_excursion"]) if exp else None,
                    float(exp["mkt_c"]) if exp and exp.get("mkt_c") is not None else None,
                ),
            )
    for pos, h in enumerate(holds):
        tx.execute(
            "INSERT INTO unit_holds (unit, pos, lot, kind, reason) VALUES (?, ?, ?, ?, ?)",
            (unit, pos, h["lot"], h["kind"], h["reason"]),
        )


def put_unit_columns(tx: Any, unit: str, columns: list[dict[str, Any]]) -> None:
    """The unit's columns as its newest state describes them (par, capacity, lot, expiry): what the
    fleet page needs to rank units by "needs attention" in SQL, without parsing every state."""
    tx.execute("DELETE FROM unit_columns WHERE unit = ?", (unit,))
    for c in sorted(columns, key=lambda c: int(c["column"])):
        tx.execute(
            "INSERT INTO unit_columns (unit, col, product, par, capacity, stock, lot, expiry, fault) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                unit,
                int(c["column"]),
                c.get("product"),
                int(c.get("par") or 0),
                int(c.get("capacity") or 0),
                int(c.get("stock") or 0),
                c.get("lot"),
                str(c["expiry"]) if c.get("expiry") else None,
                c.get("fault"),
            ),
        )


MIGRATIONS: list[tuple[int, str, list[Step]]] = [
    (
        1,
        "units, events, stock, ingest counters",
        [
            """CREATE TABLE units (
            unit TEXT PRIMARY KEY,
            site TEXT NOT NULL,
            name TEXT,
            source TEXT NOT NULL,
            enrolled_at TEXT NOT NULL,
            status TEXT,
            status_session BIGINT,
            status_ts TEXT,
            status_since TEXT,
            state_json TEXT,
            state_ts TEXT,
            telemetry_json TEXT,
            telemetry_ts TEXT,
            acked_seq BIGINT NOT NULL DEFAULT 0,
            reported_last_seq BIGINT NOT NULL DEFAULT 0
        )""",
            """CREATE TABLE events (
            unit TEXT NOT NULL,
            event_id TEXT NOT NULL,
            seq BIGINT NOT NULL,
            type TEXT NOT NULL,
            ts TEXT NOT NULL,
            month TEXT NOT NULL,
            col INTEGER,
            product TEXT,
            doses INTEGER,
            stock_after INTEGER,
            via TEXT,
            phase TEXT,
            language TEXT,
            discrepancy INTEGER,
            payload TEXT NOT NULL,
            received_at TEXT NOT NULL,
            PRIMARY KEY (unit, event_id)
        )""",
            "CREATE INDEX events_unit_seq ON events (unit, seq)",
            "CREATE INDEX events_type_ts ON events (type, ts)",
            """CREATE TABLE stock (
            unit TEXT NOT NULL,
            col INTEGER NOT NULL,
            stock INTEGER NOT NULL,
            seq BIGINT NOT NULL,
            ts TEXT NOT NULL,
            PRIMARY KEY (unit, col)
        )""",
            """CREATE TABLE ingest_rejects (
            reason TEXT PRIMARY KEY,
            count BIGINT NOT NULL,
            last_at TEXT NOT NULL,
            last_topic TEXT,
            last_detail TEXT
        )""",
            """CREATE TABLE ingest_counters (
            name TEXT PRIMARY KEY,
            count BIGINT NOT NULL
        )""",
        ],
    ),
    (
        2,
        "alerts and restock discrepancy follow-up",
        [
            """CREATE TABLE active_alerts (
            alert_key TEXT PRIMARY KEY,
            unit TEXT,
            site TEXT,
            kind TEXT NOT NULL,
            severity TEXT NOT NULL,
            message TEXT NOT NULL,
            raised_at TEXT NOT NULL
        )""",
            """CREATE TABLE alert_history (
            alert_key TEXT NOT NULL,
            raised_at TEXT NOT NULL,
            unit TEXT,
            site TEXT,
            kind TEXT NOT NULL,
            severity TEXT NOT NULL,
            message TEXT NOT NULL,
            cleared_at TEXT,
            PRIMARY KEY (alert_key, raised_at)
        )""",
            """CREATE TABLE resolved_discrepancies (
            unit TEXT NOT NULL,
            event_id TEXT NOT NULL,
            resolved_at TEXT NOT NULL,
            note TEXT,
            PRIMARY KEY (unit, event_id)
        )""",
        ],
    ),
    (
        3,
        "operator-accepted seq gaps (events the unit can no longer replay)",
        [
            """CREATE TABLE accepted_gaps (
            unit TEXT NOT NULL,
            from_seq BIGINT NOT NULL,
            through_seq BIGINT NOT NULL,
            accepted_at TEXT NOT NULL,
            reason TEXT NOT NULL,
            PRIMARY KEY (unit, from_seq)
        )""",
        ],
    ),
    (
        4,
        "service settings kept with the data (the reporting time zone the months were computed in)",
        [
            """CREATE TABLE settings (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )""",
        ],
    ),
    (
        5,
        "a unit whose event numbering restarted (ledger replaced or wiped): acks to it paused",
        ["ALTER TABLE units ADD COLUMN seq_reset_at TEXT"],
    ),
    (
        6,
        "state scale: report counts kept at ingest, columns of the newest state, indexes for the pages",
        [
            # the report tables as first made (migration 8 replaces them; their counts are filled there)
            _first_report_table("report_day", "day"),
            _first_report_table("report_month", "month"),
            """CREATE TABLE unit_columns (
            unit TEXT NOT NULL,
            col INTEGER NOT NULL,
            product TEXT,
            par INTEGER NOT NULL,
            capacity INTEGER NOT NULL,
            stock INTEGER NOT NULL,
            lot TEXT,
            expiry TEXT,
            fault TEXT,
            PRIMARY KEY (unit, col)
        )""",
            _fill_unit_columns,
            "CREATE INDEX events_unit_type_ts ON events (unit, type, ts)",
            "CREATE INDEX alert_history_raised ON alert_history (raised_at)",
            "CREATE INDEX units_site ON units (site, unit)",
        ],
    ),
    (
        7,
        "lots, holds, temperature history; program and site recorded per event at the time",
        [
            "ALTER TABLE units ADD COLUMN program TEXT NOT NULL DEFAULT 'Jail vending'",
            "ALTER TABLE events ADD COLUMN site TEXT",
            "ALTER TABLE events ADD COLUMN program TEXT",
            "ALTER TABLE events ADD COLUMN lot TEXT",
            # history so far: the site the unit has now (the best there is), the default program
            "UPDATE events SET site = (SELECT u.site FROM units u WHERE u.unit = events.unit), "
            "program = (SELECT u.program FROM units u WHERE u.unit = events.unit)",
            "CREATE INDEX events_ts ON events (ts)",
            """CREATE TABLE lot_holds (
            lot TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            reason TEXT NOT NULL,
            held_by TEXT NOT NULL,
            held_at TEXT NOT NULL
        )""",
            """CREATE TABLE lot_hold_log (
            lot TEXT NOT NULL,
            at TEXT NOT NULL,
            action TEXT NOT NULL,
            by_whom TEXT NOT NULL,
            reason TEXT NOT NULL,
            PRIMARY KEY (lot, at, action)
        )""",
            """CREATE TABLE temperature_history (
            unit TEXT NOT NULL,
            bucket TEXT NOT NULL,
            n INTEGER NOT NULL,
            sum_c DOUBLE PRECISION NOT NULL,
            min_c DOUBLE PRECISION NOT NULL,
            max_c DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (unit, bucket)
        )""",
        ],
    ),
    (
        8,
        "report counts kept at ingest keyed by the program and site recorded with each event, with "
        "extra and emergency kits (the report tables of migration 6 replaced and refilled)",
        [*rollups.MIGRATION_SQL, _rebuild_rollups],
    ),
    (
        9,
        "staff accounts, sessions, API tokens, the append-only audit trail, alert follow-up, staff commands",
        [
            """CREATE TABLE staff_users (
            name TEXT PRIMARY KEY,
            role TEXT NOT NULL,
            password_hash TEXT,
            disabled INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            failed_logins INTEGER NOT NULL DEFAULT 0,
            locked_until TEXT,
            last_login_at TEXT
        )""",
            """CREATE TABLE staff_sessions (
            id_hash TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            created_at TEXT NOT NULL,
            last_seen TEXT NOT NULL,
            source TEXT
        )""",
            """CREATE TABLE api_tokens (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            role TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            revoked_at TEXT,
            last_used_at TEXT
        )""",
            """CREATE TABLE audit_log (
            id TEXT PRIMARY KEY,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            role TEXT,
            via TEXT NOT NULL,
            source TEXT,
            action TEXT NOT NULL,
            target TEXT,
            outcome TEXT NOT NULL,
            before_json TEXT,
            after_json TEXT,
            detail TEXT
        )""",
            "CREATE INDEX audit_log_at ON audit_log (at)",
            """CREATE TABLE alert_actions (
            alert_key TEXT NOT NULL,
            raised_at TEXT NOT NULL,
            acked_by TEXT,
            acked_at TEXT,
            note TEXT,
            assignee TEXT,
            snoozed_until TEXT,
            PRIMARY KEY (alert_key, raised_at)
        )""",
            """CREATE TABLE staff_commands (
            command_id TEXT PRIMARY KEY,
            unit TEXT NOT NULL,
            name TEXT NOT NULL,
            params TEXT NOT NULL,
            issued_by TEXT NOT NULL,
            issued_at TEXT NOT NULL,
            status TEXT NOT NULL,
            answer TEXT,
            answered_at TEXT
        )""",
            "CREATE INDEX staff_commands_unit ON staff_commands (unit, issued_at)",
        ],
    ),
    (
        10,
        "the audit trail is append-only in the database too (triggers refuse UPDATE, DELETE, TRUNCATE)",
        [_append_only_audit],
    ),
    (
        11,
        "kits dispensed per lot kept at ingest (the lots page read every dispense event)",
        [*rollups.LOT_SQL, lambda tx, dialect: rollups.rebuild_lots(tx)],
    ),
    (
        12,
        "quarantine: refused messages kept with their reason and size (never their content)",
        [
            """CREATE TABLE quarantine (
            id BIGINT PRIMARY KEY,
            unit TEXT NOT NULL,
            topic TEXT NOT NULL,
            reason TEXT NOT NULL,
            detail TEXT NOT NULL,
            size BIGINT NOT NULL,
            seq BIGINT,
            event_id TEXT,
            first_at TEXT NOT NULL,
            last_at TEXT NOT NULL,
            count BIGINT NOT NULL DEFAULT 1,
            state TEXT NOT NULL DEFAULT 'open',
            resolved_at TEXT,
            resolution TEXT
        )""",
            "CREATE INDEX quarantine_open ON quarantine (state, unit, seq)",
        ],
    ),
    (
        13,
        "each column's lot queue and the units' own lot holds kept from the newest state (the lots "
        "page read every unit's state)",
        [
            """CREATE TABLE unit_lots (
            unit TEXT NOT NULL,
            col INTEGER NOT NULL,
            pos INTEGER NOT NULL,
            lot TEXT,
            expiry TEXT,
            n INTEGER NOT NULL,
            outside_s DOUBLE PRECISION,
            excursion_s DOUBLE PRECISION,
            mkt_c DOUBLE PRECISION,
            PRIMARY KEY (unit, col, pos)
        )""",
            "CREATE INDEX unit_lots_lot ON unit_lots (lot)",
            """CREATE TABLE unit_holds (
            unit TEXT NOT NULL,
            pos INTEGER NOT NULL,
            lot TEXT NOT NULL,
            kind TEXT NOT NULL,
            reason TEXT NOT NULL,
            PRIMARY KEY (unit, pos)
        )""",
            "CREATE INDEX unit_holds_lot ON unit_holds (lot)",
            _fill_unit_lots,
        ],
    ),
    (
        14,
        "temperature history pruned by bucket through an index (the alert loop's prune scanned 17 "
        "million rows, 11 s at state scale, every 30 s)",
        ["CREATE INDEX temperature_history_bucket ON temperature_history (bucket)"],
    ),
]
