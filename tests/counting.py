"""A store wrapper that counts calls, to assert the store work each request does."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sessionkeeper.stores.base import SessionRecord, SessionStore, SessionUpdate


class CountingStore(SessionStore):
    """Delegates to a real store and counts load/create/update/touch/delete calls."""

    def __init__(self, inner: SessionStore) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: Counter[str] = Counter()

    def reset(self) -> None:
        self.calls.clear()

    @property
    def reads(self) -> int:
        return self.calls["load"]

    @property
    def writes(self) -> int:
        return sum(self.calls[op] for op in ("create", "update", "touch", "delete"))

    def load(self, key: str, now: float) -> SessionRecord | None:
        self.calls["load"] += 1
        return self.inner.load(key, now)

    def create(self, key: str, record: SessionRecord) -> None:
        self.calls["create"] += 1
        self.inner.create(key, record)

    def update(self, key: str, update: SessionUpdate) -> bool:
        self.calls["update"] += 1
        return self.inner.update(key, update)

    def touch(self, key: str, accessed_at: float, expires_at: float) -> None:
        self.calls["touch"] += 1
        self.inner.touch(key, accessed_at, expires_at)

    def delete(self, key: str) -> None:
        self.calls["delete"] += 1
        self.inner.delete(key)

    def delete_expired(self, now: float) -> int:
        self.calls["delete_expired"] += 1
        return self.inner.delete_expired(now)

    def keys_for_user(self, user_id: str, now: float) -> list[str]:
        self.calls["keys_for_user"] += 1
        return self.inner.keys_for_user(user_id, now)

    def check(self) -> None:
        self.inner.check()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def count_store_calls(app: Any) -> CountingStore:
    """Wrap the store of a sessionkeeper Flask app; returns the counter."""
    backend = app.extensions["sessionkeeper"].backend
    counting = CountingStore(backend.store)
    backend.store = counting
    return counting
