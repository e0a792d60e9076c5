"""The embedded SQLite store (the default), in a fresh file per test."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.sqlite import SQLiteStore

KIND = "sqlite"


@contextmanager
def store(codec: ValueCodec) -> Iterator[SQLiteStore]:
    with tempfile.TemporaryDirectory() as folder:
        made = SQLiteStore(Path(folder) / "sessions.sqlite3", codec=codec)
        made.check()
        try:
            yield made
        finally:
            made.close()


@contextmanager
def flask_config(tmp_path: Path) -> Iterator[dict[str, Any]]:
    yield {"SESSION_TYPE": KIND, "SESSION_SQLITE_PATH": str(tmp_path / "sessions.sqlite3")}
