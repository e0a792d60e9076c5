"""A Starlette app on sessionkeeper's ``SessionMiddleware``, for the ASGI tests.

``make_app(**middleware_options)`` builds it in-process; ``app`` is the same app built
from the environment, for uvicorn: ``SK_STORE`` ("cookie" or a store URL),
``SK_SECRET_KEY``, ``SK_SQLITE_TIMEOUT`` (seconds an SQLite write waits for a lock) and
``SK_MAX_AGE`` (session lifetime, seconds). ``cachelib+redis://host:port/db`` stands for a
cachelib ``RedisCache`` (an object, as cachelib has no URL of its own).
"""

from __future__ import annotations

import os
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from sessionkeeper.starlette import SessionMiddleware
from sessionkeeper.stores.sqlite import SQLiteStore

CACHELIB_REDIS = "cachelib+redis://"


def _body(request: Request | WebSocket) -> dict[str, Any]:
    session = request.session
    return {"session": session, "user": getattr(session, "user_id", None)}


async def view(request: Request) -> JSONResponse:
    return JSONResponse(_body(request))


def sync_view(request: Request) -> JSONResponse:
    """A ``def`` endpoint: Starlette runs it in a worker thread."""
    return JSONResponse(_body(request))


async def set_values(request: Request) -> JSONResponse:
    request.session.update(await request.json())
    return JSONResponse(_body(request))


async def set_key(request: Request) -> JSONResponse:
    """Set one key after holding the session a while (``linger`` seconds), so that
    concurrent requests all save from the same stale state."""
    session = request.session
    session.get("-")  # read now, before the others write
    await anyio.sleep(float(request.query_params.get("linger", 0)))
    session[request.path_params["key"]] = True
    return JSONResponse({"ok": True})


async def append(request: Request) -> JSONResponse:
    """Change a list in the session in place: ``session[key].append(value)``."""
    request.session[request.path_params["key"]].append(await request.json())
    return JSONResponse(_body(request))


async def login(request: Request) -> JSONResponse:
    request.session.login((await request.json())["user"])
    return JSONResponse(_body(request))


async def logout(request: Request) -> JSONResponse:
    request.session.logout()
    return JSONResponse(_body(request))


async def clear(request: Request) -> JSONResponse:
    request.session.clear()
    return JSONResponse(_body(request))


async def fail(request: Request) -> Response:
    """Writes to the session, then answers 500."""
    request.session["failed"] = True
    return PlainTextResponse("failed", status_code=500)


async def health(request: Request) -> PlainTextResponse:
    """Never touches the session."""
    return PlainTextResponse("ok")


async def socket(websocket: WebSocket) -> None:
    """The session is there at the handshake."""
    await websocket.accept()
    await websocket.send_json(_body(websocket))
    await websocket.close()


ROUTES = [
    Route("/view", view),
    Route("/sync", sync_view),
    Route("/set", set_values, methods=["POST"]),
    Route("/set/{key}", set_key, methods=["POST"]),
    Route("/append/{key}", append, methods=["POST"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/clear", clear, methods=["POST"]),
    Route("/fail", fail, methods=["POST"]),
    Route("/health", health),
    WebSocketRoute("/socket", socket),
]


def make_app(secret_key: str = "test secret", **options: Any) -> Starlette:
    return Starlette(routes=ROUTES, middleware=[
        Middleware(SessionMiddleware, secret_key=secret_key, **options)])


def _from_environment() -> Starlette:
    store: Any = os.environ.get("SK_STORE", "cookie")
    timeout = os.environ.get("SK_SQLITE_TIMEOUT")
    if store == "cookie":
        store = None
    elif store.startswith("sqlite:///") and timeout:
        store = SQLiteStore(store.removeprefix("sqlite:///"), timeout=float(timeout))
    elif store.startswith(CACHELIB_REDIS):
        from cachelib import RedisCache

        address, _, db = store.removeprefix(CACHELIB_REDIS).partition("/")
        host, _, port = address.partition(":")
        store = RedisCache(host, int(port), db=int(db or 0))
    options: dict[str, Any] = {}
    if "SK_MAX_AGE" in os.environ:
        options["max_age"] = int(os.environ["SK_MAX_AGE"])
    return make_app(os.environ.get("SK_SECRET_KEY", "test secret"), store=store,
                    breaker_seconds=float(os.environ.get("SK_BREAKER_SECONDS", "5")),
                    **options)


app = _from_environment() if os.environ.get("SK_STORE") else None
