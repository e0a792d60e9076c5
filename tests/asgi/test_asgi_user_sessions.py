"""A user's sessions from Starlette endpoints: two devices listed, one revoking the other,
"sign out everywhere else", and the cookie store saying it cannot list them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from sessionkeeper.errors import ConfigurationError
from sessionkeeper.starlette import SessionMiddleware, user_sessions
from sessionkeeper.stores.memory import MemoryStore


async def login(request: Request) -> JSONResponse:
    request.session.login("laowang")
    return JSONResponse({})


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse({"user": request.session.user_id})


async def devices(request: Request) -> JSONResponse:
    found = await user_sessions(request).list("laowang", current=request.session.sid)
    return JSONResponse([{"handle": info.handle, "current": info.current,
                          "user_agent": info.user_agent, "ip": info.ip} for info in found])


async def revoke(request: Request) -> JSONResponse:
    revoked = await user_sessions(request).revoke("laowang", request.path_params["handle"])
    return JSONResponse({"revoked": revoked})


async def sign_out_others(request: Request) -> JSONResponse:
    count = await user_sessions(request).revoke_all("laowang", keep=request.session.sid)
    return JSONResponse({"revoked": count})


def make_app(store: Any, **options: Any) -> Starlette:
    return Starlette(routes=[
        Route("/login", login, methods=["POST"]), Route("/whoami", whoami),
        Route("/devices", devices), Route("/revoke/{handle}", revoke, methods=["POST"]),
        Route("/sign-out-others", sign_out_others, methods=["POST"]),
    ], middleware=[Middleware(SessionMiddleware, secret_key="test secret", store=store,
                              **options)])


@pytest.fixture(params=["memory", "sqlite"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Starlette]:
    yield make_app(MemoryStore() if request.param == "memory"
                   else f"sqlite:///{tmp_path / 'sessions.db'}")


def test_a_device_lists_both_and_revokes_the_other(app: Starlette) -> None:
    laptop, phone = TestClient(app), TestClient(app)
    laptop.post("/login")
    phone.post("/login")
    listed = laptop.get("/devices").json()
    assert sorted(d["current"] for d in listed) == [False, True]
    other = next(d["handle"] for d in listed if not d["current"])
    assert laptop.post(f"/revoke/{other}").json() == {"revoked": True}
    assert phone.get("/whoami").json() == {"user": None}       # signed out at once
    assert laptop.get("/whoami").json() == {"user": "laowang"}
    assert [d["current"] for d in laptop.get("/devices").json()] == [True]
    assert laptop.post(f"/revoke/{other}").json() == {"revoked": False}


def test_each_device_is_listed_with_the_browser_it_logged_in_from(app: Starlette) -> None:
    laptop = TestClient(app, headers={"User-Agent": "Firefox/133.0 (laptop)"})
    phone = TestClient(app, headers={"User-Agent": "Mobile Safari/18 " + "x" * 400})
    laptop.post("/login")
    phone.post("/login")
    listed = {d["current"]: d for d in laptop.get("/devices", headers={
        "User-Agent": "Firefox/134.0 (upgraded since)"}).json()}
    assert listed[True]["user_agent"] == "Firefox/133.0 (laptop)"  # as at login
    assert listed[False]["user_agent"] == ("Mobile Safari/18 " + "x" * 400)[:256]
    assert listed[True]["ip"] is None  # recorded only when asked for


@pytest.mark.parametrize(("device_info", "expected"), [
    (("user_agent", "ip"), {"user_agent": "curl/8.5", "ip": "testclient"}),
    (["ip"], {"user_agent": None, "ip": "testclient"}),
    (None, {"user_agent": None, "ip": None}),
])
def test_device_info_says_what_is_recorded(device_info: Any, expected: dict[str, Any]) -> None:
    browser = TestClient(make_app(MemoryStore(), device_info=device_info),
                         headers={"User-Agent": "curl/8.5"})
    browser.post("/login")
    [listed] = browser.get("/devices").json()
    assert {key: listed[key] for key in expected} == expected


@pytest.mark.parametrize(("device_info", "message"), [
    ("user_agent", "device_info must be a list of"),
    (["user_agent", "mac_address"], r"device_info: unknown \['mac_address'\]"),
])
def test_a_wrong_device_info_is_refused_when_the_app_starts(device_info: Any,
                                                            message: str) -> None:
    with pytest.raises(ConfigurationError, match=message), \
            TestClient(make_app(MemoryStore(), device_info=device_info)):
        pass


def test_sign_out_everywhere_else_keeps_only_this_device(app: Starlette) -> None:
    browsers = [TestClient(app) for _ in range(3)]
    for browser in browsers:
        browser.post("/login")
    assert browsers[0].post("/sign-out-others").json() == {"revoked": 2}
    assert [b.get("/whoami").json()["user"] for b in browsers] == ["laowang", None, None]


def test_cookie_sessions_cannot_be_listed() -> None:
    with TestClient(make_app(None)) as browser, pytest.raises(
            ConfigurationError, match="only in a server store"):
        browser.get("/devices")
