"""The central inventory service: MQTT ingest, store (SQLite/PostgreSQL), alerts, dashboard, reports, API."""
