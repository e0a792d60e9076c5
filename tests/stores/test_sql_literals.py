"""The direct statements' parameters, written into the SQL by the store
(stores/sql_literals.py), mean on the server exactly what the driver's own quoting
means, under the server settings that change how quoted text is read."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest
from providers import _sqlalchemy, sqlalchemy_mariadb, sqlalchemy_postgresql

from sessionkeeper.ids import storage_key
from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.base import SessionRecord, SessionUpdate
from sessionkeeper.stores.sql_literals import MYSQL_LITERALS, POSTGRESQL_LITERALS, sql_literal
from sessionkeeper.stores.sqlalchemy import engine_from_url

MSGPACK = ValueCodec("msgpack")

#: what a session's statements bind: (value, the PostgreSQL type of its column)
BOUND_VALUES = [
    (bytes(range(256)), "bytea"), (b"", "bytea"), (b"'\\%s", "bytea"),
    (1796417865.5670092, "double precision"), (-0.1, "double precision"),
    (1e300, "double precision"), (5e-324, "double precision"), (-0.0, "double precision"),
    (0, "bigint"), (-(2 ** 63), "bigint"), (2 ** 63 - 1, "bigint"),
    (True, "boolean"), (False, "boolean"), (None, "text"),
    ("session:abc-_XYZ09", "text"), ('100% "sure"; -- not a comment', "text"), ("", "text"),
]
#: values left to the driver: quotes, backslashes, control and non-ASCII characters, and
#: numbers without a literal
NOT_WRITTEN = ["o'clock", "back\\slash", "caf\u00e9", "tab\t", "nul\x00",
               float("nan"), float("inf"), 2.5j, bytearray(b"x"), memoryview(b"x")]


@pytest.fixture
def raw_cursor(request: pytest.FixtureRequest) -> Iterator[Any]:
    engine = engine_from_url(request.param.url())
    try:
        with closing(engine.raw_connection()) as conn, closing(conn.cursor()) as cursor:
            yield cursor
    finally:
        engine.dispose()


def read(value: object) -> object:
    return bytes(value) if isinstance(value, memoryview) else value


@pytest.mark.parametrize("raw_cursor", [sqlalchemy_postgresql], indirect=True)
@pytest.mark.parametrize("conforming", ["on", "off"])
def test_postgresql_reads_them_as_psycopg2s_parameters(raw_cursor: Any,
                                                       conforming: str) -> None:
    raw_cursor.execute(f"SET standard_conforming_strings = {conforming}")
    for value, column_type in BOUND_VALUES:
        literal = sql_literal(value, POSTGRESQL_LITERALS)
        assert literal is not None, value
        literal = literal.replace("%", "%%")  # (this query also has a parameter)
        raw_cursor.execute(f"SELECT CAST({literal} AS {column_type}), "
                           f"CAST(%s AS {column_type})", (value,))
        ours, psycopg2s = map(read, raw_cursor.fetchone())
        assert ours == psycopg2s == value


@pytest.mark.parametrize("raw_cursor", [sqlalchemy_mariadb], indirect=True)
@pytest.mark.parametrize("sql_mode", ["", "NO_BACKSLASH_ESCAPES,ANSI_QUOTES"])
def test_mariadb_reads_them_as_pymysqls_parameters(raw_cursor: Any, sql_mode: str) -> None:
    raw_cursor.execute(f"SET SESSION sql_mode = '{sql_mode}'")
    for value, _ in BOUND_VALUES:
        literal = sql_literal(value, MYSQL_LITERALS)
        assert literal is not None, value
        if sql_mode:  # pymysql escapes with backslashes, which this mode reads as text
            raw_cursor.execute(f"SELECT {literal}")  # no parameters: no %% either
            [ours] = map(read, raw_cursor.fetchone())
            assert ours == value
            continue
        raw_cursor.execute(f"SELECT {literal.replace('%', '%%')}, %s", (value,))
        ours, pymysqls = map(read, raw_cursor.fetchone())
        assert ours == pymysqls == value
        assert type(ours) is type(pymysqls)  # a DOUBLE stays a DOUBLE, bytes bytes


@pytest.mark.parametrize("value", NOT_WRITTEN, ids=repr)
def test_anything_else_is_left_to_the_driver(value: object) -> None:
    assert sql_literal(value, POSTGRESQL_LITERALS) is None
    assert sql_literal(value, MYSQL_LITERALS) is None


@pytest.mark.parametrize("provider", [sqlalchemy_postgresql, sqlalchemy_mariadb],
                         ids=["postgresql", "mariadb"])
def test_keys_and_values_the_driver_quotes_round_trip(provider: Any) -> None:
    """A key prefix with a quote, a backslash and a percent sign goes the driver's way;
    the values, packed into bytes, are written in whatever they hold."""
    with _sqlalchemy.store(provider.url(), MSGPACK) as store:
        odd = "it's \\ 100%s:" + storage_key(secrets.token_urlsafe(32))
        plain = "session:" + storage_key(secrets.token_urlsafe(32))
        text = "o'brien \\ %s \x00 caf\u00e9"
        for key in (odd, plain):
            now = time.time()
            store.create(key, SessionRecord(values={"user": MSGPACK.encode(text)},
                                            created_at=now, accessed_at=now,
                                            expires_at=now + 600, permanent=True))
            loaded = store.load(key, time.time())
            assert loaded is not None
            assert store.update(key, SessionUpdate(
                set_values={"theme": MSGPACK.encode(text * 2)}, deleted_keys=set(),
                replace=False, accessed_at=now, expires_at=now + 600, permanent=True,
                version=loaded.version))
            again = store.load(key, time.time())
            assert again is not None
            assert {k: MSGPACK.decode(v) for k, v in again.values.items()} == {
                "user": text, "theme": text * 2}
