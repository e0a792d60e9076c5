"""The memory store's add and touch: a key is claimed once, even by concurrent threads,
and a refresh says whether the session was there, never reviving an expired one.

(It keeps records as Python objects, so nothing it holds can fail to decode.)
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from sessionkeeper.stores.base import SessionRecord
from sessionkeeper.stores.memory import MemoryStore


def record(n: int = 0, lifetime: float = 600) -> SessionRecord:
    now = time.time()
    return SessionRecord({"n": bytes([n])}, now, now, now + lifetime, True)


def test_add_claims_a_key_once() -> None:
    store = MemoryStore()
    assert store.add("k", record(1)) is True
    assert store.add("k", record(2)) is False
    assert store.load("k", time.time()).values == {"n": b"\x01"}  # type: ignore[union-attr]


def test_add_replaces_an_expired_record() -> None:
    store = MemoryStore()
    store.create("k", record(1, lifetime=-1))
    assert store.add("k", record(2)) is True
    assert store.load("k", time.time()).values == {"n": b"\x02"}  # type: ignore[union-attr]


@pytest.fixture
def eager_thread_switches() -> Iterator[None]:
    """Threads switch every microsecond, not every 5 ms: a check-then-write race shows."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


@pytest.mark.usefixtures("eager_thread_switches")
def test_concurrent_adds_of_one_key_let_exactly_one_win() -> None:
    store = MemoryStore()
    claimants = 16
    for attempt in range(200):  # a race lost once in a while must still show up
        key = f"k{attempt}"
        start = threading.Barrier(claimants)

        def claim(n: int, key: str = key, start: threading.Barrier = start) -> bool:
            start.wait(timeout=30)
            return store.add(key, record(n))

        with ThreadPoolExecutor(claimants) as pool:
            won = [n for n, ok in zip(range(claimants), pool.map(claim, range(claimants)),
                                      strict=True) if ok]
        assert len(won) == 1, f"{len(won)} claims of one key succeeded"
        assert store.load(key, time.time()).values == {"n": bytes([won[0]])}  # type: ignore[union-attr]


def test_touch_says_whether_the_session_was_there() -> None:
    store = MemoryStore()
    now = time.time()
    assert store.touch("missing", now, now + 600) is False
    assert store.load("missing", now) is None  # nothing created

    store.create("live", record())
    assert store.touch("live", now, now + 900) is True
    assert store.load("live", now + 700) is not None

    store.create("expired", record(lifetime=-1))
    assert store.touch("expired", now, now + 600) is False  # never revived
    assert store.load("expired", now) is None
