"""The SQL store's optimistic save, described once and run by a blocking or an async
runner (as store_steps.py does for the core's store work, psycopg 3's way).

:func:`optimistic_save` is a generator that *yields* each step it needs (a read of the
row, the versioned UPDATE, the end of the transaction, a pause before retrying) and gets
the step's result sent back. Nothing in it knows how a statement is sent:

- :func:`run_blocking` runs the steps on a thread: through Core on a ``Connection``, or
  straight to the driver (stores/sql_direct.py);
- :func:`run_async` awaits them on an async driver from the event loop
  (stores/sql_async.py), where every statement commits by itself.

So both paths make the same statements in the same order and leave equal rows.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any, NamedTuple, Protocol

from ..errors import StoreUnavailable

#: attempts of an optimistic save before giving up with StoreUnavailable (never a silent loss)
MAX_SAVE_ATTEMPTS = 100


class Seen(NamedTuple):
    """A row as a request read it: what its save merges the delta into."""

    key: str
    version: int
    values: dict[str, bytes]


class Read(NamedTuple):
    """Read the row's data and version: the step's result is the row, or None."""

    statement: Any
    params: dict[str, Any]


class Write(NamedTuple):
    """The versioned UPDATE: the step's result is the number of rows it matched.
    ``size``: the bytes of data it carries (a server refusing them is reported so)."""

    statement: Any
    params: dict[str, Any]
    size: int


class End(NamedTuple):
    """End the transaction (a no-op in autocommit): commit, or roll back."""

    commit: bool


class Pause(NamedTuple):
    """Wait before the next attempt."""

    seconds: float


Step = Read | Write | End | Pause
#: a save described as steps, ending with whether the row was written
SaveSteps = Generator[Step, Any, bool]
#: the versioned UPDATE of the delta merged into a row as seen: statement and parameters
Merge = Callable[[Seen], tuple[Any, dict[str, Any]]]


def optimistic_save(store: str, key: str, seen: Seen | None, read_current: Any,
                    merged: Merge, unpack: Callable[[Any], dict[str, bytes]]) -> SaveSteps:
    """Merge the delta into the row as read (``seen``, else read now), write it if still
    at that version, else read it again and retry; False when the row is gone."""
    for attempt in range(MAX_SAVE_ATTEMPTS):
        if seen is None:
            row = yield Read(read_current, {"k": key})
            if row is None:
                yield End(commit=False)
                return False  # destroyed meanwhile (a logout): never recreate it
            seen = Seen(key, row[1], unpack(row[0]))
        statement, params = merged(seen)
        if (yield Write(statement, params, len(params["d"]))):
            yield End(commit=True)
            return True
        # Another request saved first. End this transaction so the re-read sees its row
        # (REPEATABLE READ would keep showing the old one), then retry.
        yield End(commit=False)
        seen = None
        yield Pause(pause(attempt))
    raise StoreUnavailable(
        store, f"the session kept changing concurrently; gave up after "
               f"{MAX_SAVE_ATTEMPTS} attempts and kept nothing")


def pause(attempt: int) -> float:
    # Random, growing pauses spread competing savers apart so one of them wins each round.
    return random.uniform(0, min(0.05, 0.001 * 2 ** min(attempt, 6)))


class BlockingRunner(Protocol):
    """Sends the save's statements from a thread. Parameters are given as Core takes them."""

    def first(self, statement: Any, params: dict[str, Any]) -> Any: ...

    def write(self, statement: Any, params: dict[str, Any], size: int) -> int: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


class AsyncRunner(Protocol):
    """Sends the save's statements from the event loop, each committing by itself."""

    def first(self, statement: Any, params: dict[str, Any]) -> Awaitable[Any]: ...

    def write(self, statement: Any, params: dict[str, Any], size: int) -> Awaitable[int]: ...


def run_blocking(steps: SaveSteps, runner: BlockingRunner) -> bool:
    """Drive ``steps`` with blocking calls on ``runner``."""
    result: Any = None
    while True:
        try:
            step = steps.send(result)
        except StopIteration as done:
            return bool(done.value)
        result = None
        if isinstance(step, Read):
            result = runner.first(step.statement, step.params)
        elif isinstance(step, Write):
            result = runner.write(step.statement, step.params, step.size)
        elif isinstance(step, End):
            if step.commit:
                runner.commit()
            else:
                runner.rollback()
        else:
            time.sleep(step.seconds)


async def run_async(steps: SaveSteps, runner: AsyncRunner) -> bool:
    """Drive ``steps`` from the event loop on ``runner`` (autocommit: no transaction to end)."""
    result: Any = None
    while True:
        try:
            step = steps.send(result)
        except StopIteration as done:
            return bool(done.value)
        result = None
        if isinstance(step, Read):
            result = await runner.first(step.statement, step.params)
        elif isinstance(step, Write):
            result = await runner.write(step.statement, step.params, step.size)
        elif isinstance(step, Pause):
            await asyncio.sleep(step.seconds)
