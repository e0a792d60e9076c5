"""The circuit breaker's rules, on a hand-moved clock (the store-level behaviour under a
frozen Redis is in tests/e2e/test_store_freeze.py)."""

from __future__ import annotations

import pytest

from sessionkeeper.breaker import SLOW_FAILURE, CircuitBreaker, GuardedStore, unguarded
from sessionkeeper.errors import SessionContention, StoreUnavailable
from sessionkeeper.stores.memory import MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def timing_out(clock: Clock, took: float = 1.0) -> object:
    clock.now += took
    raise StoreUnavailable("redis", "Timeout reading from socket")


def test_a_slow_failure_opens_the_circuit_and_later_calls_are_not_made() -> None:
    clock = Clock()
    breaker = CircuitBreaker("redis", 5.0, clock=clock)
    with pytest.raises(StoreUnavailable):
        breaker.call(lambda: timing_out(clock))
    made = []
    with pytest.raises(StoreUnavailable, match="circuit open"):
        breaker.call(lambda: made.append(1))
    assert made == []  # failed without trying the store


def test_a_quick_refusal_does_not_open_it() -> None:
    clock = Clock()
    breaker = CircuitBreaker("redis", 5.0, clock=clock)
    with pytest.raises(StoreUnavailable):
        breaker.call(lambda: timing_out(clock, took=SLOW_FAILURE / 10))
    assert breaker.call(lambda: "answered") == "answered"
    assert not breaker.is_open


def test_one_probe_after_the_period_closes_it_or_opens_it_again() -> None:
    clock = Clock()
    breaker = CircuitBreaker("redis", 5.0, clock=clock)
    with pytest.raises(StoreUnavailable):
        breaker.call(lambda: timing_out(clock))
    clock.now += 5.0
    with pytest.raises(StoreUnavailable, match="Timeout"):  # the probe reaches the store
        breaker.call(lambda: timing_out(clock, took=0.0))
    with pytest.raises(StoreUnavailable, match="circuit open"):  # and opened it again
        breaker.call(lambda: "not made")
    clock.now += 5.0
    assert breaker.call(lambda: "back") == "back"
    assert not breaker.is_open
    assert breaker.call(lambda: "normal") == "normal"


def test_while_the_probe_runs_other_calls_fail_fast() -> None:
    clock = Clock()
    breaker = CircuitBreaker("redis", 5.0, clock=clock)
    with pytest.raises(StoreUnavailable):
        breaker.call(lambda: timing_out(clock))
    clock.now += 5.0
    seen = []

    def probe() -> str:
        with pytest.raises(StoreUnavailable, match="circuit open"):
            breaker.call(lambda: seen.append("second caller"))
        return "probe answered"

    assert breaker.call(probe) == "probe answered"
    assert seen == []


def test_the_guarded_store_keeps_the_stores_own_attributes() -> None:
    inner = MemoryStore()
    guarded = GuardedStore(inner, CircuitBreaker(inner.name, 5.0))
    assert guarded.name == "memory"
    assert guarded._records is inner._records
    assert unguarded(guarded) is inner and unguarded(inner) is inner


def test_one_busy_session_does_not_open_it() -> None:
    """A session locked by a stuck request of its own waits out the lock timeout; the
    store answers, so other sessions must not be failed."""
    clock = Clock()
    breaker = CircuitBreaker("filesystem", 5.0, clock=clock)

    def busy() -> object:
        clock.now += 5.0
        raise SessionContention("filesystem", "another request held its lock for 5.0s")

    with pytest.raises(SessionContention):
        breaker.call(busy)
    assert not breaker.is_open
    assert breaker.call(lambda: "other session") == "other session"
