"""The per-user index of the Redis, memcached, MongoDB and memory stores is scoped by
SESSION_KEY_PREFIX: apps sharing one server under different prefixes never list, show
or sign out each other's sessions, and a new prefix starts with an empty device list.

The prefixes are chosen so that one starts with the other (``...a:`` and ``...a:b:``):
a prefix match alone would mix them up.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, session
from flask.testing import FlaskClient

from sessionkeeper.flask import user_sessions

MakeApp = Callable[..., Flask]


def with_views(app: Flask) -> Flask:
    @app.post("/login/<user_id>")
    def login(user_id: str) -> str:
        session["name"] = user_id
        session.login(user_id)  # type: ignore[attr-defined]
        return "ok"

    @app.get("/me")
    def me() -> str:
        return str(session.user_id or "anonymous")  # type: ignore[attr-defined]

    @app.get("/devices")
    def devices() -> str:
        return str(len(user_sessions.list()))

    @app.post("/sign-out-everywhere")
    def sign_out_everywhere() -> str:
        return str(user_sessions.revoke_all())

    return app


def signed_in(app: Flask, user_id: str) -> FlaskClient:
    browser = app.test_client()
    assert browser.post(f"/login/{user_id}").status_code == 200
    return browser


@pytest.mark.parametrize("kind", ["redis", "memcached", "mongodb", "memory"])
def test_apps_with_different_prefixes_keep_a_users_sessions_apart(
        make_app: MakeApp, tmp_path: Path, kind: str) -> None:
    provider = importlib.import_module(f"providers.{kind}")
    config: dict[str, Any]
    with provider.flask_config(tmp_path) as config:
        base = config.get("SESSION_KEY_PREFIX", "")
        shop = with_views(make_app(config, SESSION_KEY_PREFIX=base + "a:"))
        forum = with_views(make_app(config, SESSION_KEY_PREFIX=base + "a:b:"))
        shop_laptop, shop_phone = signed_in(shop, "alice"), signed_in(shop, "alice")
        forum_laptop = signed_in(forum, "alice")

        assert shop_laptop.get("/devices").text == "2"
        assert forum_laptop.get("/devices").text == "1"

        assert forum_laptop.post("/sign-out-everywhere").text == "1"
        assert forum_laptop.get("/me").text == "anonymous"
        assert shop_laptop.get("/me").text == "alice"  # the other app is left alone
        assert shop_phone.get("/me").text == "alice"
        assert shop_phone.get("/devices").text == "2"

        # A new prefix (how docs/security.md ends every session) lists none of the old.
        renamed = with_views(make_app(config, SECRET_KEY=shop.config["SECRET_KEY"],
                                      SESSION_KEY_PREFIX=base + "c:"))
        assert signed_in(renamed, "alice").get("/devices").text == "1"
