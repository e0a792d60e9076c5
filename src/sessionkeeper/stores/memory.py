"""An in-process store: for tests and single-process development servers only."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

from .base import SessionRecord, SessionStore, SessionUpdate


class MemoryStore(SessionStore):
    """Keeps records in a dict guarded by a lock; lost when the process ends."""

    name = "memory"

    def __init__(self) -> None:
        self._records: dict[str, SessionRecord] = {}
        self._lock = threading.Lock()

    def load(self, key: str, now: float) -> SessionRecord | None:
        with self._lock:
            record = self._records.get(key)
            if record is None or record.expires_at <= now:
                return None
            return _copy(record)

    def create(self, key: str, record: SessionRecord) -> None:
        with self._lock:
            self._records[key] = replace(record, values=dict(record.values))

    def update(self, key: str, update: SessionUpdate) -> bool:
        with self._lock:
            record = self._records.get(key)
            if record is None:
                return False
            record.apply(update)
            return True

    def add(self, key: str, record: SessionRecord) -> bool:
        with self._lock:
            current = self._records.get(key)
            if current is not None and current.expires_at > record.accessed_at:
                return False
            self._records[key] = replace(record, values=dict(record.values))
            return True

    def touch(self, key: str, accessed_at: float, expires_at: float, *,
              version: Any = None) -> bool:
        with self._lock:
            record = self._records.get(key)
            if record is None or record.expires_at <= accessed_at:
                return False  # an expired record is as good as gone: never revived
            record.accessed_at = accessed_at
            record.expires_at = expires_at
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._records.pop(key, None)

    def delete_expired(self, now: float) -> int:
        with self._lock:
            dead = [k for k, r in self._records.items() if r.expires_at <= now]
            for key in dead:
                del self._records[key]
            return len(dead)

    def keys_for_user(self, user_id: str, now: float) -> list[str]:
        with self._lock:
            return [k for k, r in self._records.items()
                    if r.user_id == user_id and r.expires_at > now]


def _copy(record: SessionRecord) -> SessionRecord:
    """``replace(record, values=dict(record.values))``, spelled out: it runs on every
    request that reads, and ``replace`` walks the dataclass fields each time."""
    return SessionRecord(dict(record.values), record.created_at, record.accessed_at,
                         record.expires_at, record.permanent, record.user_id, record.version)
