"""Per-worker counters (requests served, SQL statements sent), readable by the runner.

Each gunicorn worker counts the requests it serves and, for SQL variants, the
statements its database driver actually sends (SQLite: the sqlite3 trace
callback, which also reports the BEGIN/COMMIT the sqlite3 module issues
itself; PostgreSQL: a psycopg2 connection/cursor subclass counting every
execute plus the implicit BEGIN and real COMMIT/ROLLBACK round trips;
MariaDB: a pymysql connection subclass counting every query it sends plus
each BEGIN/COMMIT/ROLLBACK, which pymysql sends on every call), and for
DynamoDB variants the HTTP requests their botocore client sends, per operation
(dynalite keeps no per-operation statistics).
Counts live in a small per-worker file mapped into memory, so counting costs
one integer increment and the runner can sum the files at any time without
talking to the workers.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

SQL_KINDS: tuple[str, ...] = (
    "select",
    "insert",
    "update",
    "delete",
    "begin",
    "commit",
    "rollback",
    "other",
)
DYNAMODB_OPERATIONS: tuple[str, ...] = (
    "GetItem",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "Query",
    "other",
)
# Slot names double as the runner's counter keys ("<store>:<counter>").
SLOTS: tuple[str, ...] = (
    "app:requests",
    *(f"sql:{kind}" for kind in SQL_KINDS),
    *(f"dynamodb:{operation}" for operation in DYNAMODB_OPERATIONS),
)
_INDEX = {name: i for i, name in enumerate(SLOTS)}
_SLOT_BYTES = 8
_FILE_GLOB = "counters-*.bin"


def classify(statement: Any) -> str:
    """'sql:<leading keyword>' if it is one we track, else 'sql:other'."""
    if isinstance(statement, bytes):
        statement = statement.decode("utf-8", "replace")
    if not isinstance(statement, str):  # e.g. psycopg2.sql.Composed
        return "sql:other"
    words = statement.split(None, 1)
    keyword = words[0].lower() if words else ""
    if keyword in ("end", "release"):  # SQLite's synonyms for finishing a transaction
        keyword = "commit"
    name = f"sql:{keyword}"
    return name if name in _INDEX else "sql:other"


class WorkerCounters:
    """This process's counters, backed by `<counter_dir>/counters-<pid>.bin`."""

    def __init__(self, counter_dir: str) -> None:
        path = Path(counter_dir) / f"counters-{os.getpid()}.bin"
        size = _SLOT_BYTES * len(SLOTS)
        with open(path, "w+b") as handle:
            handle.truncate(size)
            self._map = mmap.mmap(handle.fileno(), size)
        self._slots = memoryview(self._map).cast("Q")

    def count_request(self) -> None:
        self._slots[0] += 1

    def count_statement(self, statement: Any) -> None:
        self._slots[_INDEX[classify(statement)]] += 1

    def count_dynamodb(self, operation: str) -> None:
        index = _INDEX.get(f"dynamodb:{operation}", _INDEX["dynamodb:other"])
        self._slots[index] += 1


def read_counter_dir(counter_dir: str) -> dict[str, int]:
    """Sum of all workers' counters in `counter_dir`, keyed like SLOTS."""
    totals = dict.fromkeys(SLOTS, 0)
    for path in sorted(Path(counter_dir).glob(_FILE_GLOB)):
        data = path.read_bytes()
        if len(data) != _SLOT_BYTES * len(SLOTS):
            continue  # a worker that is still creating its file
        for name, value in zip(SLOTS, memoryview(data).cast("Q"), strict=True):
            totals[name] += int(value)
    return totals


def install_sqlite_counter(counter: WorkerCounters) -> None:
    """Trace every statement of every sqlite3 connection opened from now on.

    Both `sqlite3.connect` and `sqlite3.dbapi2.connect` are wrapped because
    SQLAlchemy's pysqlite dialect calls the latter.
    """
    import sqlite3
    import sqlite3.dbapi2

    original: Callable[..., sqlite3.Connection] = sqlite3.dbapi2.connect

    def counting_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection = original(*args, **kwargs)
        connection.set_trace_callback(counter.count_statement)
        return connection

    sqlite3.connect = counting_connect  # type: ignore[assignment]
    sqlite3.dbapi2.connect = counting_connect  # type: ignore[assignment]


def install_asyncpg_counter(counter: WorkerCounters) -> None:
    """Count every statement asyncpg runs (each one round trip: prepared statements are
    cached per connection, and autocommit sends no BEGIN)."""
    from asyncpg.connection import Connection

    for name in ("execute", "fetch", "fetchrow", "fetchval"):
        original = getattr(Connection, name)

        def counted(self: Any, query: str, *args: Any, _original: Any = original,
                    **kwargs: Any) -> Any:
            counter.count_statement(query)
            return _original(self, query, *args, **kwargs)

        setattr(Connection, name, counted)


def install_psycopg2_counter(counter: WorkerCounters) -> None:
    """Count every round trip psycopg2 makes on connections opened from now on."""
    import psycopg2
    import psycopg2.extensions as ext

    def count_implicit_begin(connection: ext.connection) -> None:
        # psycopg2 sends a separate BEGIN before the first statement of a transaction.
        idle = connection.info.transaction_status == ext.TRANSACTION_STATUS_IDLE
        if idle and not connection.autocommit:
            counter.count_statement("BEGIN")

    class CountingCursorMixin:
        connection: ext.connection

        def execute(self, query: Any, vars: Any = None) -> Any:  # `vars`: the DB-API parameter name
            count_implicit_begin(self.connection)
            counter.count_statement(query)
            return super().execute(query, vars)  # type: ignore[misc]

        def executemany(self, query: Any, vars_list: Iterable[Any]) -> Any:
            params = list(vars_list)
            count_implicit_begin(self.connection)
            for _ in params:  # one statement per parameter set
                counter.count_statement(query)
            return super().executemany(query, params)  # type: ignore[misc]

    counting_classes: dict[type, type] = {}

    def counting_cursor_class(base: type) -> type:
        # Keep any cursor class the caller asked for (e.g. a dict cursor), just counted.
        if base not in counting_classes:
            counting_classes[base] = type(
                f"Counting{base.__name__}", (CountingCursorMixin, base), {}
            )
        return counting_classes[base]

    class CountingConnection(ext.connection):
        def cursor(self, *args: Any, **kwargs: Any) -> Any:
            requested = kwargs.get("cursor_factory") or self.cursor_factory or ext.cursor
            kwargs["cursor_factory"] = counting_cursor_class(requested)
            return super().cursor(*args, **kwargs)

        def commit(self) -> None:
            # psycopg2 only talks to the server if a transaction is open.
            if self.info.transaction_status != ext.TRANSACTION_STATUS_IDLE:
                counter.count_statement("COMMIT")
            super().commit()

        def rollback(self) -> None:
            if self.info.transaction_status != ext.TRANSACTION_STATUS_IDLE:
                counter.count_statement("ROLLBACK")
            super().rollback()

        def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
            # `with connection:` commits/rolls back in C, bypassing the methods above.
            if self.info.transaction_status != ext.TRANSACTION_STATUS_IDLE:
                counter.count_statement("ROLLBACK" if exc_type else "COMMIT")
            return super().__exit__(exc_type, exc, tb)

    original = psycopg2.connect

    def counting_connect(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("connection_factory", CountingConnection)
        return original(*args, **kwargs)

    psycopg2.connect = counting_connect


def install_pymysql_counter(counter: WorkerCounters) -> None:
    """Count every round trip pymysql makes for statements, on connections opened from now on.

    Every cursor execute reaches the server through `Connection.query` (a batched
    `executemany` INSERT is one query, so one count). Unlike psycopg2, pymysql has
    no implicit BEGIN and sends COMMIT/ROLLBACK on every `commit()`/`rollback()`
    call, in autocommit mode too, so each call is a real round trip.
    """
    import pymysql
    import pymysql.connections

    class CountingConnection(pymysql.connections.Connection):
        def query(self, sql: Any, unbuffered: bool = False) -> Any:
            counter.count_statement(sql)
            return super().query(sql, unbuffered)

        def begin(self) -> None:
            counter.count_statement("BEGIN")
            super().begin()

        def commit(self) -> None:
            counter.count_statement("COMMIT")
            super().commit()

        def rollback(self) -> None:
            counter.count_statement("ROLLBACK")
            super().rollback()

        def autocommit(self, value: Any) -> None:
            # pymysql sends SET AUTOCOMMIT only when the server's mode differs.
            if bool(value) != self.get_autocommit():
                counter.count_statement("SET AUTOCOMMIT")
            super().autocommit(value)

    # SQLAlchemy's pymysql dialect calls `pymysql.connect`, an alias of the class.
    pymysql.connect = pymysql.Connect = CountingConnection  # type: ignore[misc]


def install_botocore_counter(counter: WorkerCounters, client: Any) -> None:
    """Count every HTTP request a botocore DynamoDB client sends, by operation.

    `before-send` fires once per attempt, so a retried call counts each round trip.
    `client` is a low-level client (a boto3 resource's is `resource.meta.client`).
    """

    def count(event_name: str, **_: Any) -> None:
        counter.count_dynamodb(event_name.rsplit(".", 1)[-1])

    client.meta.events.register("before-send.dynamodb", count)
