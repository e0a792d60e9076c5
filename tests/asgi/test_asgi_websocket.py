"""Websockets: the session at the handshake, ``await session.save()`` from the socket, and
``await session.revalidate()`` noticing a logout or a revocation made over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import start_or_skip, start_redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from sessionkeeper.errors import StoreUnavailable
from sessionkeeper.starlette import SessionMiddleware
from sessionkeeper.stores.memory import MemoryStore


async def login(request: Request) -> JSONResponse:
    request.session.login(request.path_params["user"])
    request.session["visits"] = 1
    return JSONResponse({"user": request.session.user_id})


async def logout(request: Request) -> JSONResponse:
    request.session.logout()
    return JSONResponse({})


async def show(request: Request) -> JSONResponse:
    return JSONResponse(dict(request.session))


async def chat(websocket: WebSocket) -> None:
    """Commands from the client: "count" saves visits+1, "check" revalidates,
    "login" tries to log in on the socket."""
    await websocket.accept()
    session = websocket.session
    while True:
        try:
            command = await websocket.receive_text()
        except WebSocketDisconnect:
            return
        try:
            if command == "count":
                session["visits"] = session.get("visits", 0) + 1
                await session.save()
                await websocket.send_json({"visits": session["visits"]})
            elif command == "check":
                await websocket.send_json({"valid": await session.revalidate()})
            elif command == "login":
                session.login("someone")
                await session.save()
                await websocket.send_json({"saved": True})
        except RuntimeError as exc:
            await websocket.send_json({"refused": str(exc)})
        except StoreUnavailable:
            await websocket.send_json({"unavailable": True})


def make_app(store: Any) -> Starlette:
    return Starlette(routes=[
        Route("/login/{user}", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/show", show),
        WebSocketRoute("/chat", chat),
    ], middleware=[Middleware(SessionMiddleware, secret_key="test secret", store=store,
                              breaker_seconds=0)])


@pytest.fixture(params=["memory", "sqlite"])
def browser(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    store = MemoryStore() if request.param == "memory" else f"sqlite:///{tmp_path / 's.db'}"
    with TestClient(make_app(store)) as client:
        yield client


def test_a_socket_saves_what_a_later_request_reads(browser: TestClient) -> None:
    browser.post("/login/laowang")
    with browser.websocket_connect("/chat") as socket:
        socket.send_text("count")
        assert socket.receive_json() == {"visits": 2}
        socket.send_text("count")
        assert socket.receive_json() == {"visits": 3}
    assert browser.get("/show").json() == {"visits": 3}


def test_revalidate_turns_false_after_a_logout_over_http(browser: TestClient) -> None:
    browser.post("/login/laowang")
    other_tab = TestClient(browser.app)
    other_tab.cookies.set("session", browser.cookies["session"])
    with browser.websocket_connect("/chat") as socket:
        socket.send_text("check")
        assert socket.receive_json() == {"valid": True}
        other_tab.post("/logout")
        socket.send_text("check")
        assert socket.receive_json() == {"valid": False}
        socket.send_text("count")  # a save of the ended session does not recreate it
        socket.receive_json()
    assert browser.get("/show").json() == {}


def test_a_socket_cannot_give_the_browser_a_new_id(browser: TestClient) -> None:
    browser.post("/login/laowang")
    with browser.websocket_connect("/chat") as socket:
        socket.send_text("login")
        assert "cannot give the browser a new session id" in socket.receive_json()["refused"]
    assert browser.get("/show").json() == {"visits": 1}


def test_a_cookie_session_cannot_be_saved_on_a_socket() -> None:
    with TestClient(make_app(None)) as browser, browser.websocket_connect("/chat") as socket:
        socket.send_text("count")
        assert "only an HTTP response can set the cookie" in socket.receive_json()["refused"]
        socket.send_text("check")
        assert socket.receive_json() == {"valid": True}


def test_a_store_down_at_save_or_revalidate_is_store_unavailable() -> None:
    redis = start_or_skip(start_redis)
    try:
        with TestClient(make_app(redis.url)) as browser:
            browser.post("/login/laowang")
            with browser.websocket_connect("/chat") as socket:
                redis.stop()
                socket.send_text("count")
                assert socket.receive_json() == {"unavailable": True}
                socket.send_text("check")
                assert socket.receive_json() == {"unavailable": True}
    finally:
        redis.stop()


def test_save_and_revalidate_are_for_websockets_only() -> None:
    async def misuse(request: Request) -> JSONResponse:
        try:
            await request.session.save()
        except RuntimeError as exc:
            return JSONResponse({"refused": str(exc)})
        return JSONResponse({})

    app = Starlette(routes=[Route("/misuse", misuse)], middleware=[
        Middleware(SessionMiddleware, secret_key="test secret", store=MemoryStore())])
    with TestClient(app) as browser:
        assert "an HTTP response saves the session" in browser.get("/misuse").json()["refused"]
