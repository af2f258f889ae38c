"""The PostgreSQL store's connections: requests in several threads read side by side (one thread's
open transaction does not hold up another's read), a transaction that only reads opens none on the
server, one that writes is atomic, and a tx() inside another in the same thread joins it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest

from inventory.store import PostgresStore, open_store
from tests.inventory.conftest import PG_URL, drop_schema, pg_schema


@pytest.fixture
def pg() -> Iterator[PostgresStore]:
    schema = pg_schema()
    s = open_store(PG_URL, schema=schema)
    assert isinstance(s, PostgresStore)
    try:
        yield s
    finally:
        s.close()
        drop_schema(schema)


def test_a_read_runs_while_another_thread_holds_a_transaction(pg: PostgresStore) -> None:
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with pg.tx() as tx:
            tx.execute("INSERT INTO settings (name, value) VALUES ('held', 'yes')")
            holding.set()
            assert release.wait(30), "expected the main thread to release the writer"

    writer = threading.Thread(target=hold)
    writer.start()
    try:
        assert holding.wait(30), "expected the writer to open its transaction"
        read: list[int] = []
        reader = threading.Thread(target=lambda: read.append(pg.count_events()))
        reader.start()
        reader.join(10)
        assert read == [0], "expected a read in another thread to end while the writer holds its transaction"
        with psycopg.connect(PG_URL, autocommit=True) as other:  # not committed yet: nobody else sees it
            row = other.execute(
                f'SELECT COUNT(*) FROM "{pg.schema}".settings WHERE name = %s', ("held",)
            ).fetchone()
            assert row == (0,)
    finally:
        release.set()
        writer.join(30)
    assert _setting(pg, "held") == "yes"


def test_a_transaction_that_only_reads_opens_none(pg: PostgresStore) -> None:
    with pg.tx() as tx:
        tx.rows("SELECT name FROM settings")
        status = tx.one("SELECT now() = statement_timestamp()")
        assert status == (True,), "expected each read on its own (outside a transaction block)"
        assert tx.one("SELECT pg_current_xact_id_if_assigned()") == (None,)
    with pg.tx() as tx:
        tx.execute("INSERT INTO settings (name, value) VALUES ('a', '1')")
        assert tx.one("SELECT now() = statement_timestamp()") == (False,), "expected one transaction"


def test_a_failed_transaction_leaves_nothing_and_the_store_goes_on(pg: PostgresStore) -> None:
    with pytest.raises(psycopg.errors.UniqueViolation), pg.tx() as tx:
        tx.execute("INSERT INTO settings (name, value) VALUES ('b', '1')")
        tx.execute("INSERT INTO settings (name, value) VALUES ('b', '2')")
    assert _setting(pg, "b") is None
    with pg.tx() as tx:
        tx.execute("INSERT INTO settings (name, value) VALUES ('b', '3')")
    assert _setting(pg, "b") == "3"


def test_a_tx_inside_another_joins_it(pg: PostgresStore) -> None:
    with pytest.raises(RuntimeError), pg.tx() as outer:
        outer.execute("INSERT INTO settings (name, value) VALUES ('c', '1')")
        with pg.tx() as inner:
            assert inner is outer
            inner.execute("INSERT INTO settings (name, value) VALUES ('d', '1')")
        raise RuntimeError("the outer transaction fails after the inner one ended")
    assert _setting(pg, "c") is None and _setting(pg, "d") is None


def test_at_most_pool_size_connections_and_dropped_ones_are_replaced(pg: PostgresStore) -> None:
    inside, release = threading.Barrier(pg.pool_size + 1), threading.Event()
    pids: list[int] = []

    def hold() -> None:
        with pg.tx() as tx:
            row = tx.one("SELECT pg_backend_pid()")
            pids.append(int(row[0]) if row else 0)
            if not release.is_set():  # the first pool_size threads: each holds its connection
                inside.wait(30)
                release.wait(30)

    threads = [threading.Thread(target=hold) for _ in range(pg.pool_size + 2)]
    for t in threads:
        t.start()
    inside.wait(30)  # pool_size threads hold a connection each; the other two wait for one
    assert len(pids) == pg.pool_size
    release.set()
    for t in threads:
        t.join(30)
    assert len(pids) == pg.pool_size + 2 and len(set(pids)) == pg.pool_size
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        for pid in set(pids):
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg.OperationalError):  # the transaction that finds its connection dropped
        pg.count_events()
    for _ in range(pg.pool_size + 1):
        assert pg.count_events() == 0, "expected the dropped connections replaced, none failing again"


def _setting(pg: PostgresStore, name: str) -> str | None:
    with pg.tx() as tx:
        row = tx.one("SELECT value FROM settings WHERE name = ?", (name,))
    return str(row[0]) if row else None
