"""The embedded default store: one SQLite file, no server.

WAL mode lets readers run beside a writer; one connection per thread and process
(re-opened after a fork) keeps it safe under threaded and multi-process servers. A
delta save is a read-merge-write inside ``BEGIN IMMEDIATE``, which SQLite serialises
across processes, so concurrent requests of one session never lose each other's keys.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from ..errors import StoreUnavailable
from ..serialization import ValueCodec
from .base import SessionRecord, SessionStore, SessionUpdate
from .sqlite_wal import use_wal

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
    ) -> None:
        if not table.isidentifier():
            raise ValueError(f"SQLite table name must be an identifier, not {table!r}")
        self.path = Path(path)
        self.table = table
        self.codec = codec or ValueCodec()
        self.timeout = timeout
        self.cleanup_interval = cleanup_interval
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
        # Compare-and-swap on the row as this thread read it: one statement per save.
        self._sql_update_if_same = (f"UPDATE {t} SET data = ?, accessed_at = ?, "
                                    f"expires_at = ?, permanent = ?, user_id = ? "
                                    f"WHERE key = ? AND data = ? AND user_id IS ?")
        self._sql_touch = f"UPDATE {t} SET accessed_at = ?, expires_at = ? WHERE key = ?"
        self._sql_delete = f"DELETE FROM {t} WHERE key = ?"
        self._sql_expired = f"DELETE FROM {t} WHERE expires_at <= ?"
        self._sql_user = f"SELECT key FROM {t} WHERE user_id = ? AND expires_at > ?"

    # -- connections ---------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None and local.pid == os.getpid():
            return conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: single statements commit alone; writes take BEGIN IMMEDIATE.
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            use_wal(conn, self.timeout)
            conn.execute("PRAGMA synchronous=NORMAL")
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
        row = self._run(self._sql_load, (key, now)).fetchone()
        if row is None:
            return None
        data, created_at, accessed_at, expires_at, permanent, user_id = row
        try:
            values = self.codec.unpack(data)
        except ValueError:
            return None  # a damaged or foreign (e.g. pickled) row is no session, never a crash
        self._local.seen = (key, data, user_id)
        return SessionRecord(values, created_at, accessed_at, expires_at, bool(permanent),
                             user_id)

    def create(self, key: str, record: SessionRecord) -> None:
        self._run(self._sql_insert, (
            key, self.codec.pack(record.values), record.created_at, record.accessed_at,
            record.expires_at, int(record.permanent), record.user_id,
        ))
        self._maybe_cleanup(record.accessed_at)

    def update(self, key: str, update: SessionUpdate) -> bool:
        seen = getattr(self._local, "seen", None)
        self._local.seen = None
        if seen is not None and seen[0] == key:
            # Usually the row is still as this request read it: merge into that and
            # write only if nothing changed meanwhile (no lock, one statement).
            _key, data, user_id = seen
            values = update.apply_to(self.codec.unpack(data))
            new_user = update.user_id if update.user_id_changed else user_id
            written = self._run(self._sql_update_if_same, (
                self.codec.pack(values), update.accessed_at, update.expires_at,
                int(update.permanent), new_user, key, data, user_id,
            )).rowcount
            if written:
                return True
        return self._update_locked(key, update)

    def _update_locked(self, key: str, update: SessionUpdate) -> bool:
        """Read, merge and write under SQLite's write lock (the row changed since it was
        read, or was not read by this thread)."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(self._sql_data, (key,)).fetchone()
            if row is not None:
                values = update.apply_to(self.codec.unpack(row[0]))
                user_id = update.user_id if update.user_id_changed else row[1]
                conn.execute(self._sql_update, (
                    self.codec.pack(values), update.accessed_at, update.expires_at,
                    int(update.permanent), user_id, key,
                ))
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreUnavailable(f"sqlite at {self.path}", exc) from exc
            raise
        return row is not None

    def touch(self, key: str, accessed_at: float, expires_at: float) -> None:
        self._run(self._sql_touch, (accessed_at, expires_at, key))

    def delete(self, key: str) -> None:
        self._run(self._sql_delete, (key,))

    def delete_expired(self, now: float) -> int:
        return self._run(self._sql_expired, (now,)).rowcount

    def keys_for_user(self, user_id: str, now: float) -> list[str]:
        return [row[0] for row in self._run(self._sql_user, (user_id, now)).fetchall()]

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
