"""The SQLAlchemy store on the machine's PostgreSQL, in a fresh table per test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from providers import _sqlalchemy

from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.sqlalchemy import SQLAlchemyStore

KIND = _sqlalchemy.KIND
URLS = ("postgresql+psycopg2://postgres@127.0.0.1:5432/test",
        "postgresql+psycopg2://root@127.0.0.1:5432/test")


def url() -> str:
    return _sqlalchemy.server_url(URLS, "PostgreSQL at 127.0.0.1:5432, database 'test'")


@contextmanager
def store(codec: ValueCodec) -> Iterator[SQLAlchemyStore]:
    with _sqlalchemy.store(url(), codec) as made:
        yield made


@contextmanager
def flask_config(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with _sqlalchemy.flask_config(url()) as config:
        yield config
