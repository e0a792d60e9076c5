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
from collections.abc import Awaitable, Generator
from typing import Any, NamedTuple, Protocol

from ..errors import StoreUnavailable
from ..serialization import ValueCodec
from .base import SessionUpdate
from .sql_rows import unpack_current, unpack_values

#: attempts of an optimistic save before giving up with StoreUnavailable (never a silent loss)
MAX_SAVE_ATTEMPTS = 100


class Seen(NamedTuple):
    """A row as a request read it: what its save merges the delta into."""

    key: str
    version: int
    values: dict[str, bytes]


# The steps, as plain tuples (the cheapest to make and take apart):
#: ``(READ, statement, params)``: read the row's data and version; the row, or None
READ = "read"
#: ``(WRITE, statement, params, size)``: the versioned UPDATE carrying ``size`` bytes of
#: data (a server refusing them is reported so); the number of rows it matched
WRITE = "write"
#: ``(COMMIT,)`` / ``(ROLLBACK,)``: end the transaction (a no-op in autocommit)
COMMIT = "commit"
ROLLBACK = "rollback"
#: ``(PAUSE, seconds)``: wait before the next attempt
PAUSE = "pause"

#: a save described as steps, ending with whether the row was written
SaveSteps = Generator[tuple[Any, ...], Any, bool]


class SavingStore(Protocol):
    """What the save needs of the store: its name and codec, the statement reading a
    row's data and version, and the versioned UPDATE of a delta merged into a row."""

    name: str
    codec: ValueCodec
    _read_current: Any

    def _write_of(self, seen: Seen, update: SessionUpdate) -> tuple[Any, dict[str, Any]]: ...


def optimistic_save(store: SavingStore, key: str, seen: Seen | None,
                    update: SessionUpdate) -> SaveSteps:
    """Merge ``update`` into the row as read (``seen``, else read now), write it if still
    at that version, else read it again and retry; False when the row is gone."""
    for attempt in range(MAX_SAVE_ATTEMPTS):
        if seen is None:
            row = yield (READ, store._read_current, {"k": key})
            if row is None:
                yield (ROLLBACK,)
                return False  # destroyed meanwhile (a logout): never recreate it
            if len(row) == 1:  # packed on MariaDB/MySQL (stores/sql_packed.py)
                row = unpack_current(store.name, row[0])
            seen = Seen(key, row[1], unpack_values(store.name, store.codec, row[0]))
        statement, params = store._write_of(seen, update)
        if (yield (WRITE, statement, params, len(params["d"]))):
            yield (COMMIT,)
            return True
        # Another request saved first. End this transaction so the re-read sees its row
        # (REPEATABLE READ would keep showing the old one), then retry.
        yield (ROLLBACK,)
        seen = None
        yield (PAUSE, pause(attempt))
    raise StoreUnavailable(
        store.name, f"the session kept changing concurrently; gave up after "
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
        kind = step[0]
        if kind is READ:
            result = runner.first(step[1], step[2])
        elif kind is WRITE:
            result = runner.write(step[1], step[2], step[3])
        else:
            result = None
            if kind is COMMIT:
                runner.commit()
            elif kind is ROLLBACK:
                runner.rollback()
            else:
                time.sleep(step[1])


async def run_async(steps: SaveSteps, runner: AsyncRunner) -> bool:
    """Drive ``steps`` from the event loop on ``runner`` (autocommit: no transaction to end)."""
    result: Any = None
    while True:
        try:
            step = steps.send(result)
        except StopIteration as done:
            return bool(done.value)
        kind = step[0]
        if kind is READ:
            result = await runner.first(step[1], step[2])
        elif kind is WRITE:
            result = await runner.write(step[1], step[2], step[3])
        else:
            result = None
            if kind is PAUSE:
                await asyncio.sleep(step[1])
