"""SQLite files for the SQL stores: created private, and switched to WAL mode safely
when several processes open a new one at once."""

from __future__ import annotations

import os
import random
import sqlite3
import time
from typing import Any

#: session data is for the app's user only; SQLite gives -wal and -shm this mode too
PRIVATE_MODE = 0o600


def create_private(path: str | os.PathLike[str]) -> None:
    """Create the database file readable and writable by its owner only, unless it
    exists. SQLite would create it 0644 (less the umask): readable by every local user.
    An existing file keeps the mode it has."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    except FileExistsError:
        return
    os.close(fd)  # an empty file is an empty database to SQLite


def use_wal(connection: Any, timeout: float) -> None:
    """Put the database behind a DB-API ``sqlite3`` connection into WAL mode.

    The first switch to WAL needs an exclusive lock, and SQLite answers "database is
    locked" at once, without waiting for the busy timeout, to connections that race for it
    (gunicorn workers starting together). They try again until ``timeout`` has passed.

    Commits then sync as WAL is meant to be run (``synchronous=NORMAL``): a commit
    survives the app crashing, and only the last ones can be lost if the machine loses
    power, for one fsync per checkpoint instead of one per request (twice the writes
    per second). Both SQL stores open their files this way.
    """
    deadline = time.monotonic() + timeout
    while True:
        cursor = connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        finally:
            cursor.close()
        time.sleep(random.uniform(0.001, 0.02))  # random: racers do not retry in step
