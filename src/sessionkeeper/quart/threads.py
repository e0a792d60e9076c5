"""The store threads of one Quart app: blocking store calls, off the event loop.

The stores are blocking (sqlite3, redis-py, ...). Quart runs on asyncio only, so a
thread pool of the interface's own does what ``sessionkeeper.starlette``'s anyio
limiter does: at most ``limit`` store calls at once, in threads that sync views run
through ``app.ensure_async`` never compete for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

T = TypeVar("T")

#: threads one app runs store calls in at once
DEFAULT_STORE_THREADS = 16


class StoreThreads:
    """``await threads.run(fn, *args)``: ``fn(*args)`` in a worker thread, at most
    ``limit`` at once (the same call as ``sessionkeeper.starlette``'s, so the core's
    ``run_async`` drives either)."""

    def __init__(self, limit: int = DEFAULT_STORE_THREADS) -> None:
        if limit < 1:
            raise ValueError(f"SESSION_STORE_THREADS must be at least 1, not {limit!r}")
        self.limit = limit
        self._pool: ThreadPoolExecutor | None = None  # made on first use

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.limit, thread_name_prefix="sessionkeeper")
        return await asyncio.get_running_loop().run_in_executor(self._pool, partial(fn, *args))

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
