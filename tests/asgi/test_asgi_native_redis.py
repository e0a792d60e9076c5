"""On asyncio, the Redis store's read, delta update and refresh run on the event loop
(redis.asyncio), not in a worker thread: such requests are served while every store
thread is busy. They answer as the threaded ones do (50 concurrent writers of one
session lose nothing), a Redis that stops answers 503, one that restarts is reconnected
to, and on trio (which redis.asyncio does not support) the calls go back to the
threads."""

from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import redis
from native_redis import (
    answers_as_on_asyncio_and_trio,
    fifty_writers,
    loops_kept_alive,
    served_while_the_store_threads_are_busy,
    session_app,
)
from servers import RedisServer, start_or_skip, start_redis
from starlette.testclient import TestClient

from sessionkeeper.stores.redis import DEFAULT_TIMEOUT

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    server = start_or_skip(start_redis)
    try:
        yield server
    finally:
        server.stop()


def test_a_read_needs_no_store_thread_on_asyncio() -> None:
    app = session_app(REDIS_URL, store_threads=1)
    assert anyio.run(served_while_the_store_threads_are_busy, app) == 200


def test_a_change_needs_no_store_thread_on_asyncio() -> None:
    app = session_app(REDIS_URL, store_threads=1)
    assert anyio.run(served_while_the_store_threads_are_busy, app, "POST", "/set") == 200


def test_a_refresh_needs_no_store_thread_on_asyncio() -> None:
    # max_age=10: a read more than a second (a tenth) after the last write refreshes
    app = session_app(REDIS_URL, store_threads=1, max_age=10)
    assert anyio.run(served_while_the_store_threads_are_busy, app, "GET", "/view",
                     1.2) == 200


def test_a_store_without_native_calls_waits_for_its_thread(tmp_path: Any) -> None:
    # The contrast that shows the tests above can fail: SQLite works in threads.
    app = session_app(f"sqlite:///{tmp_path / 's.db'}", store_threads=1)
    assert anyio.run(served_while_the_store_threads_are_busy, app) == 0
    assert anyio.run(served_while_the_store_threads_are_busy, app, "POST", "/set") == 0


def test_fifty_concurrent_writers_of_one_session_lose_nothing() -> None:
    session = anyio.run(fifty_writers, session_app(REDIS_URL))
    assert session == {"start": True, **{f"k{n}": True for n in range(50)}}


def test_the_native_read_answers_as_the_threaded_one() -> None:
    answers_as_on_asyncio_and_trio(session_app(REDIS_URL))


def test_a_stopped_redis_answers_503_and_a_restarted_one_is_reconnected(
        private_redis: RedisServer) -> None:
    app = session_app(f"redis://127.0.0.1:{private_redis.port}/0", breaker_seconds=0)
    with TestClient(app) as browser:  # one event loop: its connections are reused
        browser.post("/set", json={"a": 1})
        assert browser.get("/view").json()["session"] == {"a": 1}
        private_redis.stop()
        down = browser.get("/view")
        assert down.status_code == 503 and "temporarily unavailable" in down.text
        private_redis.restart()
        # The record went with the server (no persistence): a fresh session, not a 503.
        back = browser.get("/view")
        assert back.status_code == 200 and back.json()["session"] == {}


def test_connections_close_with_their_event_loop() -> None:
    name = f"sk-loops-{secrets.token_hex(4)}"
    app = session_app(f"{REDIS_URL}?client_name={name}")
    server = redis.Redis.from_url(REDIS_URL)

    def connections() -> int:
        time.sleep(0.2)  # the server notices a closed connection promptly, not at once
        return sum(client["name"] == name for client in server.client_list())

    assert anyio.run(served_while_the_store_threads_are_busy, app) == 200
    after_one_loop = connections()
    for _ in range(3):  # three more loops one after the other, as test clients make them
        assert anyio.run(served_while_the_store_threads_are_busy, app) == 200
    assert connections() == after_one_loop  # (the threads' connections stay, for reuse)


def test_a_frozen_redis_answers_503_after_the_timeout_and_recovers(
        private_redis: RedisServer) -> None:
    app = session_app(f"redis://127.0.0.1:{private_redis.port}/0", breaker_seconds=0)
    process = private_redis._processes.procs[private_redis.port]  # type: ignore[attr-defined]
    with TestClient(app) as browser:
        browser.post("/set", json={"a": 1})
        assert browser.get("/view").json()["session"] == {"a": 1}
        process.send_signal(signal.SIGSTOP)  # connections stay open; nothing answers
        try:
            started = time.monotonic()
            frozen = browser.get("/view")
            waited = time.monotonic() - started
        finally:
            process.send_signal(signal.SIGCONT)
        assert frozen.status_code == 503 and "temporarily unavailable" in frozen.text
        assert DEFAULT_TIMEOUT - 0.5 < waited < DEFAULT_TIMEOUT + 3  # the store's timeout
        assert browser.get("/view").json()["session"] == {"a": 1}  # a new connection


def test_an_event_loop_that_ended_is_not_kept_alive_by_its_connections() -> None:
    assert loops_kept_alive(session_app(REDIS_URL)) == 0
