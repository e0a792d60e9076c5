"""The cachelib store over a FileSystemCache in a fresh directory per test."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cachelib import FileSystemCache

from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.cachelib import CachelibStore

KIND = "cachelib"


@contextmanager
def store(codec: ValueCodec) -> Iterator[CachelibStore]:
    with tempfile.TemporaryDirectory() as folder:
        made = CachelibStore(FileSystemCache(folder, threshold=0), codec=codec)
        made.check()
        yield made


@contextmanager
def flask_config(tmp_path: Path) -> Iterator[dict[str, Any]]:
    yield {"SESSION_TYPE": KIND,
           "SESSION_CACHELIB": FileSystemCache(str(tmp_path / "cachelib"), threshold=0)}
