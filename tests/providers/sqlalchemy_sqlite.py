"""The SQLAlchemy store on a SQLite file, fresh per test (configured by URL)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from providers import _sqlalchemy

from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.sqlalchemy import SQLAlchemyStore

KIND = _sqlalchemy.KIND


def url(folder: str | Path) -> str:
    return f"sqlite:///{Path(folder) / 'sessions.sqlite3'}"


@contextmanager
def store(codec: ValueCodec) -> Iterator[SQLAlchemyStore]:
    with tempfile.TemporaryDirectory() as folder, _sqlalchemy.store(url(folder), codec) as made:
        yield made


@contextmanager
def flask_config(tmp_path: Path) -> Iterator[dict[str, Any]]:
    # The URL itself, so the shared suites also cover engines the store builds.
    yield {"SESSION_TYPE": KIND, "SESSION_SQLALCHEMY": url(tmp_path)}
