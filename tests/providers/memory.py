"""The in-process memory store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.memory import MemoryStore

KIND = "memory"


@contextmanager
def store(codec: ValueCodec) -> Iterator[MemoryStore]:
    yield MemoryStore()


@contextmanager
def flask_config(tmp_path: Path) -> Iterator[dict[str, Any]]:
    yield {"SESSION_TYPE": KIND}
