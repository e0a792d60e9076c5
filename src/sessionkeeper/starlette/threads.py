"""Running the synchronous stores off the event loop, in threads of the middleware's own.

The stores are blocking (sqlite3, redis-py, ...). Each call runs in a worker thread
under a capacity limiter that belongs to the middleware, not anyio's default one: a
FastAPI app runs its ``def`` endpoints in the default pool, and a slow store must not
take those threads (nor they the store's).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread
from anyio import CapacityLimiter

T = TypeVar("T")

#: threads one middleware runs store calls in at once
DEFAULT_STORE_THREADS = 16


def _event_loop_kind() -> str:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return "trio"  # anyio's other backend
    return "asyncio"


class StoreThreads:
    """``await threads.run(fn, *args)``: ``fn(*args)`` in a worker thread, at most
    ``limit`` at once."""

    def __init__(self, limit: int = DEFAULT_STORE_THREADS) -> None:
        if limit < 1:
            raise ValueError(f"store_threads must be at least 1, not {limit!r}")
        self.limit = limit
        # One limiter per event-loop kind: a limiter belongs to the backend it was made in
        # (made on first use, inside a running loop, as anyio requires).
        self._limiters: dict[str, CapacityLimiter] = {}

    def limiter(self) -> CapacityLimiter:
        kind = _event_loop_kind()
        limiter = self._limiters.get(kind)
        if limiter is None:
            limiter = self._limiters[kind] = CapacityLimiter(self.limit)
        return limiter

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter())
