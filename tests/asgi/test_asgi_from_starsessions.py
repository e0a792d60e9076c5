"""An app written for starsessions, switched by changing its imports and its middleware
line: its ``load_session``/``get_session_id``/``regenerate_session_id`` calls and its
autoload middleware keep working, on a server store."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from sessionkeeper.errors import ConfigurationError
from sessionkeeper.starlette import (  # was: from starsessions import ...
    SessionAutoloadMiddleware,
    SessionMiddleware,
    get_session_id,
    is_loaded,
    load_session,
    regenerate_session_id,
)


async def login(request: Request) -> JSONResponse:
    await load_session(request)
    request.session["user"] = "laowang"
    regenerate_session_id(request)  # a new id at login, as starsessions' docs advise
    return JSONResponse({})


async def index(request: Request) -> JSONResponse:
    await load_session(request)
    return JSONResponse({"user": request.session.get("user"), "loaded": is_loaded(request),
                         "id": get_session_id(request)})


def make_app(store: str) -> Starlette:
    return Starlette(routes=[Route("/", index), Route("/login", login, methods=["POST"])],
                     middleware=[
                         Middleware(SessionMiddleware, secret_key="change me", store=store),
                         Middleware(SessionAutoloadMiddleware),
                     ])


@pytest.fixture(params=["memory", "sqlite"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Starlette:
    return make_app("memory://" if request.param == "memory"
                    else f"sqlite:///{tmp_path / 'sessions.db'}")


def test_a_starsessions_app_keeps_its_login_across_requests(app: Starlette) -> None:
    browser = TestClient(app)
    assert browser.get("/").json() == {"user": None, "loaded": True, "id": None}
    browser.post("/login")
    seen = browser.get("/").json()
    assert seen["user"] == "laowang" and seen["loaded"] is True
    assert seen["id"] == browser.cookies["session"]  # the id the cookie carries


def test_regenerate_session_id_gives_a_new_id_and_ends_the_old_one(app: Starlette) -> None:
    browser = TestClient(app)
    browser.post("/login")
    before = browser.cookies["session"]
    browser.post("/login")
    after = browser.cookies["session"]
    assert after != before
    assert browser.get("/").json()["user"] == "laowang"
    replay = TestClient(app, cookies={"session": before})
    assert replay.get("/").json()["user"] is None


def test_the_helpers_say_when_the_middleware_is_missing() -> None:
    app = Starlette(routes=[Route("/", index)])
    with pytest.raises(ConfigurationError, match=r"add app\.add_middleware"):
        TestClient(app).get("/")
