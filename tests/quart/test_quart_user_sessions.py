"""A user's sessions from Quart views: two devices listed with their browsers, one
revoking the other, "sign out everywhere else", and cookie sessions saying they cannot
be listed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from quart import Quart, session
from quart_helpers import Browser, in_event_loop

from sessionkeeper.errors import ConfigurationError
from sessionkeeper.quart import Session, user_sessions


def make_app(config: dict[str, Any], tmp_path: Path) -> Quart:
    app = Quart(__name__, instance_path=str(tmp_path))
    app.config.update(SECRET_KEY="test secret", **config)
    Session(app)

    @app.post("/login")
    async def login() -> str:
        session.login("laowang")
        return "ok"

    @app.get("/whoami")
    async def whoami() -> dict[str, Any]:
        return {"user": session.user_id}

    @app.get("/devices")
    async def devices() -> list[dict[str, Any]]:
        found = await user_sessions().list("laowang", current=session.sid)
        return [{"handle": s.handle, "current": s.current, "user_agent": s.user_agent}
                for s in found]

    @app.post("/revoke/<handle>")
    async def revoke(handle: str) -> dict[str, bool]:
        return {"revoked": await user_sessions().revoke("laowang", handle)}

    @app.post("/sign-out-others")
    async def sign_out_others() -> dict[str, int]:
        return {"revoked": await user_sessions().revoke_all("laowang", keep=session.sid)}

    return app


@pytest.fixture(params=["memory", "sqlite"])
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Quart:
    config: dict[str, Any] = {"SESSION_TYPE": request.param}
    if request.param == "sqlite":
        config["SESSION_SQLITE_PATH"] = str(tmp_path / "sessions.sqlite3")
    return make_app(config, tmp_path)


@in_event_loop
async def test_a_device_lists_both_and_revokes_the_other(app: Quart) -> None:
    laptop, phone = Browser(app), Browser(app)
    await laptop.post("/login", headers={"User-Agent": "Firefox (laptop)"})
    await phone.post("/login", headers={"User-Agent": "Safari (phone)"})
    listed = await (await laptop.get("/devices")).get_json()
    assert sorted((d["user_agent"], d["current"]) for d in listed) == [
        ("Firefox (laptop)", True), ("Safari (phone)", False)]
    other = next(d["handle"] for d in listed if not d["current"])
    assert await (await laptop.post(f"/revoke/{other}")).get_json() == {"revoked": True}
    assert await (await phone.get("/whoami")).get_json() == {"user": None}
    assert await (await laptop.get("/whoami")).get_json() == {"user": "laowang"}


@in_event_loop
async def test_sign_out_everywhere_else_keeps_only_this_device(app: Quart) -> None:
    browsers = [Browser(app) for _ in range(3)]
    for browser in browsers:
        await browser.post("/login")
    assert await (await browsers[0].post("/sign-out-others")).get_json() == {"revoked": 2}
    users = [(await (await b.get("/whoami")).get_json())["user"] for b in browsers]
    assert users == ["laowang", None, None]


@in_event_loop
async def test_cookie_sessions_cannot_be_listed(tmp_path: Path) -> None:
    app = make_app({"SESSION_TYPE": "cookie"}, tmp_path)
    browser = Browser(app)
    await browser.post("/login")
    async with app.test_request_context("/devices"):
        with pytest.raises(ConfigurationError, match="only in a server store"):
            user_sessions()
