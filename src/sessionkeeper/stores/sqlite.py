"""The embedded default store: one SQLite file, no server.

WAL mode lets readers run beside a writer; one connection per thread and process
(re-opened after a fork) keeps it safe under threaded and multi-process servers. A
delta save is one compare-and-swap ``UPDATE`` against the row as the request read it
(the loaded record's ``version``, so load and save may run on different threads); when
the row changed meanwhile, a read-merge-write inside ``BEGIN IMMEDIATE``, which SQLite
serialises across processes, so concurrent requests of one session never lose each
other's keys.

The database file is created readable by its owner only (0600); SQLite gives its
``-wal`` and ``-shm`` files the database file's mode.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import StoreUnavailable
from ..serialization import ValueCodec
from .base import SessionRecord, SessionStore, SessionUpdate
from .sql_limits import STATEMENT_ROOM, SQLRecordTooLarge, sqlite_length, sqlite_limit
from .sql_rows import DIGEST_LENGTH, record_of_row, unpack_values
from .sqlite_wal import create_private, use_wal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {t} (
    key TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    created_at REAL NOT NULL,
    accessed_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    permanent INTEGER NOT NULL,
    user_id TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS {t}_expires ON {t} (expires_at);
CREATE INDEX IF NOT EXISTS {t}_user ON {t} (user_id) WHERE user_id IS NOT NULL;
"""


class SQLiteStore(SessionStore):
    name = "sqlite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        table: str = "sessions",
        codec: ValueCodec | None = None,
        timeout: float = 5.0,
        cleanup_interval: float = 300.0,
        key_prefix: str | None = None,
    ) -> None:
        """``key_prefix``: the app's SESSION_KEY_PREFIX; ``keys_for_user`` then lists only
        keys under it, so apps sharing the file never see each other's sessions (None:
        every key)."""
        if not table.isidentifier():
            raise ValueError(f"SQLite table name must be an identifier, not {table!r}")
        self.path = Path(path)
        self.table = table
        self.codec = codec or ValueCodec()
        self.timeout = timeout
        self.cleanup_interval = cleanup_interval
        #: this thread's connection (a cache only: nothing of a request is kept here)
        self._local = threading.local()
        self._next_cleanup = 0.0
        t = table
        self._sql_load = (f"SELECT data, created_at, accessed_at, expires_at, permanent, user_id "
                          f"FROM {t} WHERE key = ? AND expires_at > ?")
        self._sql_insert = (f"INSERT OR REPLACE INTO {t} (key, data, created_at, accessed_at, "
                            f"expires_at, permanent, user_id) VALUES (?, ?, ?, ?, ?, ?, ?)")
        self._sql_data = f"SELECT data, user_id FROM {t} WHERE key = ?"
        self._sql_update = (f"UPDATE {t} SET data = ?, accessed_at = ?, expires_at = ?, "
                            f"permanent = ?, user_id = ? WHERE key = ?")
        # Compare-and-swap on the row as the request read it: one statement per save.
        self._sql_update_if_same = (f"UPDATE {t} SET data = ?, accessed_at = ?, "
                                    f"expires_at = ?, permanent = ?, user_id = ? "
                                    f"WHERE key = ? AND data = ? AND user_id IS ?")
        # The same when the user id stays: SQLite maintains an index for every UPDATE
        # whose SET names one of its columns, even to the value it has, so leaving
        # user_id out spares the per-user index (about 4,000 instructions a save).
        self._sql_update_values = (f"UPDATE {t} SET data = ?, accessed_at = ?, "
                                   f"expires_at = ?, permanent = ? WHERE key = ?")
        self._sql_update_values_if_same = (f"UPDATE {t} SET data = ?, accessed_at = ?, "
                                           f"expires_at = ?, permanent = ? "
                                           f"WHERE key = ? AND data = ? AND user_id IS ?")
        self._sql_touch = f"UPDATE {t} SET accessed_at = ?, expires_at = ? WHERE key = ?"
        self._sql_delete = f"DELETE FROM {t} WHERE key = ?"
        self._sql_expired = f"DELETE FROM {t} WHERE expires_at <= ?"
        self._sql_user = f"SELECT key FROM {t} WHERE user_id = ? AND expires_at > ?"
        self._user_scope: tuple[object, ...] = ()
        if key_prefix is not None:
            # substr and length compare exactly (LIKE ignores case and needs escaping).
            self._sql_user += " AND substr(key, 1, ?) = ? AND length(key) = ?"
            self._user_scope = (len(key_prefix), key_prefix, len(key_prefix) + DIGEST_LENGTH)
        # Claims the key unless a live row holds it; an expired row there is replaced.
        self._sql_add = (f"INSERT INTO {t} (key, data, created_at, accessed_at, expires_at, "
                         f"permanent, user_id) VALUES (?, ?, ?, ?, ?, ?, ?) "
                         f"ON CONFLICT (key) DO UPDATE SET data = excluded.data, "
                         f"created_at = excluded.created_at, "
                         f"accessed_at = excluded.accessed_at, "
                         f"expires_at = excluded.expires_at, permanent = excluded.permanent, "
                         f"user_id = excluded.user_id "
                         f"WHERE {t}.expires_at <= excluded.accessed_at")

    # -- connections ---------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None and local.pid == os.getpid():
            return conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            create_private(self.path)
            # Autocommit mode: single statements commit alone; writes take BEGIN IMMEDIATE.
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            use_wal(conn, self.timeout)
            conn.executescript(_SCHEMA.format(t=self.table))
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"sqlite at {self.path}", exc) from exc
        local.conn, local.pid = conn, os.getpid()
        return conn

    def _run(self, sql: str, params: tuple[object, ...]) -> sqlite3.Cursor:
        try:
            return self._connection().execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite at {self.path}", exc) from exc

    # -- interface -------------------------------------------------------------------
    def load(self, key: str, now: float) -> SessionRecord | None:
        """Raises UndecodableRecord for a row that no longer decodes (another
        SESSION_SERIALIZATION_FORMAT, damage): the core replaces it, never a 500."""
        row = self._run(self._sql_load, (key, now)).fetchone()
        if row is None:
            return None
        record = record_of_row(self.name, self.codec, *row)
        # The row as read, for this request's compare-and-swap save (see update), with
        # its values as unpacked here (a copy: the session changes record.values), so
        # the save merges into them without unpacking the data again.
        record.version = (key, row[0], record.user_id, dict(record.values))
        return record

    def create(self, key: str, record: SessionRecord) -> None:
        self._run(self._sql_insert, self._row(key, record))
        self._maybe_cleanup(record.accessed_at)

    def add(self, key: str, record: SessionRecord) -> bool:
        claimed = self._run(self._sql_add, self._row(key, record)).rowcount == 1
        self._maybe_cleanup(record.accessed_at)
        return claimed

    def _row(self, key: str, record: SessionRecord) -> tuple[object, ...]:
        return (key, self._packed(record.values, self._connection()), record.created_at,
                record.accessed_at, record.expires_at, int(record.permanent), record.user_id)

    def _packed(self, values: dict[str, bytes], conn: sqlite3.Connection) -> bytes:
        """The data column of ``values``, checked to fit a row of ``conn`` (this
        thread's connection) before it is sent."""
        data = self.codec.pack(values)
        length = sqlite_length(conn)
        if len(data) > length - STATEMENT_ROOM:
            raise SQLRecordTooLarge(self.name, len(data), sqlite_limit(length))
        return data

    def update(self, key: str, update: SessionUpdate) -> bool:
        seen = update.version
        if isinstance(seen, tuple) and len(seen) == 4 and seen[0] == key:
            # Usually the row is still as this request read it: merge into that and
            # write only if nothing changed meanwhile (no lock, one statement).
            _key, data, user_id, seen_values = seen
            conn = self._connection()
            packed = self._packed(update.apply_to(seen_values), conn)
            try:
                if update.user_id_changed and update.user_id != user_id:
                    written = conn.execute(self._sql_update_if_same, (
                        packed, update.accessed_at, update.expires_at,
                        int(update.permanent), update.user_id, key, data, user_id,
                    )).rowcount
                else:
                    written = conn.execute(self._sql_update_values_if_same, (
                        packed, update.accessed_at, update.expires_at,
                        int(update.permanent), key, data, user_id,
                    )).rowcount
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"sqlite at {self.path}", exc) from exc
            if written:
                return True
        return self._update_locked(key, update)

    def _update_locked(self, key: str, update: SessionUpdate) -> bool:
        """Read, merge and write under SQLite's write lock (the row changed since it was
        read, or this request did not read it)."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(self._sql_data, (key,)).fetchone()
            if row is not None:
                values = update.apply_to(unpack_values(self.name, self.codec, row[0]))
                packed = self._packed(values, conn)
                if update.user_id_changed and update.user_id != row[1]:
                    conn.execute(self._sql_update, (
                        packed, update.accessed_at, update.expires_at,
                        int(update.permanent), update.user_id, key,
                    ))
                else:
                    conn.execute(self._sql_update_values, (
                        packed, update.accessed_at, update.expires_at,
                        int(update.permanent), key,
                    ))
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreUnavailable(f"sqlite at {self.path}", exc) from exc
            raise
        return row is not None

    def touch(self, key: str, accessed_at: float, expires_at: float, *,
              version: Any = None) -> bool:
        return self._run(self._sql_touch, (accessed_at, expires_at, key)).rowcount > 0

    def delete(self, key: str) -> None:
        self._run(self._sql_delete, (key,))

    def delete_expired(self, now: float) -> int:
        return self._run(self._sql_expired, (now,)).rowcount

    def keys_for_user(self, user_id: str, now: float) -> list[str]:
        params = (user_id, now, *self._user_scope)
        return [row[0] for row in self._run(self._sql_user, params).fetchall()]

    def check(self) -> None:
        self._run("SELECT 1", ())

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _maybe_cleanup(self, now: float) -> None:
        # Expired rows go away as new sessions come in, at most once per interval.
        if now >= self._next_cleanup:
            self._next_cleanup = now + self.cleanup_interval
            self.delete_expired(time.time())
