"""On asyncio, the Redis store's read runs on the event loop (redis.asyncio), not in a
worker thread: a session request is served while every store thread is busy. The read
answers as the threaded one does, a Redis that stops answers 503, one that restarts is
reconnected to, and on trio (which redis.asyncio does not support) the read goes back
to the threads."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from asgi_app import ROUTES
from servers import RedisServer, start_or_skip, start_redis
from starlette.applications import Starlette
from starlette.testclient import TestClient

from sessionkeeper.starlette import SessionMiddleware

REDIS_URL = "redis://127.0.0.1:6379/0"


def session_app(store: str, **options: Any) -> SessionMiddleware:
    """The middleware itself (its store threads are reachable), around the test routes."""
    return SessionMiddleware(Starlette(routes=ROUTES), secret_key="test secret", store=store,
                             key_prefix=f"native-{secrets.token_hex(4)}:", **options)


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    server = start_or_skip(start_redis)
    try:
        yield server
    finally:
        server.stop()


async def served_while_the_store_threads_are_busy(app: SessionMiddleware) -> int:
    """The status of a session read made while the app's only store thread is held."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as browser:
        token = (await browser.post("/set", json={"a": 1})).cookies["session"]
        browser.cookies.set("session", token)
        release = threading.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(app.threads.run, lambda: release.wait(10))
            await anyio.sleep(0.05)  # the thread is taken
            try:
                with anyio.fail_after(2):
                    read = await browser.get("/view")
                return read.status_code if read.json()["session"] == {"a": 1} else -1
            except TimeoutError:
                return 0  # waited for a store thread
            finally:
                release.set()


def test_a_read_needs_no_store_thread_on_asyncio() -> None:
    app = session_app(REDIS_URL, store_threads=1)
    assert anyio.run(served_while_the_store_threads_are_busy, app) == 200


def test_a_store_without_a_native_read_waits_for_its_thread(tmp_path: Any) -> None:
    # The contrast that shows the test above can fail: SQLite reads in a thread.
    app = session_app(f"sqlite:///{tmp_path / 's.db'}", store_threads=1)
    assert anyio.run(served_while_the_store_threads_are_busy, app) == 0


def test_the_native_read_answers_as_the_threaded_one() -> None:
    app = session_app(REDIS_URL)
    browser = TestClient(app)
    browser.post("/set", json={"a": [1, 2], "b": "x"})
    browser.post("/login", json={"user": "laowang"})
    assert browser.get("/view").json() == {"session": {"a": [1, 2], "b": "x"},
                                           "user": "laowang"}
    on_trio = TestClient(app, backend="trio", cookies=dict(browser.cookies))
    assert on_trio.get("/view").json() == browser.get("/view").json()
    browser.post("/logout")
    assert browser.get("/view").json() == {"session": {}, "user": None}


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
