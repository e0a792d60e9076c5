"""A circuit breaker in front of a store: after a store operation times out, session
operations fail at once for a short while instead of each waiting for its own timeout.

Without it a frozen store ties up one worker thread per session request for the whole
timeout, and requests that never touch the session queue behind them. With it, the first
slow failure opens the circuit for ``SESSION_BREAKER_SECONDS``; session requests answer
503 in microseconds; then a single request probes the store while the others keep
failing fast, and its outcome closes the circuit or opens it again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from .backend import logger
from .errors import SessionContention, StoreUnavailable
from .stores.base import SessionRecord, SessionStore, SessionUpdate

T = TypeVar("T")

#: a failure taking at least this long is a timeout, not a quick refusal
SLOW_FAILURE = 0.05


class CircuitBreaker:
    """Counts nothing: one slow failure opens the circuit; one success closes it."""

    def __init__(self, store_name: str, open_for: float, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store_name = store_name
        self.open_for = open_for
        self.clock = clock
        self._lock = threading.Lock()
        #: when the circuit may be probed again; 0.0 while closed
        self._open_until = 0.0
        self._probing = False

    @property
    def is_open(self) -> bool:
        return self._open_until != 0.0

    def call(self, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``operation(*args, **kwargs)`` (arguments passed along, so callers build no
        closure per call)."""
        if self._open_until:  # the closed circuit's whole cost: one attribute test
            self._admit()
        started = self.clock()
        try:
            result = operation(*args, **kwargs)
        except SessionContention:
            raise  # one busy session, not a store that stopped answering
        except StoreUnavailable:
            self._failed(self.clock() - started)
            raise
        if self._open_until:
            self._closed()
        return result

    async def call_async(self, operation: Callable[..., Awaitable[T]],
                         *args: Any, **kwargs: Any) -> T:
        """``call`` for a store's native coroutine function, given its arguments (the
        same rules, awaited; no closure to build on every request)."""
        if self._open_until:
            self._admit()
        started = self.clock()
        try:
            result = await operation(*args, **kwargs)
        except SessionContention:
            raise
        except StoreUnavailable:
            self._failed(self.clock() - started)
            raise
        if self._open_until:
            self._closed()
        return result

    def _admit(self) -> None:
        """Let the caller through as the one probe, or fail it at once."""
        with self._lock:
            now = self.clock()
            if not self._open_until:
                return
            if now >= self._open_until and not self._probing:
                self._probing = True
                return
            wait = max(self._open_until - now, 0.0)
        raise StoreUnavailable(self.store_name, "not tried: it timed out moments ago "
                               f"(circuit open, next try in {wait:.1f}s)")

    def _failed(self, took: float) -> None:
        with self._lock:
            probe = self._probing
            self._probing = False
            if probe or took >= SLOW_FAILURE:
                self._open_until = self.clock() + self.open_for
                logger.warning("session store %s timed out; failing session requests fast "
                               "for %.1fs", self.store_name, self.open_for)

    def _closed(self) -> None:
        with self._lock:
            self._open_until, self._probing = 0.0, False
        logger.warning("session store %s answers again; circuit closed", self.store_name)


class GuardedStore(SessionStore):
    """Any store's operations behind a :class:`CircuitBreaker`.

    Everything else (the client, store-specific helpers) is the wrapped store's; the
    wrapped store itself is ``inner``.
    """

    def __init__(self, inner: SessionStore, breaker: CircuitBreaker) -> None:
        self.inner = inner
        self.breaker = breaker
        self.name = inner.name
        self.sweeps_itself = inner.sweeps_itself

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def load(self, key: str, now: float) -> SessionRecord | None:
        return self.breaker.call(self.inner.load, key, now)

    def create(self, key: str, record: SessionRecord) -> None:
        self.breaker.call(self.inner.create, key, record)

    def add(self, key: str, record: SessionRecord) -> bool:
        return self.breaker.call(self.inner.add, key, record)

    def update(self, key: str, update: SessionUpdate) -> bool:
        return self.breaker.call(self.inner.update, key, update)

    def touch(self, key: str, accessed_at: float, expires_at: float, *,
              version: Any = None) -> bool:
        return self.breaker.call(self.inner.touch, key, accessed_at, expires_at,
                                 version=version)

    def delete(self, key: str) -> None:
        self.breaker.call(self.inner.delete, key)

    def delete_expired(self, now: float) -> int:
        return self.breaker.call(self.inner.delete_expired, now)

    def keys_for_user(self, user_id: str, now: float) -> list[str]:
        return self.breaker.call(self.inner.keys_for_user, user_id, now)

    def async_operation(self, method: str) -> Callable[..., Awaitable[Any]] | None:
        native = self.inner.async_operation(method)
        if native is None:
            return None
        return partial(self.breaker.call_async, native)

    def check(self) -> None:
        self.inner.check()

    def close(self) -> None:
        self.inner.close()


def unguarded(store: SessionStore) -> SessionStore:
    """The store behind any breaker (for code that needs the concrete store)."""
    return store.inner if isinstance(store, GuardedStore) else store
