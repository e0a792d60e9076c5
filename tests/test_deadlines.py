"""The deadlines of native store calls (deadlines.py): a hung call fails with
TimeoutError near its deadline; a cancellation from elsewhere (a client gone) stays a
cancellation; a call done in time leaves nothing behind."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from sessionkeeper.deadlines import TICK, loop_deadlines, within

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11),
                                reason="3.10 uses asyncio.wait_for instead")


def test_a_hung_call_fails_with_timeout_error_near_its_deadline() -> None:
    async def main() -> float:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await within(0.2, asyncio.sleep(10))
        return time.monotonic() - started

    took = asyncio.run(main())
    assert 0.2 <= took < 0.2 + TICK + 0.15


def test_a_call_done_in_time_returns_its_value_and_leaves_no_deadline() -> None:
    async def main() -> tuple[str, int]:
        async def answer() -> str:
            await asyncio.sleep(0.01)
            return "ok"

        value = await within(5, answer())
        await asyncio.sleep(0)  # the task is not cancelled later either
        return value, len(loop_deadlines()._pending)

    assert asyncio.run(main()) == ("ok", 0)


def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def main() -> None:
        task = asyncio.create_task(within(5, asyncio.sleep(10)))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_deadlines_of_different_lengths_each_fire_on_time() -> None:
    async def one(seconds: float) -> float:
        started = time.monotonic()
        try:
            await within(seconds, asyncio.sleep(10))
        except TimeoutError:
            return time.monotonic() - started
        raise AssertionError("not timed out")

    async def main() -> list[float]:
        # The long one is filed first: the short one must not wait for its timer.
        long = asyncio.create_task(one(0.6))
        await asyncio.sleep(0)
        return [await one(0.1), await long]

    short, long = asyncio.run(main())
    assert 0.1 <= short < 0.1 + TICK + 0.15
    assert 0.6 <= long < 0.6 + TICK + 0.15


def test_many_overlapping_calls_each_end_by_their_own_outcome() -> None:
    async def call(i: int) -> str:
        try:
            return await within(0.3, asyncio.sleep(0.01 if i % 2 else 10, result="ok"))
        except TimeoutError:
            return "timeout"

    async def main() -> list[str]:
        return await asyncio.gather(*(call(i) for i in range(50)))

    assert asyncio.run(main()) == ["timeout", "ok"] * 25
