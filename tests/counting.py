"""A store wrapper that counts calls, to assert the store work each request does."""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from sessionkeeper.stores.base import SessionRecord, SessionStore, SessionUpdate

#: operations that only read the stored sessions (or ping the store); every other call,
#: including one this wrapper does not know, counts as a write
NON_WRITES = frozenset({"load", "keys_for_user", "check", "close"})


class CountingStore(SessionStore):
    """Delegates to a real store and counts every call of a store operation.

    The operations of the SessionStore interface are counted by name. A method the
    inner store has beyond that interface is counted too, under its own name (and as a
    write), so a test asserting "no store call" cannot miss it. Plain attributes
    (settings, names) pass through uncounted.
    """

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
        return sum(n for op, n in self.calls.items() if op not in NON_WRITES)

    def load(self, key: str, now: float) -> SessionRecord | None:
        self.calls["load"] += 1
        return self.inner.load(key, now)

    def create(self, key: str, record: SessionRecord) -> None:
        self.calls["create"] += 1
        self.inner.create(key, record)

    def update(self, key: str, update: SessionUpdate) -> bool:
        self.calls["update"] += 1
        return self.inner.update(key, update)

    def add(self, key: str, record: SessionRecord) -> bool:
        self.calls["add"] += 1
        return self.inner.add(key, record)

    def touch(self, key: str, accessed_at: float, expires_at: float, *,
              version: Any = None) -> bool:
        self.calls["touch"] += 1
        return self.inner.touch(key, accessed_at, expires_at, version=version)

    def delete(self, key: str) -> None:
        self.calls["delete"] += 1
        self.inner.delete(key)

    def delete_expired(self, now: float) -> int:
        self.calls["delete_expired"] += 1
        return self.inner.delete_expired(now)

    def keys_for_user(self, user_id: str, now: float) -> list[str]:
        self.calls["keys_for_user"] += 1
        return self.inner.keys_for_user(user_id, now)

    def async_operation(self, method: str) -> Callable[..., Awaitable[Any]] | None:
        """The inner store's native coroutine, counted under the operation's name."""
        native = self.inner.async_operation(method)
        if native is None:
            return None

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[method] += 1
            return await native(*args, **kwargs)

        return counted

    def check(self) -> None:
        self.calls["check"] += 1
        self.inner.check()

    def close(self) -> None:
        self.calls["close"] += 1
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.inner, name)
        if not inspect.ismethod(found):
            return found
        method: Callable[..., Any] = found

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return method(*args, **kwargs)

        return counted


# An operation added to SessionStore but not overridden above would run the base
# class's default on the wrapper instead of the real store's, uncounted: refuse it.
_UNWRAPPED = sorted(
    name for name, value in vars(SessionStore).items()
    if callable(value) and not name.startswith("_") and name not in vars(CountingStore)
)
if _UNWRAPPED:
    raise TypeError(f"CountingStore does not count the store operations {_UNWRAPPED}")


def count_store_calls(app: Any) -> CountingStore:
    """Wrap the store of a sessionkeeper Flask app; returns the counter."""
    backend = app.extensions["sessionkeeper"].backend
    counting = CountingStore(backend.store)
    backend.store = counting
    return counting
