"""Both SQLite-backed stores when several workers open a brand-new database file at once.

The first connection to a new file switches it to WAL mode, which needs an exclusive lock
that SQLite refuses at once (no busy wait) to connections racing for it. A worker that
lost that race used to fail its start-up check, and gunicorn then stops the whole server.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from together import check_all_at_once

from sessionkeeper.stores.base import SessionStore
from sessionkeeper.stores.sqlalchemy import SQLAlchemyStore, engine_from_url
from sessionkeeper.stores.sqlite import SQLiteStore

WORKERS = 4
ROUNDS = 40  # each round a new file: the race is only on the first switch to WAL


def embedded(path: Path) -> SessionStore:
    return SQLiteStore(path)


def sqlalchemy_on_sqlite(path: Path) -> SessionStore:
    return SQLAlchemyStore(engine_from_url(f"sqlite:///{path}"), table="sessions",
                           owns_engine=True)


@pytest.mark.parametrize("make_store", [embedded, sqlalchemy_on_sqlite])
def test_workers_opening_a_new_database_together_all_start(
        tmp_path: Path, make_store: Callable[[Path], SessionStore]) -> None:
    failures: list[BaseException] = []
    for round_number in range(ROUNDS):
        path = tmp_path / f"round-{round_number}.sqlite3"
        failures += check_all_at_once([make_store(path) for _ in range(WORKERS)])
        with closing(sqlite3.connect(path)) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert failures == []

