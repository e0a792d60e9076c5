"""A store checked when the app starts or, failing that, before its first operation.

The Flask extension checks a store when the app starts (``store.check()``: the server
answers, and its table, indexes or TTL setting are created). The ASGI middleware builds
its store without reaching the server, so that an app starts while its store is down;
the same check then runs when the app's lifespan starts (a misconfiguration the server
reports stops the app there; an unreachable server is logged and left for later) or else
before the first store operation. While the server is unreachable that operation fails
with ``StoreUnavailable`` (a 503) and the next one tries the check again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import ConfigurationError, StoreUnavailable
from ..stores.base import SessionRecord, SessionStore, SessionUpdate

logger = logging.getLogger("sessionkeeper")


class CheckedOnFirstUse(SessionStore):
    """``inner``, checked once before its first operation; anything else (the client,
    store-specific helpers) is the wrapped store's."""

    def __init__(self, inner: SessionStore) -> None:
        self.inner = inner
        self.name = inner.name
        self.sweeps_itself = inner.sweeps_itself
        self._checked = False
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _ready(self) -> SessionStore:
        if not self._checked:  # once checked, an attribute test per operation
            with self._lock:  # one thread checks (creates the table); the others wait
                if not self._checked:
                    try:
                        self.inner.check()
                    except ConfigurationError as exc:
                        # Found only once the server answered (no lifespan ran to stop
                        # the app): a logged 503, never a 500 on every request.
                        raise StoreUnavailable(self.name, f"misconfigured: {exc}") from exc
                    self._checked = True
        return self.inner

    def check_at_startup(self) -> None:
        """The check, when the app starts: ConfigurationError stops it; a server that
        cannot be reached yet is logged and checked again before the first operation."""
        with self._lock:
            if self._checked:
                return
            try:
                self.inner.check()
            except StoreUnavailable as exc:
                logger.warning("%s; starting anyway: requests that use the session answer "
                               "503 until it is reachable", exc)
                return
            self._checked = True

    def load(self, key: str, now: float) -> SessionRecord | None:
        return self._ready().load(key, now)

    def create(self, key: str, record: SessionRecord) -> None:
        self._ready().create(key, record)

    def add(self, key: str, record: SessionRecord) -> bool:
        return self._ready().add(key, record)

    def update(self, key: str, update: SessionUpdate) -> bool:
        return self._ready().update(key, update)

    def touch(self, key: str, accessed_at: float, expires_at: float, *,
              version: Any = None) -> bool:
        return self._ready().touch(key, accessed_at, expires_at, version=version)

    def delete(self, key: str) -> None:
        self._ready().delete(key)

    def delete_expired(self, now: float) -> int:
        return self._ready().delete_expired(now)

    def keys_for_user(self, user_id: str, now: float) -> list[str]:
        return self._ready().keys_for_user(user_id, now)

    def async_operation(self, method: str) -> Callable[..., Awaitable[Any]] | None:
        # Until checked, the blocking call (in a thread) runs the check first.
        return self.inner.async_operation(method) if self._checked else None

    def check(self) -> None:
        self.inner.check()
        self._checked = True

    def close(self) -> None:
        self.inner.close()
