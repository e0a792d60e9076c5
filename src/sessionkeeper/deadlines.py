"""Deadlines for a store's native calls: one timer per event loop, not one per call.

``asyncio.timeout`` costs every call a Timeout object and a timer handle; cancelled
handles stay in the loop's heap, which orders them with a Python-level comparison.
On a Redis read from Starlette that was about a tenth of the request (callgrind:
451,000 instructions with it, 407,000 without). Here a call files its deadline in a
dict; one timer per loop, armed only while calls are in flight and at most every
``TICK`` seconds under load, fires what is due. A call is cut between its deadline
and one ``TICK`` later.
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: the slack a deadline may be met with, and the shortest gap between two firings
TICK = 0.05


class Deadline:
    """One call's deadline: ``expire`` runs once the loop's time passes ``at``."""

    __slots__ = ("at", "expire", "fired")

    def __init__(self, at: float, expire: Callable[[], Any]) -> None:
        self.at = at
        self.expire = expire
        self.fired = False


class LoopDeadlines:
    """The deadlines of the calls in flight on one event loop (which it does not keep
    alive: nothing here refers to the loop but weakly)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)
        self._pending: dict[Deadline, None] = {}
        self._armed_for: float | None = None
        #: tells the timer that counts apart from ones armed before and overtaken (they
        #: are left to fire and do nothing, not cancelled: cheaper, and no handle kept)
        self._generation = 0

    def add(self, seconds: float, expire: Callable[[], Any]) -> Deadline:
        """File a deadline ``seconds`` from now; ``remove`` it when the call is over."""
        loop = self._loop()
        assert loop is not None
        return self.add_at(loop.time() + seconds, expire)

    def add_at(self, at: float, expire: Callable[[], Any]) -> Deadline:
        """File a deadline at the loop's time ``at``."""
        deadline = Deadline(at, expire)
        self._pending[deadline] = None
        armed_for = self._armed_for
        if armed_for is None or at < armed_for:
            self._arm(at)
        return deadline

    def remove(self, deadline: Deadline) -> None:
        # The timer stays armed: it finds nothing due and disarms.
        self._pending.pop(deadline, None)

    def _arm(self, at: float) -> None:
        loop = self._loop()
        if loop is None:
            return
        self._generation += 1
        self._armed_for = at
        loop.call_at(at, self._fire, self._generation)

    def _fire(self, generation: int) -> None:
        loop = self._loop()
        if generation != self._generation or loop is None:
            return  # overtaken by a timer armed for an earlier deadline
        self._armed_for = None
        now = loop.time()
        due = [deadline for deadline in self._pending if deadline.at <= now]
        for deadline in due:
            del self._pending[deadline]
            deadline.fired = True
            deadline.expire()
        if self._pending:
            self._arm(max(min(deadline.at for deadline in self._pending), now + TICK))


_last: LoopDeadlines | None = None
_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopDeadlines] = (
    weakref.WeakKeyDictionary())


def loop_deadlines() -> LoopDeadlines:
    """The running loop's deadlines (one loop per process is the common case: kept at
    hand)."""
    global _last
    loop = asyncio.get_running_loop()
    found = _last
    if found is not None and found._loop() is loop:
        return found
    found = _by_loop.get(loop)
    if found is None:
        found = _by_loop[loop] = LoopDeadlines(loop)
    _last = found
    return found


async def within(seconds: float, work: Awaitable[T]) -> T:
    """``await work``, or TimeoutError once ``seconds`` have passed (plus at most a
    ``TICK``); a cancellation from elsewhere stays a cancellation, as under
    ``asyncio.timeout``."""
    if sys.version_info < (3, 11):  # pragma: no cover - no Task.uncancel before 3.11
        return await asyncio.wait_for(work, seconds)
    task = asyncio.current_task()
    assert task is not None
    cancelling = task.cancelling()
    deadlines = loop_deadlines()
    deadline = deadlines.add(seconds, task.cancel)
    try:
        return await work
    except asyncio.CancelledError:
        if deadline.fired and task.uncancel() <= cancelling:
            raise TimeoutError(f"no answer within {seconds} s") from None
        raise
    finally:
        deadlines.remove(deadline)
