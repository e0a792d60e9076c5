"""Key rotation with SECRET_KEY_FALLBACKS, on every store (signed ids) and on signed and
encrypted cookie sessions: old keys still verify and decrypt, new cookies always use
SECRET_KEY, and rotating never logs anyone out.

A rotation is an app restarted with a new SECRET_KEY and the old one in
SECRET_KEY_FALLBACKS; both apps use the same store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, jsonify, make_response, session
from flask.testing import FlaskClient
from werkzeug.wrappers import Response

from sessionkeeper.flask import get_signed_cookie, set_signed_cookie, user_sessions

MakeApp = Callable[..., Flask]
K1, K2, K3 = ("first-key-" * 4, "second-key-" * 4, "third-key-" * 4)


def add_views(app: Flask) -> Flask:
    @app.post("/login/<user_id>")
    def login(user_id: str) -> str:
        session.setdefault("cart", ["apple"])
        session.login(user_id)  # type: ignore[attr-defined]
        return "ok"

    @app.post("/cart/<item>")
    def add(item: str) -> str:
        session.setdefault("cart", []).append(item)
        return "ok"

    @app.get("/me")
    def me() -> Any:
        return jsonify(user=session.user_id,  # type: ignore[attr-defined]
                       cart=session.get("cart", []))

    @app.get("/devices")
    def devices() -> Any:
        return jsonify(len(user_sessions.list()))

    @app.post("/revoke-others")
    def revoke_others() -> Any:
        return jsonify(user_sessions.revoke_others())

    return app


@pytest.fixture
def rotated(make_app: MakeApp, app_config: dict[str, Any]) -> Callable[..., Flask]:
    """Apps of one deployment: same store, the given keys (signed ids on server stores)."""
    first: list[Flask] = []

    def build(secret: str, fallbacks: list[str] | None = None, **more: Any) -> Flask:
        config = dict(app_config)
        if config["SESSION_TYPE"] != "cookie":
            config["SESSION_USE_SIGNER"] = True
        app = add_views(make_app(config, SECRET_KEY=secret,
                                 SECRET_KEY_FALLBACKS=fallbacks or [], **more))
        if first and config["SESSION_TYPE"] != "cookie":
            # One store for all of them, as after a restart (the memory store included).
            app.extensions["sessionkeeper"].backend.store = (
                first[0].extensions["sessionkeeper"].backend.store)
        first.append(app)
        return app

    return build


def browser_with(app: Flask, value: str) -> FlaskClient:
    client = app.test_client()
    client.set_cookie("session", value)
    return client


def cookie_value(client: FlaskClient) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def test_rotating_the_key_keeps_users_logged_in(rotated: Callable[..., Flask]) -> None:
    before = rotated(K1)
    browser = before.test_client()
    browser.post("/login/42")
    old_cookie = cookie_value(browser)

    after = rotated(K2, [K1])
    returning = browser_with(after, old_cookie)

    assert returning.get("/me").json == {"user": "42", "cart": ["apple"]}
    assert returning.get("/devices").json == 1


def test_cookies_issued_after_rotation_use_the_new_key_only(rotated: Callable[..., Flask]) -> None:
    before = rotated(K1)
    browser = before.test_client()
    browser.post("/login/42")
    after = rotated(K2, [K1])
    returning = browser_with(after, cookie_value(browser))

    returning.post("/cart/pear")  # a change re-issues the cookie
    returning.post("/login/42")  # so does a new login
    reissued = cookie_value(returning)

    expected = {"user": "42", "cart": ["apple", "pear"]}
    assert browser_with(rotated(K2), reissued).get("/me").json == expected
    assert browser_with(rotated(K1), reissued).get("/me").json == {"user": None, "cart": []}


def test_an_old_key_left_out_of_the_fallbacks_no_longer_verifies(
    rotated: Callable[..., Flask],
) -> None:
    browser = rotated(K1).test_client()
    browser.post("/login/42")

    forgotten = browser_with(rotated(K2, ["some-other-key"]), cookie_value(browser))

    assert forgotten.get("/me").json == {"user": None, "cart": []}


def test_a_session_in_use_survives_two_rotations(rotated: Callable[..., Flask]) -> None:
    browser = rotated(K1).test_client()
    browser.post("/login/42")

    second = browser_with(rotated(K2, [K1]), cookie_value(browser))
    second.post("/cart/pear")  # visited meanwhile: re-issued with K2
    third = browser_with(rotated(K3, [K2]), cookie_value(second))

    assert third.get("/me").json == {"user": "42", "cart": ["apple", "pear"]}


def test_encrypted_cookie_sessions_rotate_too(make_app: MakeApp) -> None:
    encrypted = {"SESSION_TYPE": "cookie", "SESSION_COOKIE_ENCRYPT": True}
    browser = add_views(make_app(encrypted, SECRET_KEY=K1)).test_client()
    browser.post("/login/42")
    old_cookie = cookie_value(browser)
    after = add_views(make_app(encrypted, SECRET_KEY=K2, SECRET_KEY_FALLBACKS=[K1]))

    returning = browser_with(after, old_cookie)
    assert returning.get("/me").json == {"user": "42", "cart": ["apple"]}
    returning.post("/cart/pear")

    new_only = add_views(make_app(encrypted, SECRET_KEY=K2))
    old_only = add_views(make_app(encrypted, SECRET_KEY=K1))
    assert browser_with(new_only, cookie_value(returning)).get("/me").json["user"] == "42"
    assert browser_with(old_only, cookie_value(returning)).get("/me").json["user"] is None


def test_revoked_cookie_sessions_stay_revoked_across_a_rotation(make_app: MakeApp) -> None:
    before = add_views(make_app(SESSION_TYPE="cookie", SECRET_KEY=K1))
    laptop, phone = before.test_client(), before.test_client()
    laptop.post("/login/42")
    phone.post("/login/42")
    laptop.post("/revoke-others")

    after = add_views(make_app(SESSION_TYPE="cookie", SECRET_KEY=K2, SECRET_KEY_FALLBACKS=[K1]))

    assert browser_with(after, cookie_value(phone)).get("/me").json["user"] is None
    assert browser_with(after, cookie_value(laptop)).get("/me").json["user"] == "42"


def test_signed_cookies_rotate_like_the_session(make_app: MakeApp) -> None:
    def signed_cookie_app(secret: str, fallbacks: list[str]) -> Flask:
        app = make_app(SESSION_TYPE="memory", SECRET_KEY=secret, SECRET_KEY_FALLBACKS=fallbacks)

        @app.post("/theme/<name>")
        def set_theme(name: str) -> Response:
            response = make_response("ok")
            set_signed_cookie(response, "theme", name)
            return response

        @app.get("/theme")
        def theme() -> str:
            return get_signed_cookie("theme") or "none"

        return app

    browser = signed_cookie_app(K1, []).test_client()
    browser.post("/theme/dark")
    old_value = browser.get_cookie("theme").value  # type: ignore[union-attr]

    after = signed_cookie_app(K2, [K1]).test_client()
    after.set_cookie("theme", old_value)
    assert after.get("/theme").text == "dark"
    after.post("/theme/light")
    new_value = after.get_cookie("theme").value  # type: ignore[union-attr]

    old_only = signed_cookie_app(K1, []).test_client()
    old_only.set_cookie("theme", new_value)
    assert old_only.get("/theme").text == "none"
