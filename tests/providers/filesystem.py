"""The filesystem store, in a fresh directory per test."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.filesystem import FileSystemStore

KIND = "filesystem"


@contextmanager
def store(codec: ValueCodec) -> Iterator[FileSystemStore]:
    with tempfile.TemporaryDirectory() as folder:
        made = FileSystemStore(folder, codec=codec)
        made.check()
        yield made


@contextmanager
def flask_config(tmp_path: Path) -> Iterator[dict[str, Any]]:
    yield {"SESSION_TYPE": KIND, "SESSION_FILE_DIR": str(tmp_path / "sessions")}
