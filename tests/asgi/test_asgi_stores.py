"""Server-side sessions through the ASGI middleware, on the memory, SQLite and Redis stores.

What each request costs the store, that store calls run in worker threads of the
middleware's own (never on the event loop, never in the pool ``def`` endpoints share),
login/logout, and the 503 a store outage answers.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from asgi_app import ROUTES, make_app
from conftest import provider
from counting import CountingStore
from servers import start_or_skip, start_redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from sessionkeeper.errors import ConfigurationError
from sessionkeeper.serialization import ValueCodec
from sessionkeeper.starlette import SessionMiddleware
from sessionkeeper.starlette.stores import store_from
from sessionkeeper.stores.base import SessionRecord
from sessionkeeper.stores.memory import MemoryStore
from sessionkeeper.stores.sqlite import SQLiteStore

KINDS = ("memory", "sqlite", "redis")


class ThreadRecordingStore(CountingStore):
    """Counts store calls and remembers the threads reads ran on."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.threads: set[int] = set()

    def load(self, key: str, now: float) -> SessionRecord | None:
        self.threads.add(threading.get_ident())
        return super().load(key, now)


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest) -> Iterator[ThreadRecordingStore]:
    with provider(str(request.param)).store(ValueCodec()) as made:
        yield ThreadRecordingStore(made)


def cookie(response: httpx.Response) -> str | None:
    return response.cookies.get("session")


def test_a_request_without_a_session_cookie_reads_nothing(
        store: ThreadRecordingStore) -> None:
    client = TestClient(make_app(store=store))
    response = client.get("/view")
    assert response.json()["session"] == {} and "set-cookie" not in response.headers
    assert store.calls == {}


def test_what_each_request_costs_the_store(store: ThreadRecordingStore) -> None:
    client = TestClient(make_app(store=store))
    created = client.post("/set", json={"a": 1})
    assert created.headers["set-cookie"].endswith(
        "; path=/; Max-Age=1209600; httponly; samesite=lax")
    assert store.calls == {"create": 1}

    store.reset()  # an endpoint that never touches the session: the read made up front
    untouched = client.get("/health")
    assert "set-cookie" not in untouched.headers and "vary" not in untouched.headers
    assert store.calls == {"load": 1}

    store.reset()
    read = client.get("/view")
    assert read.json()["session"] == {"a": 1} and read.headers["vary"] == "Cookie"
    assert "set-cookie" not in read.headers
    assert store.calls == {"load": 1}

    store.reset()  # a change: one delta update
    assert client.post("/set", json={"b": 2}).status_code == 200
    assert store.calls == {"load": 1, "update": 1}

    store.reset()
    assert client.get("/sync").json()["session"] == {"a": 1, "b": 2}  # a def endpoint
    assert store.calls == {"load": 1}


def test_store_calls_run_off_the_event_loop(store: ThreadRecordingStore) -> None:
    loop_threads: set[int] = set()
    app = make_app(store=store)

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        loop_threads.add(threading.get_ident())
        await app(scope, receive, send)

    with TestClient(recording) as client:  # one event loop thread for both requests
        client.post("/set", json={"a": 1})
        client.get("/view")
    assert store.threads and loop_threads and not store.threads & loop_threads


def test_login_rotates_the_id_and_logout_ends_the_session(
        store: ThreadRecordingStore) -> None:
    client = TestClient(make_app(store=store))
    before = cookie(client.post("/set", json={"theme": "dark"}))
    logged_in = client.post("/login", json={"user": "u1"})
    after = cookie(logged_in)
    assert logged_in.json() == {"session": {"theme": "dark"}, "user": "u1"}
    assert after is not None and after != before
    assert client.get("/view").json() == {"session": {"theme": "dark"}, "user": "u1"}

    old = TestClient(make_app(store=store), cookies={"session": before or ""})
    assert old.get("/view").json() == {"session": {}, "user": None}  # the old id is dead

    logged_out = client.post("/logout")
    assert logged_out.headers["set-cookie"].startswith("session=null; path=/; expires=")
    stale = TestClient(make_app(store=store), cookies={"session": after})
    assert stale.get("/view").json() == {"session": {}, "user": None}


def test_the_session_is_loaded_for_a_websocket_handshake(
        store: ThreadRecordingStore) -> None:
    client = TestClient(make_app(store=store))
    client.post("/set", json={"a": 1})
    store.reset()
    with client.websocket_connect("/socket") as socket:
        assert socket.receive_json() == {"session": {"a": 1}, "user": None}
    assert store.calls == {"load": 1}


def test_nothing_is_written_on_a_5xx(store: ThreadRecordingStore) -> None:
    client = TestClient(make_app(store=store), raise_server_exceptions=False)
    client.post("/set", json={"a": 1})
    store.reset()
    failed = client.post("/fail")
    assert failed.status_code == 500 and "set-cookie" not in failed.headers
    assert store.writes == 0
    assert client.get("/view").json()["session"] == {"a": 1}


def test_sessions_load_while_def_endpoints_hold_every_default_thread(
        store: ThreadRecordingStore) -> None:
    """The store's threads are the middleware's own: a FastAPI app whose ``def``
    endpoints fill anyio's default pool still loads and saves sessions."""
    release = threading.Event()

    def blocking(request: Request) -> PlainTextResponse:
        release.wait(10)
        return PlainTextResponse("released")

    app = Starlette(routes=[*ROUTES, Route("/block", blocking)], middleware=[
        Middleware(SessionMiddleware, secret_key="k", store=store)])

    async def main() -> tuple[int, dict[str, Any]]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 1
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            token = (await client.post("/set", json={"a": 1})).cookies["session"]
            async with anyio.create_task_group() as group:
                group.start_soon(client.get, "/block")
                await anyio.sleep(0.2)  # the one default thread is now taken
                with anyio.fail_after(5):
                    client.cookies.set("session", token)
                    written = await client.post("/set", json={"b": 2})
                    seen = await client.get("/view")
                release.set()
            return written.status_code, seen.json()["session"]

    try:
        assert anyio.run(main) == (200, {"a": 1, "b": 2})
    finally:
        release.set()


@pytest.fixture
def redis_server() -> Iterator[Any]:
    server = start_or_skip(start_redis)
    yield server
    server.stop()


def test_a_redis_outage_answers_503(redis_server: Any) -> None:
    client = TestClient(make_app(store=redis_server.url))
    token = cookie(client.post("/set", json={"a": 1}))
    redis_server.stop()

    loading = client.get("/view")  # the read before the endpoint fails
    assert loading.status_code == 503 and "set-cookie" not in loading.headers
    assert "Sessions are temporarily unavailable" in loading.text
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect("/socket"):
        pass
    assert refused.value.code == 1013  # try again later

    saving = TestClient(make_app(store=redis_server.url)).post("/set", json={"b": 2})
    assert saving.status_code == 503 and "set-cookie" not in saving.headers
    assert "could not be saved" in saving.text and "session" not in saving.text
    assert token is not None


def test_a_locked_sqlite_database_answers_503(tmp_path: Path) -> None:
    path = tmp_path / "sessions.sqlite3"
    # (no breaker: the next request must find the database again at once)
    client = TestClient(make_app(store=SQLiteStore(path, timeout=0.2), breaker_seconds=0))
    client.post("/set", json={"a": 1})
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        response = client.post("/set", json={"b": 2})
        assert response.status_code == 503 and "set-cookie" not in response.headers
    finally:
        locker.close()
    assert client.get("/view").json()["session"] == {"a": 1}


def test_store_urls(tmp_path: Path) -> None:
    codec = ValueCodec()
    assert isinstance(store_from("memory://", codec=codec, key_prefix="p:"), MemoryStore)
    absolute = store_from(f"sqlite:///{tmp_path}/a.db", codec=codec, key_prefix="p:")
    assert isinstance(absolute, SQLiteStore) and absolute.path == tmp_path / "a.db"
    relative = store_from("sqlite:///instance/b.db", codec=codec, key_prefix="p:")
    assert isinstance(relative, SQLiteStore) and str(relative.path) == "instance/b.db"
    redis_store = store_from("redis://127.0.0.1:1/0", codec=codec, key_prefix="p:")
    assert redis_store.name == "redis" and redis_store.key_prefix == "p:"  # type: ignore[attr-defined]
    redis_store.close()
    for bad in ("sqlite://", "sqlite:///:memory:", "postgres://x", "memory"):
        with pytest.raises(ConfigurationError):
            store_from(bad, codec=codec, key_prefix="p:")
