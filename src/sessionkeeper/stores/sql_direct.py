"""The SQL store's hot path: its per-request statements, sent straight to the driver.

A session read through SQLAlchemy Core spends about as long in Core (checking out a
``Connection``, compiling-cache look-ups, result processing, the autobegin/reset dance)
as in the round trip to a local database, and a versioned UPDATE built and run through
Core costs twice that again (about 1.3 million instructions per save on MariaDB and
PostgreSQL, against 0.2 million for the driver's own execute). The read, the versioned
save and the refresh are fixed statements, so each is compiled once per engine and
executed on a pooled DBAPI connection (``Engine.raw_connection()``): the pool, its
events, its reset-on-return and the driver's own timeouts apply as before. Writes take
this path only on the store's own autocommit engines, where the statement commits by
itself as it would through Core. Execute events and SQL echo would not see it, so
an engine that has execute listeners (tracing, statement logging, OpenTelemetry's
instrumentation) or ``echo`` on is read through Core, checked on every read.

Only drivers whose parameter and result types are known to need no conversion beyond
what :func:`direct_select` is given take this path; anything else, and engines carrying
execution options (``schema_translate_map``, say), use Core.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from .sql_engine import AUTOCOMMIT_ENGINES
from .sql_literals import LITERAL_WRITERS, PYFORMAT_PLACEHOLDER, literals_of
from .sql_prepared import prepared_form

#: drivers whose DBAPI takes Python str/float/bytes parameters and returns plain rows
DIRECT_DRIVERS = frozenset({"psycopg2", "psycopg", "pymysql", "mysqldb", "mariadbconnector",
                            "pysqlite"})

Bind = Callable[[Mapping[str, Any]], Any]
R = TypeVar("R")


class StatementWatchdog(Protocol):
    """Bounds statements on drivers without a read timeout (the store's psycopg2 one).
    It is fed by one listener per execute event, which the direct path stands in for."""

    def arm(self, token: int, dbapi_connection: Any) -> None: ...

    def disarm(self, token: int) -> None: ...


class IdleConnections:
    """Pooled connections kept checked out between the direct statements of one engine,
    at most ``keep`` of them: a pool checkout and check-in cost about 58,000 instructions,
    as much as the statement's own round trip in the driver (psycopg2).

    Only for the store's own autocommit engines (no transaction is ever left open on
    an idle connection, and the pool resets nothing on return). A connection is shelved
    only after a statement succeeded on it; when one is found lost, every shelved one is
    handed back to the pool, which then reconnects those made before the loss. A forked
    child never uses its parent's (nor closes them: the parent still talks on them).
    """

    def __init__(self, engine: sa.Engine, keep: int) -> None:
        self.engine = engine
        self.keep = keep
        self._lock = threading.Lock()
        self._idle: list[Any] = []
        if hasattr(os, "register_at_fork"):
            me = weakref.ref(self)

            def in_child() -> None:
                shelf = me()
                if shelf is not None:
                    _INHERITED.append(shelf._idle)
                    shelf._lock, shelf._idle = threading.Lock(), []

            os.register_at_fork(after_in_child=in_child)

    def take(self) -> Any:
        """A shelved connection of the engine's current pool, or a checkout from it."""
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        while connection is not None and connection._pool is not self.engine.pool:
            connection.close()  # the pool was disposed meanwhile: back to the old one
            with self._lock:
                connection = self._idle.pop() if self._idle else None
        return connection if connection is not None else self.engine.raw_connection()

    def give(self, connection: Any) -> None:
        """Shelve a connection a statement just succeeded on (or return it to the pool)."""
        with self._lock:
            if len(self._idle) < self.keep:
                self._idle.append(connection)
                return
        connection.close()

    def clear(self) -> None:
        """Hand every shelved connection back to the pool."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


#: shelves a forked child inherited: kept referenced, so that garbage collection never
#: closes (and so ends on the server) connections the parent still uses
_INHERITED: list[list[Any]] = []


def idle_connections(engine: sa.Engine) -> IdleConnections | None:
    """A shelf for ``engine``'s direct statements when it is one the store built in
    autocommit with a queue pool (None: check each statement's connection out and in).
    It keeps one connection less than the pool's size, so Core's operations always
    find one."""
    pool = engine.pool
    if (engine not in AUTOCOMMIT_ENGINES or not isinstance(pool, sa.pool.QueuePool)
            or getattr(pool, "_recycle", -1) > -1 or getattr(pool, "_pre_ping", False)):
        return None
    keep = pool.size() - 1
    return IdleConnections(engine, keep) if keep > 0 else None


class DirectStatement:
    """One compiled statement, run on a pooled DBAPI connection: a SELECT's first row
    (:meth:`first`) or an UPDATE's matched rows (:meth:`rowcount`)."""

    def __init__(self, engine: sa.Engine, statement: sa.Executable,
                 watchdog: StatementWatchdog | None = None,
                 idle: IdleConnections | None = None) -> None:
        self.engine = engine
        self._watchdog = watchdog
        self._idle = idle
        #: execute listeners that are the watchdog's own, not an observer's
        self._own_listeners = 0 if watchdog is None else 1
        compiled = statement.compile(dialect=engine.dialect)
        self.sql = str(compiled)
        names = compiled.positiontup if compiled.positional else None
        self._bind: Bind = ((lambda params: tuple(params[name] for name in names))
                            if names is not None else dict)
        # Parameters written into the statement by the store where it can (sql_literals.py)
        self._writers = LITERAL_WRITERS.get(engine.dialect.driver)
        self._positional = names is not None
        self._names: tuple[str, ...] = (
            tuple(names) if names is not None
            else tuple(dict.fromkeys(PYFORMAT_PLACEHOLDER.findall(self.sql))))
        self._dbapi_error: type[Exception] = engine.dialect.loaded_dbapi.Error
        # Only on the store's own autocommit engines: a failed EXECUTE there ends no
        # transaction, so the plain statement can follow it (sql_prepared.py).
        self._prepared = (prepared_form(engine, compiled) if engine in AUTOCOMMIT_ENGINES
                          else None)

    def watched(self) -> bool:
        """Whether anything on the engine wants to see each statement: then use Core."""
        engine = self.engine
        events = engine.dispatch
        own = self._own_listeners
        # handle_error listeners (custom disconnect detection, say) live on the dialect.
        return bool(engine.echo or len(events.before_cursor_execute) > own
                    or len(events.after_cursor_execute) > own
                    or len(engine.dialect.dispatch.handle_error) > own
                    or events.before_execute or events.after_execute)

    def first(self, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row (a plain DBAPI tuple), or None."""
        return self._run(params, _first_row)

    def rowcount(self, params: Mapping[str, Any]) -> int:
        """The rows the statement matched (SQLAlchemy's MySQL dialects connect with
        FOUND_ROWS, so an UPDATE that changes nothing still counts its row)."""
        return self._run(params, _rowcount)

    def _run(self, params: Mapping[str, Any], result: Callable[[Any], R]) -> R:
        """Execute, then take ``result`` of the cursor.

        Errors come out as SQLAlchemy's, as ``Engine.connect`` and ``Connection.execute``
        raise them: a DBAPI error is wrapped (``OperationalError`` and so on), with
        ``connection_invalidated`` set and the connection dropped from the pool when the
        driver says the connection is gone. Statement parameters are left out of the
        error, so session data never reaches a log.
        """
        idle = self._idle
        try:
            connection = self.engine.raw_connection() if idle is None else idle.take()
        except self._dbapi_error as exc:  # the pool's connect: not wrapped by SQLAlchemy
            raise self._wrapped(exc, self.engine.dialect.is_disconnect(exc, None, None)) from exc
        cursor = None
        watchdog = self._watchdog
        try:
            cursor = connection.cursor()
            if watchdog is not None:
                watchdog.arm(id(cursor), connection.dbapi_connection)
            try:
                prepared = self._prepared
                if prepared is not None and prepared.usable:
                    prepared.execute(connection, cursor, params, self.sql, self._bind)
                else:
                    written = self._written(params)
                    if written is None:
                        cursor.execute(self.sql, self._bind(params))
                    else:
                        cursor.execute(written)  # no parameters: sent as it is
                outcome = result(cursor)
            finally:
                if watchdog is not None:
                    watchdog.disarm(id(cursor))
            cursor.close()
        except self._dbapi_error as exc:
            dialect = self.engine.dialect
            gone = dialect.is_disconnect(exc, connection.dbapi_connection, cursor)
            if gone:
                _invalidate_pool(self.engine.pool, connection, exc)
                if idle is not None:
                    idle.clear()  # made before the loss too: the pool reconnects them
            connection.close()  # back to the pool (or discarded, if invalidated)
            raise self._wrapped(exc, gone) from exc
        except BaseException:
            connection.close()
            raise
        if idle is None:
            connection.close()
        else:
            idle.give(connection)
        return outcome

    def _written(self, params: Mapping[str, Any]) -> str | None:
        """The statement with ``params`` written in, as the driver would (None: the
        driver binds them)."""
        writers = self._writers
        literals = None if writers is None else literals_of(self._names, params, writers)
        if literals is None:
            return None
        # The driver's own step: its paramstyle's placeholders filled, "%%" made "%".
        return self.sql % (tuple(literals) if self._positional
                           else dict(zip(self._names, literals, strict=True)))

    def _wrapped(self, exc: Exception, gone: bool) -> sa_exc.DBAPIError:
        return sa_exc.DBAPIError.instance(
            self.sql, None, exc, self._dbapi_error, hide_parameters=True,
            connection_invalidated=gone, dialect=self.engine.dialect)


def _first_row(cursor: Any) -> tuple[Any, ...] | None:
    row = cursor.fetchone()
    return None if row is None else tuple(row)


def _rowcount(cursor: Any) -> int:
    return int(cursor.rowcount)


def _invalidate_pool(pool: sa.pool.Pool, connection: Any, exc: BaseException) -> None:
    """What ``Connection.execute`` does on a disconnect: the connection is dropped, and so
    is every pooled connection made before it (after a database restart they are all
    dead), each when it is next checked out."""
    invalidate_generation = getattr(pool, "_invalidate", None)
    if invalidate_generation is not None:
        invalidate_generation(connection, exc)
    else:  # pragma: no cover - a SQLAlchemy without it
        connection.invalidate(exc)


def direct_statement(engine: sa.Engine, statement: sa.Executable,
                     watchdog: StatementWatchdog | None = None,
                     idle: IdleConnections | None = None) -> DirectStatement | None:
    """A :class:`DirectStatement` when ``engine``'s driver is one this path knows and the
    engine has no execution options that change how statements run; else None.
    ``watchdog``: the engine's statement watchdog, armed around the statement as its
    listeners would have."""
    if engine.dialect.driver not in DIRECT_DRIVERS or engine.get_execution_options():
        return None
    return DirectStatement(engine, statement, watchdog, idle)
