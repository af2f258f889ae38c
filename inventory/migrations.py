"""Schema migrations for the central store: a versioned list applied in order, shared by SQLite and
PostgreSQL (only portable SQL here), each recorded in the schema_version table."""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, list[str]]] = [
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
]
