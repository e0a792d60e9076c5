"""The SQL store's per-request statements on an async driver, for ASGI apps: no thread.

When the app names an async driver (``postgresql+asyncpg://``,
``postgresql+psycopg_async://``, ``mysql+aiomysql://``, ``mysql+asyncmy://``, or an
``AsyncEngine`` of one), the read, the versioned save with its re-read and the refresh
are sent from the event loop, the way stores/sql_direct.py sends them from a thread:
each statement compiled once, run on the driver's own connection (asyncpg prepares it
once per connection, psycopg after a few runs), in autocommit. Going through
SQLAlchemy's asyncio layer instead costs a greenlet switch, a pool checkout and Core's
result handling per call: a read took 270 µs that way against 78 µs here (asyncpg,
loopback). Everything else the store does stays on its blocking engine.

Connections belong to the event loop that made them, so each running loop has its own
small pool (at most :attr:`NativeStatements.size` connections; more callers wait), closed
when the loop shuts down. One deadline, the store's timeout, bounds the wait for a
connection and the statement; a connection that timed out, broke or was cancelled
mid-statement is dropped, never reused.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.util
import math
import os
import socket
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import sqlalchemy as sa

from ..deadlines import loop_deadlines, within
from ..errors import ConfigurationError

__all__ = ["NATIVE_DRIVERS", "NativeStatements", "async_engine_url", "blocking_url",
           "is_async_url", "native_statements"]

R = TypeVar("R")

#: a pooled connection the server closed fails at once (as in sqlalchemy.py): then retried
STALE_CONNECTION_FAILS_WITHIN = 0.5
#: seconds past the timeout after which a statement whose connection was shut, and that
#: still has not failed, is cancelled
INTERRUPT_GRACE = 1.0
#: connection arguments SQLAlchemy's dialects take for their adapters, not the driver's
_ADAPTER_ARGUMENTS = ("prepared_statement_cache_size", "prepared_statement_name_func",
                      "async_creator_fn", "async_fallback")
#: MariaDB/MySQL client error codes (CR_*) of a connection lost: no server, gone, lost
_MYSQL_LOST = frozenset({2003, 2006, 2013, 2055})


class _Asyncpg:
    """PostgreSQL through asyncpg: ``$n`` parameters, each statement prepared once per
    connection (asyncpg's statement cache) and run in one round trip."""

    paramstyle = "numeric_dollar"

    def __init__(self) -> None:
        import asyncpg

        self._connect = asyncpg.connect
        # The connection or the server is gone, or refuses work for now (57: shutting
        # down, starting up; 53: out of connections or memory): an outage, not a bug.
        self.unavailable: tuple[type[BaseException], ...] = (
            OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
            asyncpg.OperatorInterventionError, asyncpg.InsufficientResourcesError)
        self.broken: tuple[type[BaseException], ...] = (
            OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError)

    async def connect(self, arguments: dict[str, Any], timeout: float) -> Any:
        return await self._connect(**arguments, timeout=timeout)

    @staticmethod
    async def first(connection: Any, sql: str, args: Sequence[Any]) -> tuple[Any, ...] | None:
        row = await connection.fetchrow(sql, *args)
        return None if row is None else tuple(row)

    @staticmethod
    async def rowcount(connection: Any, sql: str, args: Sequence[Any]) -> int:
        status: str = await connection.execute(sql, *args)  # "UPDATE 1"
        return int(status.rpartition(" ")[2])

    def is_lost(self, error: BaseException) -> bool:
        return isinstance(error, self.broken)

    @staticmethod
    def usable(connection: Any) -> bool:
        return not connection.is_closed()

    @staticmethod
    def drop(connection: Any) -> None:
        connection.terminate()

    interrupt = drop  # the waiting statement fails with ConnectionDoesNotExistError


class _Aiomysql:
    """MariaDB/MySQL through aiomysql (pymysql's protocol and escaping on asyncio)."""

    paramstyle = "format"

    def __init__(self) -> None:
        import aiomysql
        import pymysql

        self._connect = aiomysql.connect
        # pymysql's OperationalError also carries deadlocks and oversized packets; the
        # store tells those apart (is_deadlock, is_packet_too_large) before this applies.
        self.unavailable: tuple[type[BaseException], ...] = (
            OSError, pymysql.err.OperationalError, pymysql.err.InterfaceError)
        self.broken: tuple[type[BaseException], ...] = (
            OSError, pymysql.err.InterfaceError)

    async def connect(self, arguments: dict[str, Any], timeout: float) -> Any:
        return await self._connect(**arguments, connect_timeout=timeout, autocommit=True)

    #: aiomysql's ``connection.cursor()`` is a coroutine; asyncmy's returns the cursor
    cursor_is_awaited = True

    async def _cursor(self, connection: Any) -> Any:
        cursor = connection.cursor()
        return (await cursor) if self.cursor_is_awaited else cursor

    async def first(self, connection: Any, sql: str,
                    args: Sequence[Any]) -> tuple[Any, ...] | None:
        cursor = await self._cursor(connection)
        await cursor.execute(_inlined(connection, sql, args))
        row = await cursor.fetchone()
        await cursor.close()
        return None if row is None else tuple(row)

    async def rowcount(self, connection: Any, sql: str, args: Sequence[Any]) -> int:
        # The dialect's client_flag has FOUND_ROWS: rows matched, as the blocking path
        cursor = await self._cursor(connection)
        count = await cursor.execute(_inlined(connection, sql, args))
        await cursor.close()
        return int(count)

    def is_lost(self, error: BaseException) -> bool:
        args = getattr(error, "args", ())
        return isinstance(error, self.broken) or (bool(args) and args[0] in _MYSQL_LOST)

    @staticmethod
    def usable(connection: Any) -> bool:
        return not connection.closed

    @staticmethod
    def drop(connection: Any) -> None:
        connection.close()

    interrupt = drop  # the waiting read fails: the stream is closed


class _Asyncmy(_Aiomysql):
    """MariaDB/MySQL through asyncmy (its own protocol code, pymysql's API): the text
    protocol, as aiomysql, with the parameters escaped in by :func:`_inlined`; the same
    connecting, loss codes and interrupt (closing: the waiting read fails with 2013)."""

    def __init__(self) -> None:
        import asyncmy
        from asyncmy import errors

        self._connect = asyncmy.connect
        # Its own error classes, pymysql's codes in args[0]; OperationalError also
        # carries deadlocks and oversized packets, told apart first (as for aiomysql).
        self.unavailable: tuple[type[BaseException], ...] = (
            OSError, errors.OperationalError, errors.InterfaceError)
        self.broken: tuple[type[BaseException], ...] = (OSError, errors.InterfaceError)

    cursor_is_awaited = False

    @staticmethod
    def usable(connection: Any) -> bool:
        return bool(connection.connected)


class _PsycopgAsync:
    """PostgreSQL through psycopg 3's asyncio connections (``postgresql+psycopg_async``);
    psycopg prepares a statement once it ran a few times on a connection."""

    paramstyle = "format"

    def __init__(self) -> None:
        import psycopg

        self._connect = psycopg.AsyncConnection.connect
        # Its OperationalError also carries deadlocks (told apart first, is_deadlock)
        # and server errors with an SQLSTATE; a lost connection has none.
        self.unavailable: tuple[type[BaseException], ...] = (
            OSError, psycopg.OperationalError, psycopg.InterfaceError)

    async def connect(self, arguments: dict[str, Any], timeout: float) -> Any:
        return await self._connect(**arguments, autocommit=True,
                                   connect_timeout=max(1, math.ceil(timeout)))

    @staticmethod
    async def first(connection: Any, sql: str, args: Sequence[Any]) -> tuple[Any, ...] | None:
        cursor = await connection.execute(sql, args)
        row = await cursor.fetchone()
        return None if row is None else tuple(row)

    @staticmethod
    async def rowcount(connection: Any, sql: str, args: Sequence[Any]) -> int:
        cursor = await connection.execute(sql, args)
        return int(cursor.rowcount)

    def is_lost(self, error: BaseException) -> bool:
        return isinstance(error, self.unavailable) and getattr(error, "sqlstate", None) is None

    @staticmethod
    def usable(connection: Any) -> bool:
        return not (connection.closed or connection.broken)

    @staticmethod
    def drop(connection: Any) -> None:
        connection.pgconn.finish()  # (AsyncConnection.close is a coroutine)

    @staticmethod
    def interrupt(connection: Any) -> None:
        # Shut, not closed: psycopg waits for the socket to turn readable, which a shut
        # socket does at once (a closed descriptor would leave the wait hanging).
        with contextlib.suppress(OSError), \
                socket.socket(fileno=os.dup(connection.pgconn.socket)) as sock:
            sock.shutdown(socket.SHUT_RDWR)


def _inlined(connection: Any, sql: str, args: Sequence[Any]) -> str:
    """``sql`` with its ``%s`` parameters escaped in, as pymysql's own cursor does it,
    but bytes as hex literals: aiomysql's escaping of bytes fails with PyMySQL 1.2, and
    asyncmy's backslash-escapes them even under sql_mode NO_BACKSLASH_ESCAPES."""
    return sql % tuple(f"X'{arg.hex()}'" if isinstance(arg, bytes | bytearray)
                       else connection.escape(arg) for arg in args)


#: SQLAlchemy's async driver names this module speaks -> their adapters
NATIVE_DRIVERS: dict[str, Callable[[], Any]] = {
    "asyncpg": _Asyncpg, "psycopg_async": _PsycopgAsync, "aiomysql": _Aiomysql,
    "asyncmy": _Asyncmy}

_ALL: weakref.WeakSet[NativeStatements] = weakref.WeakSet()


def _forget_inherited_connections() -> None:
    # A forked child must not talk on its parent's sockets (nor has it their loops).
    for statements in list(_ALL):
        statements._pools = weakref.WeakKeyDictionary()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_inherited_connections)


class _LoopPool:
    """The connections of one event loop: idle ones, and callers waiting for one."""

    def __init__(self) -> None:
        self.idle: list[Any] = []
        self.opened = 0
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()


async def _closing_at_loop_shutdown(pool: _LoopPool, drop: Callable[[Any], None],
                                    forget: Callable[[], Any]) -> AsyncIterator[None]:
    """Closes ``pool``'s idle connections when the loop finalizes this generator, then
    ``forget``s it (a finished generator still holds its loop's finalizer hook: kept,
    it would keep the closed loop alive)."""
    try:
        yield
    finally:
        connections, pool.idle[:] = list(pool.idle), []
        for connection in connections:
            drop(connection)
        forget()


class NativeStatements:
    """Compiled statements run on an async driver from the running asyncio loop."""

    def __init__(self, driver: Any, arguments: dict[str, Any],
                 statements: dict[Any, tuple[str, tuple[str, ...]]], timeout: float,
                 size: int) -> None:
        self._driver = driver
        self._arguments = arguments
        self._statements = statements
        self.timeout = timeout
        #: connections per event loop, at most
        self.size = size
        self.unavailable: tuple[type[BaseException], ...] = driver.unavailable
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPool] = (
            weakref.WeakKeyDictionary())
        self._closers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary())
        _ALL.add(self)

    async def first(self, statement: Any, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """The first row of a SELECT (plain driver values), or None."""
        return await self._run(statement, params, self._driver.first)

    async def rowcount(self, statement: Any, params: dict[str, Any]) -> int:
        """The rows an UPDATE matched."""
        return await self._run(statement, params, self._driver.rowcount)

    async def _run(self, statement: Any, params: dict[str, Any],
                   call: Callable[[Any, str, Sequence[Any]], Awaitable[R]]) -> R:
        """Run within the timeout (``TimeoutError`` past it); the driver's exceptions
        otherwise. A connection that was idle and fails at once (the server restarted
        since) is dropped and the statement sent once more on a new one."""
        sql, names = self._statements[statement]
        args = [params[name] for name in names]
        pool = await self._pool()
        deadline = asyncio.get_running_loop().time() + self.timeout
        # The statement is cut at the deadline by closing its connection (_guarded);
        # this bounds the rest (waiting for a connection, connecting) and is the backstop.
        return await within(self.timeout + INTERRUPT_GRACE,
                             self._exchange(pool, sql, args, call, deadline))

    async def _guarded(self, deadline: float, connection: Any,
                       work: Awaitable[R]) -> R:
        """``await work`` on ``connection``, which is shut at ``deadline``: the driver then
        fails at once (TimeoutError). Cancelling it instead would let psycopg first ask
        the hung server to cancel the statement, for many seconds."""
        deadlines = loop_deadlines()
        filed = deadlines.add_at(deadline, partial(self._driver.interrupt, connection))
        try:
            return await work
        except Exception as exc:
            if filed.fired:
                raise TimeoutError(f"no answer within {self.timeout} s") from exc
            raise
        finally:
            deadlines.remove(filed)

    async def _exchange(self, pool: _LoopPool, sql: str, args: list[Any],
                        call: Callable[[Any, str, Sequence[Any]], Awaitable[R]],
                        deadline: float) -> R:
        connection, reused = await self._acquire(pool)
        started = time.monotonic()
        try:
            result = await self._guarded(deadline, connection, call(connection, sql, args))
        except BaseException as exc:
            lost = (isinstance(exc, Exception) and not isinstance(exc, TimeoutError)
                    and self._driver.is_lost(exc))
            # A server's error reply leaves the connection in step; a lost connection,
            # a cancellation or a timeout (half a reply may be unread) do not.
            if (lost or not isinstance(exc, Exception) or isinstance(exc, TimeoutError)
                    or not self._driver.usable(connection)):
                self._discard(pool, connection)
            else:
                self._release(pool, connection)
            if not (lost and reused
                    and time.monotonic() - started < STALE_CONNECTION_FAILS_WITHIN):
                raise
        else:
            self._release(pool, connection)
            return result
        connection = await self._open(pool)  # once more, on a new connection
        try:
            result = await self._guarded(deadline, connection, call(connection, sql, args))
        except BaseException:
            self._discard(pool, connection)
            raise
        self._release(pool, connection)
        return result

    async def _pool(self) -> _LoopPool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._pools[loop] = _LoopPool()
            # Closed when the loop shuts down (asyncio.run and the servers built on it
            # close every async generator first): no socket outlives its loop.
            closer = _closing_at_loop_shutdown(
                pool, self._driver.drop, lambda: self._closers.pop(loop, None))
            await closer.__anext__()
            self._closers[loop] = closer
        return pool

    async def _acquire(self, pool: _LoopPool) -> tuple[Any, bool]:
        """A connection, and whether it was idle (so possibly stale)."""
        while pool.idle:
            connection = pool.idle.pop()
            if self._driver.usable(connection):
                return connection, True
            pool.opened -= 1  # closed while idle (the server said goodbye)
        if pool.opened >= self.size:
            waiter = asyncio.get_running_loop().create_future()
            pool.waiting.append(waiter)
            try:
                handed = await waiter  # a connection, or None: open one
            except BaseException:
                if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                    self._release(pool, waiter.result())
                elif waiter.done() and not waiter.cancelled():
                    self._wake(pool)  # the slot we were given goes to the next one
                raise
            if handed is not None:
                return handed, True
        return await self._open(pool), False

    async def _open(self, pool: _LoopPool) -> Any:
        pool.opened += 1
        try:
            return await self._driver.connect(self._arguments, self.timeout)
        except BaseException:
            pool.opened -= 1
            self._wake(pool)
            raise

    def _release(self, pool: _LoopPool, connection: Any) -> None:
        while pool.waiting:
            waiter = pool.waiting.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        pool.idle.append(connection)

    def _discard(self, pool: _LoopPool, connection: Any) -> None:
        pool.opened -= 1
        self._driver.drop(connection)
        self._wake(pool)

    @staticmethod
    def _wake(pool: _LoopPool) -> None:
        """Lets the first waiter open a connection in a slot that came free."""
        while pool.waiting:
            waiter = pool.waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


def native_statements(url: sa.URL, statements: Sequence[Any], *, timeout: float,
                      size: int) -> NativeStatements | None:
    """``statements`` compiled for ``url``'s async driver, run natively; None when the
    driver is not one this module speaks (SQLite's aiosqlite, which is a thread itself)
    or is not installed."""
    adapter = NATIVE_DRIVERS.get(url.get_driver_name())
    if adapter is None:
        return None
    try:
        driver = adapter()
        dialect = url.get_dialect()(paramstyle=driver.paramstyle)
    except ImportError:
        return None
    _, arguments = dialect.create_connect_args(url)
    cache_size = arguments.get("prepared_statement_cache_size")
    for name in _ADAPTER_ARGUMENTS:
        arguments.pop(name, None)
    if cache_size is not None and isinstance(driver, _Asyncpg):
        # ?prepared_statement_cache_size=0 (behind pgbouncer, say): asyncpg's own cache
        arguments["statement_cache_size"] = int(cache_size)
    compiled: dict[Any, tuple[str, tuple[str, ...]]] = {}
    for statement in statements:
        sql = statement.compile(dialect=dialect)
        compiled[statement] = (str(sql), tuple(sql.positiontup or ()))
    return NativeStatements(driver, dict(arguments), compiled, timeout, size)


#: async SQLAlchemy drivers -> the blocking drivers of the same databases, in preference
_BLOCKING_DRIVERS = {
    "asyncpg": ("psycopg2", "psycopg"),
    "psycopg_async": ("psycopg",),
    "aiomysql": ("pymysql", "mysqldb"),
    "asyncmy": ("pymysql", "mysqldb"),
    "aiosqlite": ("pysqlite",),
}
#: SQLAlchemy driver names -> the module that must be importable
_DRIVER_MODULES = {"psycopg2": "psycopg2", "psycopg": "psycopg", "pymysql": "pymysql",
                   "mysqldb": "MySQLdb", "pysqlite": "sqlite3"}


def is_async_url(url: sa.URL) -> bool:
    """Whether ``url`` names an async driver (which a blocking engine cannot use)."""
    return url.get_driver_name() in _BLOCKING_DRIVERS


def blocking_url(url: sa.URL, candidates: Sequence[str] | None = None) -> sa.URL:
    """``url`` with its async driver replaced by an installed blocking driver of the
    same database (``candidates``, in preference: by default the async driver's own)."""
    backend = url.get_backend_name()
    candidates = candidates or _BLOCKING_DRIVERS[url.get_driver_name()]
    for candidate in candidates:
        if importlib.util.find_spec(_DRIVER_MODULES[candidate]) is not None:
            # without what only the async adapter takes (a blocking driver refuses it)
            return url.set(drivername=f"{backend}+{candidate}").difference_update_query(
                _ADAPTER_ARGUMENTS)
    raise ConfigurationError(
        f"{url.drivername}: the store runs in threads, with a blocking driver of the same "
        f"database; install one of {', '.join(candidates)} "
        f"(e.g. pip install {'psycopg2-binary' if candidates[0] == 'psycopg2' else candidates[0]})")


def async_engine_url(engine: Any) -> sa.URL:
    """The URL of an SQLAlchemy ``AsyncEngine``, naming its driver's async mode: psycopg 3
    is one driver name for both modes (``postgresql+psycopg``), told apart by the engine."""
    url: sa.URL = engine.url
    if url.get_driver_name() == "psycopg":
        return url.set(drivername=f"{url.get_backend_name()}+psycopg_async")
    return url
