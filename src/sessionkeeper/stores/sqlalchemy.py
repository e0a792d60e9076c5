"""Sessions in a SQL table through SQLAlchemy: PostgreSQL, MariaDB/MySQL, SQLite, ...

One row per session (``key`` is the store key, ``data`` the packed encoded values)::

    key          VARCHAR(255) PRIMARY KEY   -- "session:<sha256 hex>" (VARBINARY on MySQL)
    data         BLOB (BYTEA, LONGBLOB)     -- ValueCodec.pack of the encoded values
    created_at   DOUBLE                     -- epoch seconds
    accessed_at  DOUBLE
    expires_at   DOUBLE                     -- indexed: loads and cleanup filter on it
    permanent    BOOLEAN
    user_id      VARCHAR(255) NULL          -- indexed: the per-user index (VARBINARY on MySQL)
    version      INTEGER                    -- bumped by every data change

Every operation is one statement, except a save that lost a race. A delta save is
optimistic: the row is read (or the copy the request loaded, carried in the
record's ``version``, is reused), the delta merged in Python, and written back with
``UPDATE ... WHERE key = :k AND version = :v``. When another request changed the row in
between, no row matches and the save re-reads and retries, so concurrent requests of one
session never lose each other's keys; when the row is gone (a logout), the save reports
it and nothing is recreated.

Rows are read back strictly (stores/sql_rows.py: a row that no longer decodes raises
UndecodableRecord) and written only when they fit the database (stores/sql_limits.py).
On MariaDB/MySQL and PostgreSQL a read asks for the row packed into one result column,
which their drivers parse far faster than seven (stores/sql_packed.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mysql

from ..errors import ConfigurationError, StoreUnavailable, UndecodableRecord
from ..serialization import ValueCodec
from ..settings import Settings, seconds
from .base import SessionRecord, SessionStore, SessionUpdate
from .sql_async import (
    NativeStatements,
    async_engine_url,
    blocking_url,
    is_async_url,
    native_statements,
)
from .sql_direct import DirectStatement, direct_statement, idle_connections
from .sql_engine import (
    AUTOCOMMIT_ENGINES,
    DEFAULT_TIMEOUT,
    WATCHDOGS,
    engine_from_url,
    is_in_memory_sqlite,
)
from .sql_limits import (
    DataLimit,
    SQLRecordTooLarge,
    is_packet_too_large,
    mysql_limit,
    postgresql_limit,
    sqlite_length,
    sqlite_limit,
)
from .sql_packed import (
    BINARY_PACKING_DIALECTS,
    PACKING_DIALECTS,
    PROBE,
    binary_row,
    formats_exactly,
    packed_current,
    packed_row,
)
from .sql_rows import like_prefix, record_of_row, under_prefix, unpack_binary_row, unpack_row
from .sql_save import (
    SaveSteps,
    Seen,
    optimistic_save,
    pause,
    run_async,
    run_blocking,
)

__all__ = ["SQLAlchemyStore", "SQLRecordTooLarge", "engine_from_url", "session_table"]

F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger("sessionkeeper")


class _Disconnected(StoreUnavailable):
    """A pooled connection turned out dead (the server restarted since it was opened)."""


class _Deadlocked(StoreUnavailable):
    """The database broke a deadlock by rolling back our statement, which left no trace."""


#: MariaDB/MySQL's ER_LOCK_DEADLOCK
_MYSQL_DEADLOCK = 1213
#: PostgreSQL's deadlock_detected and serialization_failure
_RETRYABLE_SQLSTATES = ("40P01", "40001")
#: PostgreSQL's undefined_table
_UNDEFINED_TABLE = "42P01"
#: runs of a statement the database rolled back to break a deadlock, before giving up
MAX_DEADLOCK_ATTEMPTS = 20


def is_deadlock(error: BaseException) -> bool:
    """Whether a DBAPI error is the database rolling a statement back to break a deadlock."""
    # pymysql and mysqlclient: args[0]; MariaDB Connector/Python: errno;
    # psycopg2: pgcode; psycopg 3: sqlstate
    args = getattr(error, "args", ())
    if _MYSQL_DEADLOCK in (getattr(error, "errno", None), args[0] if args else None):
        return True
    state = getattr(error, "pgcode", None) or getattr(error, "sqlstate", None)
    return state in _RETRYABLE_SQLSTATES


#: A pooled connection the server closed fails at once, on its first statement. A
#: connection lost later than this was in use: the server stopped answering (a timeout)
#: or died mid-statement, which is no case for a retry.
STALE_CONNECTION_FAILS_WITHIN = 0.5


def _retry_on_disconnect(method: F) -> F:
    """Run ``method`` again, once, when its pooled connection was dead.

    SQLAlchemy then drops the whole pool, so the second try gets a fresh connection.
    This replaces ``pool_pre_ping``, which costs a round trip on every request, with one
    that is paid only after a database restart. A dead connection fails before the
    statement reaches the server, so the retry never applies a change twice; a connection
    lost after a wait (a timeout) is not retried (see ``_connection``).
    """

    @functools.wraps(method)
    def run(self: SQLAlchemyStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except _Disconnected:
            return method(self, *args, **kwargs)

    return cast(F, run)


def _retry_on_deadlock(method: F) -> F:
    """Run ``method`` again when the database rolled its statement back to break a
    deadlock (concurrent requests claiming or writing one key, on MariaDB/MySQL above
    all). Every operation here is one autocommitted statement, or an optimistic loop
    whose writes check the version they read, so a rolled-back one runs again safely.
    """

    @functools.wraps(method)
    def run(self: SQLAlchemyStore, *args: Any, **kwargs: Any) -> Any:
        for attempt in range(MAX_DEADLOCK_ATTEMPTS - 1):
            try:
                return method(self, *args, **kwargs)
            except _Deadlocked:
                _back_off(attempt)
        return method(self, *args, **kwargs)  # a last deadlock is StoreUnavailable

    return cast(F, run)


DEFAULT_TABLE = "sessions"  # Flask-Session's default
MAX_KEY_LENGTH = 255
MAX_USER_ID_LENGTH = 255
#: the operations an async driver runs on the event loop (stores/sql_async.py)
_NATIVE = {"load": "_load_async", "update": "_update_async", "touch": "_touch_async"}
_REQUIRED_COLUMNS = ("key", "data", "created_at", "accessed_at", "expires_at", "permanent",
                     "user_id", "version")
# MySQL's BLOB stops at 64 KB; LONGBLOB holds what max_allowed_packet lets through.
_DATA_TYPE = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


class ExactString(sa.types.TypeDecorator[str]):
    """A string compared byte for byte everywhere.

    MariaDB/MySQL compare VARCHARs case-blind and ignore trailing spaces, so "Alice " would
    find "alice"'s sessions; there the column is VARBINARY holding UTF-8.
    """

    impl = sa.String
    cache_ok = True

    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.length = length

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.VARBINARY(self.length))
        return dialect.type_descriptor(sa.String(self.length))

    def process_bind_param(self, value: str | None, dialect: sa.Dialect) -> Any:
        if value is not None and dialect.name in ("mysql", "mariadb"):
            return value.encode("utf-8")
        return value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> str | None:
        return value.decode("utf-8") if isinstance(value, bytes | bytearray) else value


_KEY_TYPE = ExactString(MAX_KEY_LENGTH)
_USER_TYPE = ExactString(MAX_USER_ID_LENGTH)


def index_name(table: str, column: str) -> str:
    """``ix_<table>_<column>``, shortened with a hash to fit every database's name limit."""
    name = f"ix_{table}_{column}"
    if len(name) <= 60:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"ix_{table[:40]}_{digest}_{column[:8]}"


def session_table(name: str, metadata: sa.MetaData, schema: str | None = None) -> sa.Table:
    """The sessions table, in ``metadata`` (so Alembic and ``create_all`` see it)."""
    return sa.Table(
        name, metadata,
        sa.Column("key", _KEY_TYPE, primary_key=True),
        sa.Column("data", _DATA_TYPE, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("accessed_at", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("permanent", sa.Boolean, nullable=False),
        sa.Column("user_id", _USER_TYPE, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Index(index_name(name, "expires_at"), "expires_at"),
        sa.Index(index_name(name, "user_id"), "user_id"),
        schema=schema,
    )


class _LoadedVersion(int):
    """The version of a row as a request loaded it (``SessionRecord.version``), carrying
    the row's values, so the request's save merges into them without reading the row
    again. It travels with the session, never in per-thread state: load and save may run
    on different threads. ``direct``: the load went straight to the driver, and so does
    the save (the engine was not watched a moment ago: not asked again)."""

    key: str
    values: dict[str, bytes]
    direct: bool

    def __new__(cls, version: int, key: str, values: dict[str, bytes],
                direct: bool = False) -> _LoadedVersion:
        loaded = super().__new__(cls, version)
        loaded.key, loaded.values, loaded.direct = key, values, direct
        return loaded


class SQLAlchemyStore(SessionStore):
    """Keeps sessions in one table of any database SQLAlchemy reaches."""

    name = "sqlalchemy"

    def __init__(
        self,
        engine: sa.Engine,
        *,
        table: str = DEFAULT_TABLE,
        schema: str | None = None,
        metadata: sa.MetaData | None = None,
        codec: ValueCodec | None = None,
        owns_engine: bool = False,
        key_prefix: str | None = None,
    ) -> None:
        """``key_prefix``: the app's SESSION_KEY_PREFIX; ``keys_for_user`` then lists only
        keys under it, so apps sharing the table never see each other's sessions (None:
        every key)."""
        self.engine = engine
        self.key_prefix = key_prefix
        self.codec = codec or ValueCodec()
        self.table = _table_in(metadata or sa.MetaData(), table, schema)
        self._owns_engine = owns_engine
        self._commits = engine not in AUTOCOMMIT_ENGINES
        #: one connection shared by every thread (in-memory SQLite): take turns on it
        self._turns: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if is_in_memory_sqlite(engine.url):
            self._turns = threading.RLock()
            _create_table_on_connect(engine, self.table)
        t = self.table
        live = (t.c.key == sa.bindparam("k"), t.c.expires_at > sa.bindparam("now"))
        # permanent as the database holds it (0/1 where it has no BOOLEAN), not turned
        # into a bool by Core, so both read paths check the same values (sql_rows.py).
        self._load_columns = sa.select(
            t.c.data, t.c.created_at, t.c.accessed_at, t.c.expires_at,
            sa.type_coerce(t.c.permanent, sa.types.NullType()), t.c.user_id, t.c.version,
        ).where(*live)
        #: the same read as one result column (stores/sql_packed.py), used once the
        #: server is known to format its times exactly (MariaDB/MySQL) or the table to
        #: take the binary packing (PostgreSQL)
        dialect = engine.dialect.name
        self._load_packed: sa.Select[Any] | None = None
        self._unpack = unpack_row
        if dialect in PACKING_DIALECTS:
            self._load_packed = sa.select(packed_row(t)).where(*live)
        elif dialect in BINARY_PACKING_DIALECTS:
            self._load_packed = sa.select(binary_row(t)).where(*live)
            self._unpack = unpack_binary_row
        self._packing_known = self._load_packed is None
        self._load = self._load_columns
        #: a save's read of the row (data and version; one column on MariaDB/MySQL)
        self._read_current = sa.select(
            *((packed_current(t),) if dialect in PACKING_DIALECTS
              else (t.c.data, t.c.version))).where(t.c.key == sa.bindparam("k"))
        # The optimistic save (with and without a new user_id) and the refresh; bind
        # names differ from the columns', which SQLAlchemy keeps for itself.
        saved = {"data": sa.bindparam("d"), "version": sa.bindparam("nv"),
                 "accessed_at": sa.bindparam("a"), "expires_at": sa.bindparam("e"),
                 "permanent": sa.bindparam("p")}
        versioned = sa.update(t).where(t.c.key == sa.bindparam("k"),
                                       t.c.version == sa.bindparam("v"))
        self._save_row = versioned.values(saved)
        self._save_row_and_user = versioned.values({**saved, "user_id": sa.bindparam("u")})
        self._refresh_row = sa.update(t).where(t.c.key == sa.bindparam("k")).values(
            accessed_at=sa.bindparam("a"), expires_at=sa.bindparam("e"))
        self._dialect = engine.dialect
        watchdog = WATCHDOGS.get(engine)
        #: the read every request makes, straight to the driver when it allows
        #: connections the direct statements keep between calls (own engines only)
        self._idle = idle_connections(engine)
        self._direct_load = direct_statement(engine, self._load, watchdog, self._idle)
        self._direct_load_packed = (
            None if self._load_packed is None
            else direct_statement(engine, self._load_packed, watchdog, self._idle))
        #: the writes of a save and a refresh, straight to the driver on our own
        #: autocommit engines (elsewhere Core commits, as the app's engine expects)
        self._direct_writer: _DirectRunner | None = None
        if self._direct_load is not None and not self._commits:
            self._direct_writer = _DirectRunner({
                statement: DirectStatement(engine, statement, watchdog, self._idle)
                for statement in (self._read_current, self._save_row,
                                  self._save_row_and_user, self._refresh_row)},
                self._dialect, self._check_refused)
        #: the most bytes of data a row takes (None: no known limit); for MariaDB/MySQL
        #: and SQLite asked once (at check(), or the first write), for PostgreSQL fixed
        self._limit: DataLimit | None = (postgresql_limit()
                                         if self._dialect.name == "postgresql" else None)
        self._limit_known = self._dialect.name not in ("mysql", "mariadb", "sqlite")
        #: the same statements on an async driver, for ASGI apps (use_async_driver)
        self._native: NativeStatements | None = None

    def use_async_driver(self, url: str | sa.URL, *, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """Serve the read, the save and the refresh of ASGI requests on ``url``'s async
        driver (``postgresql+asyncpg://``, ``postgresql+psycopg_async://``,
        ``mysql+aiomysql://``, ``mysql+asyncmy://``: the same database as the engine's),
        from the event loop; the rest stays on the engine. True when it will: the driver is one
        stores/sql_async.py speaks, and the engine is one whose statements go straight to
        its driver (stores/sql_direct.py)."""
        if self._direct_writer is None:
            return False
        pool = self.engine.pool
        size = (pool.size() + max(0, getattr(pool, "_max_overflow", 0))
                if isinstance(pool, sa.pool.QueuePool) else 10)
        self._native = native_statements(
            sa.make_url(url), (self._load_columns, self._read_current, self._save_row,
                               self._save_row_and_user, self._refresh_row,
                               *(() if self._load_packed is None else (self._load_packed,))),
            timeout=timeout, size=max(1, size))
        return self._native is not None

    def async_operation(self, method: str) -> Callable[..., Awaitable[Any]] | None:
        """The read, the save and the refresh on the async driver (use_async_driver),
        natively on an asyncio loop; None on trio, for a subclass that changed one of
        them, while the engine is watched (sql_direct.py), and for a save while the
        database's size limit is still to be asked."""
        if self._native is None or method not in _NATIVE or getattr(
                type(self), method) is not getattr(SQLAlchemyStore, method):
            return None
        if self._direct_runner() is None or (method == "update" and not self._limit_known) or (
                method == "load" and not self._packing_known):
            return None  # asked in a thread first
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # trio
            return None
        return getattr(self, _NATIVE[method])  # type: ignore[no-any-return]

    # -- connections ---------------------------------------------------------------
    @contextmanager
    def _connection(self) -> Iterator[sa.Connection]:
        with self._turns, self._translated_errors(), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        """SQLAlchemy's errors as the store reports them: StoreUnavailable when the
        database cannot answer (_Disconnected when a pooled connection was dead)."""
        started = time.monotonic()
        try:
            yield
        except sa_exc.SQLAlchemyError as exc:
            self._raise_translated(exc, started)

    def _raise_translated(self, exc: sa_exc.SQLAlchemyError, started: float) -> NoReturn:
        """Raise what :meth:`_translated_errors` makes of ``exc`` (the hot paths spell
        that context manager out: it costs as much as the rest of their Python)."""
        translated = self._store_error(exc, started)
        if translated is None:
            raise exc
        raise translated from exc

    def _store_error(self, exc: sa_exc.SQLAlchemyError,
                     started: float) -> StoreUnavailable | None:
        """What :meth:`_translated_errors` raises for ``exc`` (None: ``exc`` itself)."""
        if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
            if exc.connection_invalidated:
                return self._lost(exc, started)
            if is_deadlock(exc.orig or exc):
                return _Deadlocked(self.name, exc.orig or exc)
            # The driver's own message: the wrapped statement's parameters would put
            # session data into logs.
            return StoreUnavailable(self.name, exc.orig or exc)
        if isinstance(exc, sa_exc.TimeoutError):  # every pooled connection busy too long
            return StoreUnavailable(self.name, exc)
        if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
            return self._lost(exc, started)
        return None

    def _lost(self, exc: sa_exc.DBAPIError, started: float) -> StoreUnavailable:
        waited = time.monotonic() - started
        if waited < STALE_CONNECTION_FAILS_WITHIN:
            return _Disconnected(self.name, exc.orig or exc)
        # The statement may have run, and the request has waited long enough: no retry.
        return StoreUnavailable(self.name, f"connection lost after {waited:.1f} s "
                                           f"({exc.orig or exc})")

    def _commit(self, conn: sa.Connection) -> None:
        if self._commits:
            conn.commit()

    @property
    def reads_directly(self) -> bool:
        """Whether a session read now goes straight to the driver (stores/sql_direct.py):
        False for other drivers, and while the engine has execute listeners or echo."""
        return self._direct_read() is not None

    def _direct_read(self) -> DirectStatement | None:
        direct = self._direct_load
        return direct if direct is not None and not direct.watched() else None

    def _direct_runner(self) -> _DirectRunner | None:
        """The save's statements straight to the driver, when this engine allows now."""
        if self._direct_writer is None or self._direct_read() is None:
            return None
        return self._direct_writer

    # -- interface -------------------------------------------------------------------
    @_retry_on_disconnect
    def load(self, key: str, now: float) -> SessionRecord | None:
        if not self._packing_known:
            self._use_packing()
        with self._turns:
            started = time.monotonic()  # _translated_errors, spelled out
            try:
                direct = self._direct_read()
                if direct is not None:
                    row = direct.first(
                        {"k": _KEY_TYPE.process_bind_param(key, self._dialect), "now": now})
                else:
                    row = self._load_through_core(key, now)
            except sa_exc.SQLAlchemyError as exc:
                self._raise_translated(exc, started)
        return self._record_of(key, row, direct=direct is not None)

    def _record_of(self, key: str, row: Any, *, direct: bool = False) -> SessionRecord | None:
        if row is None:
            return None
        if len(row) == 1:  # the packed read (stores/sql_packed.py)
            row = self._unpack(self.name, row[0])
        data, created_at, accessed_at, expires_at, permanent, user_id, version = row
        try:
            # Plain DBAPI values on the direct path: the conversion Core would make.
            user_id = _USER_TYPE.process_result_value(user_id, self._dialect)
        except ValueError as exc:  # not UTF-8
            raise UndecodableRecord(self.name, f"user_id does not decode ({exc})") from exc
        record = record_of_row(self.name, self.codec, data, created_at, accessed_at,
                               expires_at, permanent, user_id, version)
        if record.version is not None:
            record.version = _LoadedVersion(record.version, key, record.values, direct)
        record.values = dict(record.values)  # the caller's copy; the version keeps the original
        return record

    def _use_packing(self) -> None:
        """Read through :attr:`_load_packed` from now on if the server formats doubles
        exactly, or the table takes the binary packing (asked once: at check(), or the
        first read; again while the table is missing)."""
        use = self._load_packed is not None and self._ask_packing()
        if use is None:
            return
        if use:
            self._load = self._load_packed
            self._direct_load = self._direct_load_packed
        self._packing_known = True

    @_retry_on_disconnect
    def _ask_packing(self) -> bool | None:
        """Whether the packed read works here (None: the table is missing, ask again)."""
        with self._connection() as conn:
            try:
                if self._dialect.name in PACKING_DIALECTS:
                    return formats_exactly(conn.execute(PROBE).scalar())
                conn.execute(self._load_packed, {"k": "", "now": 0.0}).first()
                return True
            except sa_exc.DBAPIError as exc:
                if exc.connection_invalidated:
                    raise
                # psycopg2: pgcode; psycopg 3: sqlstate
                state = getattr(exc.orig, "pgcode", None) or getattr(exc.orig, "sqlstate", None)
                if state == _UNDEFINED_TABLE:
                    return None
                # A server (or proxy) that does not take it, or a table of other column
                # types: seven columns.
                return False

    def _load_through_core(self, key: str, now: float) -> Any:
        with self.engine.connect() as conn:
            try:
                return conn.execute(self._load, {"k": key, "now": now}).first()
            except (ValueError, TypeError) as exc:  # a result processor met a damaged value
                raise UndecodableRecord(self.name, exc) from exc

    def create(self, key: str, record: SessionRecord) -> None:
        _check_key(key)
        _check_user_id(record.user_id)
        data = self._packed(record.values)
        try:
            self._insert(key, record, data)
        except _Disconnected:
            # IntegrityError here: the first insert landed before its connection was lost.
            with contextlib.suppress(sa_exc.IntegrityError):
                self._insert(key, record, data)

    @_retry_on_deadlock
    def add(self, key: str, record: SessionRecord) -> bool:
        """An INSERT, which the primary key lets only one request win; a row there that
        expired is removed first."""
        _check_key(key)
        _check_user_id(record.user_id)
        data = self._packed(record.values)
        try:
            return self._claim(key, record, data)
        except _Disconnected:
            # The first INSERT may have landed before its connection was lost: a row
            # holding exactly our data is our own.
            return self._claim(key, record, data) or self._holds(key, data)

    def _claim(self, key: str, record: SessionRecord, data: bytes) -> bool:
        with contextlib.suppress(sa_exc.IntegrityError):
            self._insert(key, record, data)
            return True
        t = self.table
        with self._connection() as conn:
            conn.execute(sa.delete(t).where(t.c.key == key,
                                            t.c.expires_at <= record.accessed_at))
            self._commit(conn)
        with contextlib.suppress(sa_exc.IntegrityError):
            self._insert(key, record, data)
            return True
        return False  # a live row holds the key

    def _holds(self, key: str, data: bytes) -> bool:
        t = self.table
        with self._connection() as conn:
            stored = conn.execute(sa.select(t.c.data).where(t.c.key == key)).scalar()
        return stored is not None and bytes(stored) == data

    def _insert(self, key: str, record: SessionRecord, data: bytes) -> None:
        with self._connection() as conn, self._sending(len(data)):
            conn.execute(sa.insert(self.table).values(
                key=key, data=data, created_at=record.created_at,
                accessed_at=record.accessed_at, expires_at=record.expires_at,
                permanent=record.permanent, user_id=record.user_id, version=1,
            ))
            self._commit(conn)

    # -- sizes ------------------------------------------------------------------------
    def _packed(self, values: dict[str, bytes]) -> bytes:
        """The data column of ``values``, checked to fit a row before it is sent."""
        data = self.codec.pack(values)
        limit = self._limit if self._limit_known else self._data_limit()
        if limit is not None and len(data) > limit.size:
            raise SQLRecordTooLarge(self.name, len(data), limit)
        return data

    def _data_limit(self) -> DataLimit | None:
        if not self._limit_known:
            self._limit = self._ask_limit()
            self._limit_known = True
        return self._limit

    @_retry_on_disconnect
    def _ask_limit(self) -> DataLimit | None:
        with self._connection() as conn:
            if self._dialect.name == "sqlite":
                return sqlite_limit(sqlite_length(conn.connection.dbapi_connection))
            try:
                packet = conn.execute(sa.text("SELECT @@max_allowed_packet")).scalar()
            except sa_exc.DBAPIError as exc:
                if exc.connection_invalidated:
                    raise
                return None  # a server (or proxy) that does not say: no check
            return mysql_limit(int(packet)) if packet else None

    @contextmanager
    def _sending(self, size: int) -> Iterator[None]:
        """Around a statement carrying ``size`` bytes of data: the server refusing it as
        too large (its limit was lowered since it was asked) is SQLRecordTooLarge."""
        try:
            yield
        except sa_exc.DBAPIError as exc:
            self._check_refused(exc, size)
            raise

    def _check_refused(self, exc: sa_exc.DBAPIError, size: int) -> None:
        """What :meth:`_sending` checks of a statement's error (spelled out where it
        costs: the direct save)."""
        if is_packet_too_large(exc.orig or exc):
            known = self._limit
            self._limit_known = False
            with contextlib.suppress(StoreUnavailable):
                known = self._data_limit() or known
            raise SQLRecordTooLarge(self.name, size, known or DataLimit(
                0, "the server's max_allowed_packet (it did not say how much)")) from exc

    @_retry_on_deadlock
    @_retry_on_disconnect
    def update(self, key: str, update: SessionUpdate) -> bool:
        if update.user_id_changed:
            _check_user_id(update.user_id)
        steps = self._save_steps(key, update)
        loaded = update.version
        # The way this request's read went a moment ago (asking again costs about
        # 13,000 instructions), else asked now.
        direct = (self._direct_writer if isinstance(loaded, _LoadedVersion) and loaded.direct
                  and loaded.key == key else self._direct_runner())
        if direct is not None:
            with self._turns:
                started = time.monotonic()  # _translated_errors, spelled out
                try:
                    return run_blocking(steps, direct)
                except sa_exc.SQLAlchemyError as exc:
                    self._raise_translated(exc, started)
        with self._connection() as conn:
            return run_blocking(steps, _CoreRunner(conn, self._commits, self._sending))

    def _save_steps(self, key: str, update: SessionUpdate) -> SaveSteps:
        """``update``'s optimistic save (stores/sql_save.py), merging into the row as the
        request loaded it when it did."""
        return optimistic_save(self, key, _seen_at_load(key, update.version), update)

    def _write_of(self, seen: Seen, update: SessionUpdate) -> tuple[Any, dict[str, Any]]:
        """The versioned UPDATE writing the merged row, and its parameters."""
        data = self._packed(update.apply_to(seen.values))
        params: dict[str, Any] = {
            "k": seen.key, "v": seen.version, "d": data, "nv": seen.version + 1,
            "a": update.accessed_at, "e": update.expires_at, "p": update.permanent,
        }
        statement = self._save_row
        if update.user_id_changed:
            statement, params["u"] = self._save_row_and_user, update.user_id
        return statement, params

    # -- on an async driver (stores/sql_async.py): the same steps, from the event loop --
    async def _load_async(self, key: str, now: float) -> SessionRecord | None:
        params = {"k": _KEY_TYPE.process_bind_param(key, self._dialect), "now": now}
        return self._record_of(key, await self._native_call(False, self._load, params))

    async def _update_async(self, key: str, update: SessionUpdate) -> bool:
        if update.user_id_changed:
            _check_user_id(update.user_id)
        return await run_async(self._save_steps(key, update), _NativeRunner(self))

    async def _touch_async(self, key: str, accessed_at: float, expires_at: float, *,
                           version: Any = None) -> bool:
        params = _for_driver({"k": key, "a": accessed_at, "e": expires_at}, self._dialect)
        return bool(await self._native_call(True, self._refresh_row, params))

    async def _native_call(self, counts: bool, statement: Any, params: dict[str, Any],
                           size: int = 0) -> Any:
        """The first row (or, ``counts``, the matched rows) of ``statement`` on the async
        driver, its errors as the blocking path reports them."""
        native = self._native
        assert native is not None
        run = native.rowcount if counts else native.first
        for attempt in range(MAX_DEADLOCK_ATTEMPTS):
            try:
                return await run(statement, params)
            except (TimeoutError, asyncio.TimeoutError) as exc:  # (two classes on 3.10)
                raise StoreUnavailable(
                    self.name, f"no answer within {native.timeout} s") from exc
            except Exception as exc:
                if is_deadlock(exc) and attempt < MAX_DEADLOCK_ATTEMPTS - 1:
                    await asyncio.sleep(pause(attempt))  # rolled back: run it again
                    continue
                if size and is_packet_too_large(exc):
                    self._limit_known = False  # asked again, in a thread, before the next save
                    raise SQLRecordTooLarge(self.name, size, self._limit or DataLimit(
                        0, "the server's max_allowed_packet (it did not say how much)")
                    ) from exc
                if isinstance(exc, native.unavailable):
                    raise StoreUnavailable(self.name, exc) from exc
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    @_retry_on_deadlock
    @_retry_on_disconnect
    def touch(self, key: str, accessed_at: float, expires_at: float, *,
              version: Any = None) -> bool:
        params = {"k": key, "a": accessed_at, "e": expires_at}
        direct = self._direct_runner()
        if direct is not None:
            with self._turns:
                started = time.monotonic()  # _translated_errors, spelled out
                try:
                    return bool(direct.rowcount(self._refresh_row, params))
                except sa_exc.SQLAlchemyError as exc:
                    self._raise_translated(exc, started)
        with self._connection() as conn:
            touched = conn.execute(self._refresh_row, params).rowcount
            self._commit(conn)
        return bool(touched)

    @_retry_on_deadlock
    @_retry_on_disconnect
    def delete(self, key: str) -> None:
        t = self.table
        with self._connection() as conn:
            conn.execute(sa.delete(t).where(t.c.key == key))
            self._commit(conn)

    @_retry_on_deadlock
    @_retry_on_disconnect
    def delete_expired(self, now: float) -> int:
        t = self.table
        with self._connection() as conn:
            removed = conn.execute(sa.delete(t).where(t.c.expires_at <= now)).rowcount
            self._commit(conn)
        return int(removed)

    @_retry_on_disconnect
    def keys_for_user(self, user_id: str, now: float) -> list[str]:
        t = self.table
        query = sa.select(t.c.key).where(t.c.user_id == user_id, t.c.expires_at > now)
        prefix = self.key_prefix
        if prefix is None:
            with self._connection() as conn:
                return [row.key for row in conn.execute(query)]
        # LIKE narrows it down in the database; the exact test (LIKE may ignore case,
        # and a longer prefix starting with this one matches too) is made here.
        query = query.where(t.c.key.like(like_prefix(prefix), escape="/"))
        with self._connection() as conn:
            return [row.key for row in conn.execute(query) if under_prefix(row.key, prefix)]

    def check(self) -> None:
        with self._connection() as conn:
            conn.execute(sa.select(sa.literal(1)))
        self.create_table()
        self._data_limit()  # now, not in the first request that writes
        if not self._packing_known:
            self._use_packing()  # and how to read: now, not in the first request

    def create_table(self) -> None:
        """Create the schema (where the database has them), table and indexes if missing.

        An existing table with another layout (Flask-Session's, say) is reported, never
        altered or dropped.
        """
        schema = self.table.schema
        with self._connection() as conn:
            for last_try in (False, True):
                try:
                    if (schema and conn.dialect.name != "sqlite"
                            and not sa.inspect(conn).has_schema(schema)):
                        conn.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
                    self.table.create(conn, checkfirst=True)
                    conn.commit()  # DDL: always, some databases run it in a transaction
                    break
                except sa_exc.DBAPIError:
                    # Workers starting together: another one created it between our look
                    # and our CREATE ("already exists"). Look again, once.
                    conn.rollback()
                    if last_try:
                        raise
            columns = {c["name"] for c in sa.inspect(conn).get_columns(self.table.name,
                                                                       schema=schema)}
        missing = [c for c in _REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise ConfigurationError(
                f"table {self.table.fullname!r} exists but is not a sessionkeeper sessions "
                f"table (no column {', '.join(missing)}; Flask-Session's table has "
                "id/session_id/data/expiry): set SESSION_SQLALCHEMY_TABLE to another name, "
                "then copy its sessions over with 'flask sessions migrate --from-table "
                f"{self.table.name}' (see docs/migrating.md)")

    def close(self) -> None:
        if self._idle is not None:
            self._idle.clear()
        if self._owns_engine:
            self.engine.dispose()


def _table_in(metadata: sa.MetaData, name: str, schema: str | None) -> sa.Table:
    """Our table in ``metadata``; reused when an earlier app registered the same one."""
    existing = metadata.tables.get(f"{schema}.{name}" if schema else name)
    if existing is None:
        return session_table(name, metadata, schema)
    if {c.name for c in existing.columns} != set(_REQUIRED_COLUMNS):
        raise ConfigurationError(
            f"the SQLAlchemy metadata already has a table {existing.fullname!r} of another "
            "layout (one of the app's models?): set SESSION_SQLALCHEMY_TABLE to another name")
    return existing


Sending = Callable[[int], contextlib.AbstractContextManager[None]]


class _CoreRunner:
    """The save's statements through Core on a Connection (sql_save.BlockingRunner)."""

    def __init__(self, conn: sa.Connection, commits: bool, sending: Sending) -> None:
        self._conn, self._commits, self._sending = conn, commits, sending

    def first(self, statement: Any, params: dict[str, Any]) -> Any:
        return self._conn.execute(statement, params).first()

    def write(self, statement: Any, params: dict[str, Any], size: int) -> int:
        with self._sending(size):
            return int(self._conn.execute(statement, params).rowcount)

    def commit(self) -> None:
        if self._commits:
            self._conn.commit()

    def rollback(self) -> None:
        self._conn.rollback()


class _DirectRunner:
    """The save's and the refresh's statements straight to the driver
    (sql_save.BlockingRunner). Every statement commits by itself (the engine is in
    autocommit): nothing to end."""

    def __init__(self, statements: dict[Any, DirectStatement], dialect: sa.Dialect,
                 check_refused: Callable[[sa_exc.DBAPIError, int], None]) -> None:
        self._statements, self._dialect = statements, dialect
        self._check_refused = check_refused

    def first(self, statement: Any, params: dict[str, Any]) -> Any:
        return self._statements[statement].first(_for_driver(params, self._dialect))

    def rowcount(self, statement: Any, params: dict[str, Any]) -> int:
        return self._statements[statement].rowcount(_for_driver(params, self._dialect))

    def write(self, statement: Any, params: dict[str, Any], size: int) -> int:
        try:  # SQLAlchemyStore._sending, spelled out
            return self.rowcount(statement, params)
        except sa_exc.DBAPIError as exc:
            self._check_refused(exc, size)
            raise

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass


class _NativeRunner:
    """The save's statements on the async driver (sql_save.AsyncRunner)."""

    def __init__(self, store: SQLAlchemyStore) -> None:
        self._store = store

    async def first(self, statement: Any, params: dict[str, Any]) -> Any:
        store = self._store
        return await store._native_call(False, statement, _for_driver(params, store._dialect))

    async def write(self, statement: Any, params: dict[str, Any], size: int) -> int:
        store = self._store
        return int(await store._native_call(
            True, statement, _for_driver(params, store._dialect), size))


def _for_driver(params: dict[str, Any], dialect: sa.Dialect) -> dict[str, Any]:
    """The conversions Core's bind processors would make: keys and user ids are UTF-8
    bytes on MariaDB/MySQL (ExactString)."""
    converted = dict(params)
    converted["k"] = _KEY_TYPE.process_bind_param(params["k"], dialect)
    if "u" in params:
        converted["u"] = _USER_TYPE.process_bind_param(params["u"], dialect)
    return converted


def _seen_at_load(key: str, version: Any) -> Seen | None:
    """The row as the saving request loaded it, if it did (None: read it now)."""
    if isinstance(version, _LoadedVersion) and version.key == key:
        return Seen(key, int(version), version.values)
    return None


def _create_table_on_connect(engine: sa.Engine, table: sa.Table) -> None:
    """Create the table in every new connection of an in-memory database: a forked
    worker (gunicorn --preload) starts on a fresh, empty one."""
    ddl = [str(sa.schema.CreateTable(table, if_not_exists=True).compile(dialect=engine.dialect))]
    ddl += [str(sa.schema.CreateIndex(index, if_not_exists=True).compile(dialect=engine.dialect))
            for index in table.indexes]

    @sa.event.listens_for(engine, "connect")
    def create(dbapi_connection: Any, record: Any) -> None:
        for statement in ddl:
            dbapi_connection.execute(statement)


# Limits in UTF-8 bytes: what fits the VARBINARY columns of MariaDB/MySQL fits everywhere.
def _check_key(key: str) -> None:
    if len(key.encode("utf-8")) > MAX_KEY_LENGTH:
        raise ConfigurationError(
            f"store keys are at most {MAX_KEY_LENGTH} bytes in the sessions table; "
            "shorten SESSION_KEY_PREFIX")


def _check_user_id(user_id: str | None) -> None:
    if user_id is not None and len(user_id.encode("utf-8")) > MAX_USER_ID_LENGTH:
        raise ValueError(f"user ids are at most {MAX_USER_ID_LENGTH} bytes (UTF-8) in the "
                         f"sessions table, not {len(user_id.encode('utf-8'))}")


def _back_off(attempt: int) -> None:
    time.sleep(pause(attempt))


# -- building from configuration ---------------------------------------------------------


def _flask_sqlalchemy_engine(db: Any, bind_key: str | None) -> tuple[sa.Engine, sa.MetaData]:
    """The engine and metadata of a Flask-SQLAlchemy ``db`` for the current app."""
    from flask import has_app_context

    if not has_app_context():
        raise ConfigurationError(
            "SESSION_SQLALCHEMY is a Flask-SQLAlchemy object, whose engines belong to an "
            "app: build the session store inside app.app_context() (Session(app) does)")
    try:
        engines: Mapping[str | None, sa.Engine] = db.engines
    except RuntimeError as exc:
        raise ConfigurationError(
            f"SESSION_SQLALCHEMY's Flask-SQLAlchemy object is not set up for this app ({exc}): "
            "call db.init_app(app) before Session(app)") from exc
    if bind_key not in engines:
        known = ", ".join(repr(k) for k in engines if k is not None) or "none"
        raise ConfigurationError(
            f"SESSION_SQLALCHEMY_BIND_KEY={bind_key!r} is not in SQLALCHEMY_BINDS "
            f"(configured bind keys: {known})")
    metadata = db.metadatas.get(bind_key)
    if metadata is None:
        metadata = sa.MetaData(info={"bind_key": bind_key})
    return engines[bind_key], metadata


def _is_flask_sqlalchemy(value: object) -> bool:
    try:
        from flask_sqlalchemy import SQLAlchemy
    except ImportError:
        return False
    return isinstance(value, SQLAlchemy)


def _fallback_url(config: Mapping[str, Any], bind_key: str | None) -> Any:
    # Flask-Session, given no SESSION_SQLALCHEMY, connects to the app's Flask-SQLAlchemy
    # database: SQLALCHEMY_DATABASE_URI, or the SQLALCHEMY_BINDS entry of the bind key.
    if bind_key is None:
        return config.get("SQLALCHEMY_DATABASE_URI")
    bound = (config.get("SQLALCHEMY_BINDS") or {}).get(bind_key)
    return bound.get("url") if isinstance(bound, Mapping) else bound


def _sqlite_in_instance_folder(url: str | sa.URL, instance_path: str) -> str | sa.URL:
    """A relative SQLite path taken inside the instance folder, as Flask-SQLAlchemy does.

    So ``sqlite:///app.db`` names the same file here as in SQLALCHEMY_DATABASE_URI.
    """
    try:
        parsed = sa.make_url(url)
    except sa_exc.ArgumentError:
        return url  # engine_from_url says what is wrong with it
    path = parsed.database
    if (parsed.get_backend_name() != "sqlite" or not path or path == ":memory:"
            or path.startswith("file:") or os.path.isabs(path)):
        return url
    os.makedirs(instance_path, exist_ok=True)
    return parsed.set(database=os.path.join(instance_path, path))


def _optional_name(config: Mapping[str, Any], name: str) -> str | None:
    value = config.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{name} must be a non-empty name, not {value!r}")
    return value


def store_from_settings(settings: Settings, codec: ValueCodec) -> SQLAlchemyStore:
    """The store ``SESSION_SQLALCHEMY*`` describes (not yet checked)."""
    config = settings.config
    table = _optional_name(config, "SESSION_SQLALCHEMY_TABLE") or DEFAULT_TABLE
    schema = _optional_name(config, "SESSION_SQLALCHEMY_SCHEMA")
    bind_key = _optional_name(config, "SESSION_SQLALCHEMY_BIND_KEY")
    timeout = seconds(config.get("SESSION_SQLALCHEMY_TIMEOUT", DEFAULT_TIMEOUT),
                      "SESSION_SQLALCHEMY_TIMEOUT")
    _check_key(settings.key_prefix + "0" * 64)
    source = config.get("SESSION_SQLALCHEMY")
    if source is None:
        source = _fallback_url(config, bind_key)
        if source is None:
            raise ConfigurationError(
                "SESSION_TYPE='sqlalchemy' needs SESSION_SQLALCHEMY: a Flask-SQLAlchemy "
                "object, a SQLAlchemy Engine or a database URL (or set "
                "SQLALCHEMY_DATABASE_URI)")
    elif bind_key is not None and not _is_flask_sqlalchemy(source):
        raise ConfigurationError(
            "SESSION_SQLALCHEMY_BIND_KEY picks one engine of a Flask-SQLAlchemy object; "
            "with an Engine or a URL in SESSION_SQLALCHEMY, leave it unset")
    if type(source).__module__.startswith("sqlalchemy.ext.asyncio"):
        source = async_engine_url(source)  # an AsyncEngine: its database, as its URL says
    native = _async_url(source)
    if native is not None:
        # The hot calls of ASGI apps on the async driver, the rest on a blocking twin.
        url = _sqlite_in_instance_folder(blocking_url(native), settings.instance_path)
        store = SQLAlchemyStore(engine_from_url(url, timeout=timeout), table=table,
                                schema=schema, codec=codec, owns_engine=True,
                                key_prefix=settings.key_prefix)
        store.use_async_driver(native, timeout=timeout)
        return store
    if isinstance(source, str | sa.URL):
        url = _sqlite_in_instance_folder(source, settings.instance_path)
        return SQLAlchemyStore(engine_from_url(url, timeout=timeout), table=table,
                               schema=schema, codec=codec, owns_engine=True,
                               key_prefix=settings.key_prefix)
    if isinstance(source, sa.Engine):
        return SQLAlchemyStore(source, table=table, schema=schema, codec=codec,
                               key_prefix=settings.key_prefix)
    if _is_flask_sqlalchemy(source):
        engine, metadata = _flask_sqlalchemy_engine(source, bind_key)
        return SQLAlchemyStore(engine, table=table, schema=schema, metadata=metadata,
                               codec=codec, key_prefix=settings.key_prefix)
    raise ConfigurationError(
        f"SESSION_SQLALCHEMY must be a Flask-SQLAlchemy object (db = SQLAlchemy(app)), a "
        f"SQLAlchemy Engine or a database URL string, not {type(source).__name__}")


def _async_url(source: Any) -> sa.URL | None:
    """``source`` as a URL when it names an async driver (``postgresql+asyncpg://``)."""
    if not isinstance(source, str | sa.URL):
        return None
    try:
        url = sa.make_url(source)
    except sa_exc.ArgumentError:
        return None  # engine_from_url says what is wrong with it
    return url if is_async_url(url) else None
