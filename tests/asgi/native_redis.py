"""What the native Redis tests share: an app on a store, a request made while the
app's only store thread is held, fifty concurrent writers of one session."""

from __future__ import annotations

import asyncio
import gc
import secrets
import threading
import weakref
from typing import Any

import anyio
import httpx
from asgi_app import ROUTES
from starlette.applications import Starlette
from starlette.testclient import TestClient

from sessionkeeper.starlette import SessionMiddleware


def session_app(store: Any, **options: Any) -> SessionMiddleware:
    """The middleware itself (its store threads are reachable), around the test routes."""
    return SessionMiddleware(Starlette(routes=ROUTES), secret_key="test secret", store=store,
                             key_prefix=f"native-{secrets.token_hex(4)}:", **options)


async def served_while_the_store_threads_are_busy(
        app: SessionMiddleware, method: str = "GET", path: str = "/view",
        wait_before: float = 0.0) -> int:
    """The status of a request of a session holding {"a": 1}, made while the app's only
    store thread is held; 0 when it waited for that thread."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as browser:
        token = (await browser.post("/set", json={"a": 1})).cookies["session"]
        browser.cookies.set("session", token)
        await anyio.sleep(wait_before)
        release = threading.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(app.threads.run, lambda: release.wait(10))
            await anyio.sleep(0.05)  # the thread is taken
            try:
                with anyio.fail_after(2):
                    answer = await browser.request(method, path, json={"b": 2})
                return answer.status_code if answer.json()["session"]["a"] == 1 else -1
            except TimeoutError:
                return 0
            finally:
                release.set()


async def fifty_writers(app: SessionMiddleware) -> dict[str, Any]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as browser:
        token = (await browser.post("/set", json={"start": True})).cookies["session"]
        browser.cookies.set("session", token)
        async with anyio.create_task_group() as tasks:
            for n in range(50):  # each reads, waits, then writes its own key
                tasks.start_soon(browser.post, f"/set/k{n}?linger=0.05")
        session: dict[str, Any] = (await browser.get("/view")).json()["session"]
        return session


def answers_as_on_asyncio_and_trio(app: SessionMiddleware) -> None:
    """A session set, bound to a user and logged out reads the same on asyncio (the
    native path) and on trio (the store threads)."""
    browser = TestClient(app)
    browser.post("/set", json={"a": [1, 2]})
    browser.post("/login", json={"user": "laowang"})
    browser.post("/set", json={"b": "x"})
    assert browser.get("/view").json() == {"session": {"a": [1, 2], "b": "x"},
                                           "user": "laowang"}
    on_trio = TestClient(app, backend="trio", cookies=dict(browser.cookies))
    assert on_trio.get("/view").json() == browser.get("/view").json()
    browser.post("/logout")
    assert browser.get("/view").json() == {"session": {}, "user": None}


def loops_kept_alive(app: SessionMiddleware, runs: int = 3) -> int:
    """How many of ``runs`` event loops that served a session change (and ended, as
    asyncio.run ends them) are still in memory: the store's per-loop connections must
    not keep them."""
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def one_change() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://test") as browser:
            token = (await browser.post("/set", json={"a": 1})).cookies["session"]
            browser.cookies.set("session", token)
            assert (await browser.post("/set", json={"b": 2})).status_code == 200

    for _ in range(runs):
        asyncio.run(one_change())
    gc.collect()
    return sum(loop() is not None for loop in loops)
