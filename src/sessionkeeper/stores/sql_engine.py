"""The engine the SQL store builds from a URL: autocommit, bounded, fork-safe.

``engine_from_url`` gives every connection attempt and statement a deadline (the
driver's own timeouts; a watchdog for libpq, which has none), runs in autocommit (one
round trip per single-statement operation), drops inherited pools in forked workers,
and opens SQLite files private to their owner, in WAL mode.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
import weakref
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from ..errors import ConfigurationError
from .sqlite_wal import create_private, use_wal

__all__ = [
    "AUTOCOMMIT_ENGINES",
    "DEFAULT_TIMEOUT",
    "WATCHDOGS",
    "engine_from_url",
    "is_in_memory_sqlite",
]

logger = logging.getLogger("sessionkeeper")

DEFAULT_TIMEOUT = 3.0

# Dialects that accept isolation_level="AUTOCOMMIT": engines built here use it, so a
# one-statement operation costs one round trip instead of BEGIN/statement/ROLLBACK.
_AUTOCOMMIT_DIALECTS = ("postgresql", "mysql", "mariadb", "sqlite", "mssql", "oracle")
# DBAPI connect() argument bounding the connection attempt, per driver.
_TIMEOUT_ARGUMENTS = {
    "psycopg2": "connect_timeout",
    "psycopg": "connect_timeout",
    "pg8000": "timeout",
    "pymysql": "connect_timeout",
    "mysqldb": "connect_timeout",
    "mariadbconnector": "connect_timeout",
    "mysqlconnector": "connection_timeout",
    "pysqlite": "timeout",  # the busy timeout: how long a writer waits for the lock
}
# DBAPI connect() arguments bounding each read and write once connected, per driver.
# (pg8000's "timeout" above is already a socket timeout for everything.)
_OPERATION_TIMEOUT_ARGUMENTS = {
    "pymysql": ("read_timeout", "write_timeout"),
    "mysqldb": ("read_timeout", "write_timeout"),
    "mariadbconnector": ("read_timeout", "write_timeout"),
}
# Drivers on libpq, which has no read timeout at all: a watchdog bounds their statements.
_WATCHED_DRIVERS = ("psycopg2",)


def is_in_memory_sqlite(url: sa.URL) -> bool:
    """Whether ``url`` names an in-memory SQLite database, which lives inside one
    connection ("sqlite://", "sqlite:///:memory:", a URI filename with mode=memory)."""
    if url.get_backend_name() != "sqlite":
        return False
    database = url.database or ""
    return database in ("", ":memory:") or (
        database.startswith("file:") and ("mode=memory" in database
                                           or database.startswith("file::memory:")))


def engine_from_url(url: str | sa.URL, *, timeout: float = DEFAULT_TIMEOUT) -> sa.Engine:
    """An engine for the store: autocommit, fork-safe, and ``timeout`` bounding both the
    connection attempt and each statement (unless the URL sets the driver's own)."""
    try:
        parsed = sa.make_url(url)
    except sa_exc.ArgumentError as exc:
        # Not echoed: a mistyped URL may still carry a password.
        raise ConfigurationError(
            "SESSION_SQLALCHEMY is not a database URL; use e.g. "
            "'postgresql+psycopg2://user:password@host/db' or 'sqlite:///sessions.db'") from exc
    backend = parsed.get_backend_name()
    in_memory = is_in_memory_sqlite(parsed)
    if in_memory:
        logger.warning(
            "sessions are kept in an in-memory SQLite database (%s): they are lost when the "
            "process ends and not shared with other worker processes; give "
            "SESSION_SQLALCHEMY a file (sqlite:///sessions.db) to keep them",
            parsed.render_as_string())
    # No pool_pre_ping: it costs a round trip per request; dead connections are retried
    # once instead (_retry_on_disconnect).
    options: dict[str, Any] = {"hide_parameters": True}
    driver = parsed.get_driver_name()
    connect_args: dict[str, Any] = {}
    argument = _TIMEOUT_ARGUMENTS.get(driver)
    if argument and argument not in parsed.query:
        # sqlite3 and pg8000 take fractions of a second; the others whole seconds.
        connect_args[argument] = timeout if argument == "timeout" else max(1, math.ceil(timeout))
    for argument in _OPERATION_TIMEOUT_ARGUMENTS.get(driver, ()):
        if argument not in parsed.query:
            connect_args[argument] = max(1, math.ceil(timeout))
    if in_memory:
        # The database lives inside one connection: every thread shares it, as
        # Flask-SQLAlchemy does it; the store takes turns on it (_shares_one_connection).
        connect_args["check_same_thread"] = False
        options["poolclass"] = sa.pool.StaticPool
    if connect_args:
        options["connect_args"] = connect_args
    if backend in _AUTOCOMMIT_DIALECTS:
        # Every operation is a single statement, so there is no transaction to reset,
        # and no ROLLBACK to send when a connection closes (pymysql would send one).
        options.update(isolation_level="AUTOCOMMIT", pool_reset_on_return=None,
                       skip_autocommit_rollback=True)
    try:
        engine = sa.create_engine(parsed, **options)
    except (ImportError, sa_exc.NoSuchModuleError) as exc:
        raise ConfigurationError(
            f"SESSION_SQLALCHEMY={parsed.render_as_string()!r} needs a database driver that "
            f"is not installed ({exc}); install the one for {parsed.drivername}") from exc
    if backend in _AUTOCOMMIT_DIALECTS:
        AUTOCOMMIT_ENGINES.add(engine)
    _fresh_pool_after_fork(engine)
    if backend == "sqlite" and not in_memory:
        _create_sqlite_file(parsed)
        _use_wal(engine, timeout)
    if driver in _WATCHED_DRIVERS:
        _watch_statements(engine, _StatementWatchdog(timeout))
    return engine


class _StatementWatchdog:
    """Shuts down the socket of a statement still unanswered at its deadline.

    Once libpq has sent a statement it waits for the answer without limit. A server that
    stops answering (hung, or behind a link that went dark) would hold the request for
    good: TCP keepalives and ``tcp_user_timeout`` do not fire while the server's kernel
    still acknowledges, and ``statement_timeout`` needs a server that runs. A shut socket
    wakes libpq, which reports the connection lost; SQLAlchemy then discards it.

    The thread polls a few times per timeout instead of being woken per statement: a
    statement then costs a lock and a dict entry, not a thread switch.
    """

    #: seconds without statements after which the thread ends (the next one restarts it)
    IDLE_EXIT = 60.0
    #: checks per timeout: a frozen statement is cut after at most 1.25 x the timeout
    CHECKS_PER_TIMEOUT = 4

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._reset()
        if hasattr(os, "register_at_fork"):
            # A forked child has no thread and no statements in flight; the lock may have
            # been held at the fork.
            me = weakref.ref(self)

            def in_child() -> None:
                watchdog = me()
                if watchdog is not None:
                    watchdog._reset()

            os.register_at_fork(after_in_child=in_child)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._armed: dict[int, tuple[float, Any]] = {}  # statements in flight
        self._running = False

    def arm(self, token: int, dbapi_connection: Any) -> None:
        with self._lock:
            self._armed[token] = (time.monotonic() + self.timeout, dbapi_connection)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="sessionkeeper-sql-watchdog",
                                 daemon=True).start()

    def disarm(self, token: int) -> None:
        # Under the lock: once this returns, the socket is never shut behind our back.
        with self._lock:
            self._armed.pop(token, None)

    def _run(self) -> None:
        idle_since = time.monotonic()
        while True:
            time.sleep(self.timeout / self.CHECKS_PER_TIMEOUT)
            now = time.monotonic()
            with self._lock:
                if self._armed:
                    idle_since = now
                elif now - idle_since > self.IDLE_EXIT:
                    self._running = False
                    return
                for token, (deadline, dbapi_connection) in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[token]
                        _shut_down(dbapi_connection)


def _shut_down(dbapi_connection: Any) -> None:
    if dbapi_connection.closed:
        return
    # On a duplicate of the descriptor: shutting down acts on the socket both share,
    # while the driver keeps its own descriptor to close.
    with contextlib.suppress(OSError), \
            socket.socket(fileno=os.dup(dbapi_connection.fileno())) as sock:
        sock.shutdown(socket.SHUT_RDWR)


#: each engine's statement watchdog, which the store's direct read arms itself
WATCHDOGS: weakref.WeakKeyDictionary[sa.Engine, _StatementWatchdog] = (
    weakref.WeakKeyDictionary())


def _watch_statements(engine: sa.Engine, watchdog: _StatementWatchdog) -> None:
    WATCHDOGS[engine] = watchdog
    # Keyed by the statement's execution context, which both ends of it can see.
    @sa.event.listens_for(engine, "before_cursor_execute")
    def arm(conn: sa.Connection, cursor: Any, statement: str, parameters: Any,
            context: Any, executemany: bool) -> None:
        watchdog.arm(id(context), conn.connection.dbapi_connection)

    @sa.event.listens_for(engine, "after_cursor_execute")
    def disarm(conn: sa.Connection, cursor: Any, statement: str, parameters: Any,
               context: Any, executemany: bool) -> None:
        watchdog.disarm(id(context))

    @sa.event.listens_for(engine, "handle_error")
    def disarm_after_error(error: sa.engine.ExceptionContext) -> None:
        watchdog.disarm(id(error.execution_context))


#: engines built by engine_from_url in autocommit mode: every statement commits by itself,
#: so the store sends no COMMIT (some drivers, pymysql among them, send one regardless)
AUTOCOMMIT_ENGINES: weakref.WeakSet[sa.Engine] = weakref.WeakSet()


#: pools a forked child inherited; kept referenced so that garbage collection in the child
#: never closes (and so terminates on the server) connections the parent still uses
_INHERITED_POOLS: list[sa.pool.Pool] = []


def _fresh_pool_after_fork(engine: sa.Engine) -> None:
    # Connections opened before a fork (the start-up check, then gunicorn forks its
    # workers) must not be shared by parent and child: the child starts a pool of its own.
    if not hasattr(os, "register_at_fork"):
        return
    engine_ref = weakref.ref(engine)

    def in_child() -> None:
        inherited = engine_ref()
        if inherited is not None:
            _INHERITED_POOLS.append(inherited.pool)
            inherited.dispose(close=False)

    os.register_at_fork(after_in_child=in_child)


def _create_sqlite_file(url: sa.URL) -> None:
    """Create a SQLite database file private to its owner (0600) before SQLite creates it
    readable by everyone; its -wal and -shm files then get that mode too."""
    path = url.database
    if not path or path.startswith("file:") or url.query.get("uri"):
        return  # a URI filename: SQLite's to interpret
    with contextlib.suppress(OSError):  # no folder, say: SQLite's connect says so later
        create_private(path)


def _use_wal(engine: sa.Engine, timeout: float) -> None:
    # WAL lets readers run beside the one writer SQLite allows.
    @sa.event.listens_for(engine, "connect")
    def wal(dbapi_connection: Any, record: Any) -> None:
        use_wal(dbapi_connection, timeout)
