"""Switching a SQLite database to WAL mode safely when several processes open it at once."""

from __future__ import annotations

import random
import sqlite3
import time
from typing import Any


def use_wal(connection: Any, timeout: float) -> None:
    """Put the database behind a DB-API ``sqlite3`` connection into WAL mode.

    The first switch to WAL needs an exclusive lock, and SQLite answers "database is
    locked" at once, without waiting for the busy timeout, to connections that race for it
    (gunicorn workers starting together). They try again until ``timeout`` has passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        cursor = connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        finally:
            cursor.close()
        time.sleep(random.uniform(0.001, 0.02))  # random: racers do not retry in step
