"""A request's store work, described once and run by a synchronous or an asynchronous
runner (the way psycopg 3 drives one protocol from both).

The core writes its logic as a generator that *yields* each store call it needs
(``record = yield StoreCall("load", key, now)``) and gets the result sent back, or the
store's exception thrown in. Nothing in it knows how the call is made:

- :func:`run_sync` makes each call on the store directly (Flask, the request's thread);
- :func:`run_async` awaits the store's native coroutine for the call when it has one
  (``SessionStore.async_operation``: the Redis store's read on ``redis.asyncio``), and
  otherwise runs the blocking call in the given worker threads (ASGI).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from functools import partial
from typing import Any, TypeVar

from .stores.base import SessionStore

T = TypeVar("T")


class StoreCall:
    """One store operation: ``store.<method>(*args, **kwargs)``, or ``function(...)``
    for work outside the store that blocks the same way (a migration hook)."""

    __slots__ = ("args", "function", "kwargs", "method")

    def __init__(self, method: str, *args: Any, function: Callable[..., Any] | None = None,
                 **kwargs: Any) -> None:
        self.method = method
        self.args = args
        self.kwargs = kwargs
        self.function = function

    def __repr__(self) -> str:
        return f"StoreCall({self.method!r}, ...)"


#: a description of store work that ends with a ``T``
Steps = Generator[StoreCall, Any, T]
#: runs a blocking function in a worker thread: ``await run_in_thread(fn, *args)``
ThreadRunner = Callable[..., Awaitable[Any]]


def run_sync(steps: Steps[T], store: SessionStore) -> T:
    """Drive ``steps`` with blocking calls on ``store``."""
    try:
        call = next(steps)
        while True:
            target = call.function or getattr(store, call.method)
            try:
                result = target(*call.args, **call.kwargs)
            except Exception as exc:  # the steps decide; uncaught, it ends them
                call = steps.throw(exc)
            else:
                call = steps.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def run_async(steps: Steps[T], store: SessionStore,
                    run_in_thread: ThreadRunner) -> T:
    """Drive ``steps`` from an event loop: the store's native coroutine for a call when
    it offers one, else the blocking call in ``run_in_thread``."""
    try:
        call = next(steps)
        while True:
            native = None if call.function else store.async_operation(call.method)
            try:
                if native is not None:
                    result = await native(*call.args, **call.kwargs)
                elif call.kwargs:
                    result = await run_in_thread(
                        partial(call.function or getattr(store, call.method), **call.kwargs),
                        *call.args)
                else:
                    target = call.function or getattr(store, call.method)
                    result = await run_in_thread(target, *call.args)
            except Exception as exc:
                call = steps.throw(exc)
            else:
                call = steps.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
