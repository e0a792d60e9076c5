"""PostgreSQL (psycopg2) runs the store's per-request statements prepared, once per
connection (stores/sql_prepared.py), and keeps working where it cannot: behind PgBouncer
in transaction mode, which moves a client to another server connection between two
statements, and after the database dropped the connection.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator
from contextlib import closing

import pytest
import sqlalchemy as sa
from providers import _sqlalchemy, sqlalchemy_postgresql
from servers import PgBouncer, start_or_skip, start_pgbouncer

from sessionkeeper.ids import storage_key
from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.base import SessionRecord, SessionUpdate
from sessionkeeper.stores.sqlalchemy import SQLAlchemyStore, engine_from_url

MSGPACK = ValueCodec("msgpack")


def new_key() -> str:
    return "session:" + storage_key(secrets.token_urlsafe(32))


def record(**values: object) -> SessionRecord:
    now = time.time()
    return SessionRecord(values={k: MSGPACK.encode(v) for k, v in values.items()},
                         created_at=now, accessed_at=now, expires_at=now + 600,
                         permanent=True)


def update(version: object, **values: object) -> SessionUpdate:
    now = time.time()
    return SessionUpdate(set_values={k: MSGPACK.encode(v) for k, v in values.items()},
                         deleted_keys=set(), replace=False, accessed_at=now,
                         expires_at=now + 600, permanent=True, version=version)


def values_of(store: SQLAlchemyStore, key: str) -> dict[str, object]:
    loaded = store.load(key, time.time())
    assert loaded is not None
    return {k: MSGPACK.decode(v) for k, v in loaded.values.items()}


@pytest.fixture
def table() -> Iterator[str]:
    name = _sqlalchemy.random_table()
    engine = engine_from_url(sqlalchemy_postgresql.url())
    try:
        with _sqlalchemy.dropped_afterwards(engine, name):
            yield name
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def pgbouncer() -> Iterator[PgBouncer]:
    sqlalchemy_postgresql.url()  # skips, naming PostgreSQL, when it is not there
    bouncer = start_or_skip(start_pgbouncer)
    yield bouncer
    bouncer.stop()


def server_queries(application_name: str) -> list[str]:
    """The last statement of each server connection the application holds."""
    with closing(engine_from_url(sqlalchemy_postgresql.url()).connect()) as conn:
        rows = conn.execute(sa.text("SELECT query FROM pg_stat_activity "
                                    "WHERE application_name = :name"),
                            {"name": application_name}).all()
        conn.engine.dispose()
    return [row[0] for row in rows]


@pytest.fixture
def named() -> str:
    """The application_name the store's connections give PostgreSQL."""
    return f"sk-prepared-{secrets.token_hex(4)}"


@pytest.fixture
def store(table: str, named: str) -> Iterator[SQLAlchemyStore]:
    """A store whose connections show in pg_stat_activity under ``named``."""
    url = f"{sqlalchemy_postgresql.url()}?application_name={named}"
    made = SQLAlchemyStore(engine_from_url(url), table=table, owns_engine=True,
                           codec=MSGPACK)
    made.check()
    yield made
    made.close()


def test_postgresql_runs_the_reads_and_saves_prepared(store: SQLAlchemyStore,
                                                      named: str) -> None:
    key = new_key()
    store.create(key, record(user="alice"))
    loaded = store.load(key, time.time())
    assert loaded is not None
    [query] = server_queries(named)
    assert query.split("(")[0] == (
        "EXECUTE " + store._direct_load._prepared.name)  # type: ignore[union-attr]
    assert f"'{key}'" in query  # its arguments written in by the store
    assert store.update(key, update(loaded.version, theme="dark"))
    assert server_queries(named)[0].startswith("EXECUTE sessionkeeper_")
    assert values_of(store, key) == {"user": "alice", "theme": "dark"}


def test_a_key_with_a_quote_and_a_backslash_is_sent_by_psycopg2_and_round_trips(
        store: SQLAlchemyStore, named: str) -> None:
    key = "it's \\ 100%:" + storage_key(secrets.token_urlsafe(32))
    store.create(key, record(user="o'brien \\ %s"))
    loaded = store.load(key, time.time())
    assert loaded is not None
    assert server_queries(named)[0].startswith("EXECUTE sessionkeeper_")
    assert store.update(key, update(loaded.version, theme="it's \\x00"))
    assert values_of(store, key) == {"user": "o'brien \\ %s", "theme": "it's \\x00"}


def test_a_connection_the_database_dropped_is_replaced_and_prepares_again(
        store: SQLAlchemyStore, named: str) -> None:
    key = new_key()
    store.create(key, record(user="alice"))
    assert values_of(store, key) == {"user": "alice"}
    with closing(engine_from_url(sqlalchemy_postgresql.url()).connect()) as conn:
        conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE application_name = :name"), {"name": named})
        conn.engine.dispose()
    # The store sends the read again on a new connection, which prepares anew (had it
    # taken the old one's word, the statement would have gone plain).
    assert values_of(store, key) == {"user": "alice"}
    assert server_queries(named)[0].startswith("EXECUTE sessionkeeper_")


def test_behind_pgbouncer_in_transaction_mode_statements_go_plain_and_keep_working(
        pgbouncer: PgBouncer, table: str, caplog: pytest.LogCaptureFixture) -> None:
    store = SQLAlchemyStore(engine_from_url(pgbouncer.url()), table=table,
                            owns_engine=True, codec=MSGPACK)
    try:
        store.check()
        key = new_key()
        store.create(key, record(user="alice"))
        loaded = store.load(key, time.time())  # prepared on one server connection
        assert loaded is not None
        # PgBouncer closes its server connections as they are released: the store's
        # client connection stays, its next statement runs on a new server connection.
        pgbouncer.admin("RECONNECT test")
        with caplog.at_level(logging.INFO, logger="sessionkeeper"):
            assert values_of(store, key) == {"user": "alice"}
        assert "sending plain statements from now on" in caplog.text
        pgbouncer.admin("RECONNECT test")
        assert store.update(key, update(loaded.version, theme="dark"))
        assert values_of(store, key) == {"user": "alice", "theme": "dark"}
    finally:
        store.close()
