"""``SessionMiddleware(preload=False)``: a stored session is read only when the app asks
(``await load_session(request)``, FastAPI's ``SessionDep``, ``SessionAutoloadMiddleware``),
so routes that never use the session cost the store nothing even with a session cookie."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from asgi_app import ROUTES
from conftest import provider
from counting import CountingStore
from fastapi import FastAPI
from fastapi.testclient import TestClient as FastAPIClient
from servers import start_or_skip, start_redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from sessionkeeper.serialization import ValueCodec
from sessionkeeper.starlette import (
    SessionAutoloadMiddleware,
    SessionMiddleware,
    is_loaded,
    load_session,
)
from sessionkeeper.starlette.fastapi import SessionDep
from sessionkeeper.starlette.session import SessionNotLoaded


@pytest.fixture(params=("memory", "sqlite", "redis"))
def store(request: pytest.FixtureRequest) -> Iterator[CountingStore]:
    with provider(str(request.param)).store(ValueCodec()) as made:
        yield CountingStore(made)


async def loaded_view(request: Request) -> JSONResponse:
    before = is_loaded(request)
    await load_session(request)
    return JSONResponse({"session": dict(request.session), "was_loaded": before,
                         "loaded": is_loaded(request)})


async def loaded_set(request: Request) -> JSONResponse:
    await load_session(request)
    request.session.update(await request.json())
    return JSONResponse(dict(request.session))


async def careless(request: Request) -> PlainTextResponse:
    """Uses the session without loading it: a bug the message must explain."""
    return PlainTextResponse(str(request.session.get("a")))


ON_DEMAND_ROUTES = [*ROUTES, Route("/loaded", loaded_view),
                    Route("/loaded-set", loaded_set, methods=["POST"]),
                    Route("/careless", careless)]


def on_demand_app(store: Any, *autoload_paths: str, **options: Any) -> Starlette:
    middleware = [Middleware(SessionMiddleware, secret_key="k", store=store, preload=False,
                             **options)]
    if autoload_paths:  # inside SessionMiddleware, as with starsessions
        middleware.append(Middleware(SessionAutoloadMiddleware, paths=list(autoload_paths)))
    return Starlette(routes=ON_DEMAND_ROUTES, middleware=middleware)


def test_only_requests_that_load_the_session_read_the_store(store: CountingStore) -> None:
    client = TestClient(on_demand_app(store))
    created = client.post("/loaded-set", json={"a": 1})
    assert created.json() == {"a": 1} and "session=" in created.headers["set-cookie"]

    store.reset()
    untouched = client.get("/health")  # a session cookie, a route that never uses it
    assert untouched.text == "ok" and store.calls == {}
    assert "vary" not in untouched.headers and "set-cookie" not in untouched.headers

    store.reset()
    read = client.get("/loaded")
    assert read.json() == {"session": {"a": 1}, "was_loaded": False, "loaded": True}
    assert read.headers["vary"] == "Cookie" and store.calls == {"load": 1}

    store.reset()  # a change after an on-demand load: one delta update, as preloaded
    assert client.post("/loaded-set", json={"b": 2}).json() == {"a": 1, "b": 2}
    assert store.calls == {"load": 1, "update": 1}
    assert client.get("/loaded").json()["session"] == {"a": 1, "b": 2}


def test_autoload_middleware_loads_the_paths_it_lists(store: CountingStore) -> None:
    client = TestClient(on_demand_app(store, "/view", r"/set$"))
    assert client.post("/set", json={"a": 1}).json()["session"] == {"a": 1}
    store.reset()
    assert client.get("/view").json()["session"] == {"a": 1}
    assert store.calls == {"load": 1}
    store.reset()
    assert client.get("/health").text == "ok" and store.calls == {}


def test_using_the_session_before_loading_it_says_how_to_load_it(
        store: CountingStore) -> None:
    client = TestClient(on_demand_app(store))
    client.post("/loaded-set", json={"a": 1})
    with pytest.raises(SessionNotLoaded, match=r"await sessionkeeper\.starlette\.load_session"):
        client.get("/careless")
    # Nothing was lost: the session is still there for a route that loads it.
    assert client.get("/loaded").json()["session"] == {"a": 1}


def test_requests_without_a_cookie_and_websockets_need_no_explicit_load(
        store: CountingStore) -> None:
    client = TestClient(on_demand_app(store))
    assert client.get("/careless").text == "None"  # no cookie: a new session, no I/O
    assert store.calls == {}
    client.post("/loaded-set", json={"a": 1})
    with client.websocket_connect("/socket") as socket:  # read at the handshake
        assert socket.receive_json()["session"] == {"a": 1}


def test_fastapi_routes_read_the_store_only_when_they_depend_on_the_session(
        store: CountingStore) -> None:
    app = FastAPI()
    app.add_middleware(SessionMiddleware, secret_key="k", store=store, preload=False)

    @app.post("/cart/{item}")
    async def add(item: str, session: SessionDep) -> list[str]:
        session["cart"] = [*session.get("cart", []), item]
        return session["cart"]

    @app.get("/cart")
    def cart(session: SessionDep) -> list[str]:  # a def route: loaded before it runs
        return session.get("cart", [])

    @app.get("/health")
    async def health() -> str:
        return "ok"

    client = FastAPIClient(app)
    client.post("/cart/apple")
    assert client.post("/cart/pear").json() == ["apple", "pear"]
    store.reset()
    assert client.get("/health").json() == "ok" and store.calls == {}
    assert client.get("/cart").json() == ["apple", "pear"] and store.calls == {"load": 1}


@pytest.fixture
def redis_server() -> Iterator[Any]:
    server = start_or_skip(start_redis)
    yield server
    server.stop()


def test_a_store_outage_met_by_an_on_demand_load_answers_503(
        redis_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    client = TestClient(on_demand_app(redis_server.url))
    assert client.post("/loaded-set", json={"a": 1}).status_code == 200
    redis_server.stop()

    assert client.get("/health").text == "ok"  # never needed the store
    with caplog.at_level(logging.ERROR, logger="sessionkeeper"):
        loading = client.get("/loaded")
    assert loading.status_code == 503 and "set-cookie" not in loading.headers
    assert "Sessions are temporarily unavailable" in loading.text
    assert "answering 503" in caplog.text
