"""Flask-Login on sessionkeeper, on every store: ``login_user`` and ``logout_user`` bind
and end sessions as ``session.login`` and ``session.logout`` do, with no extra code.

What a user sees: after ``login_user`` the session has a new id (a cookie planted or
copied before login is not logged in) and the session is listed among the user's; after
``logout_user`` the record and the cookie are gone, a copy of the cookie is worthless,
and a remember-me cookie cannot bring the user back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, flash, get_flashed_messages, jsonify, request, session
from flask.testing import FlaskClient

flask_login = pytest.importorskip("flask_login", reason="flask-login (pip install flask-login)")
from flask_login import (  # noqa: E402
    LoginManager,
    UserMixin,
    current_user,
    login_user,
    logout_user,
)

from sessionkeeper.flask import user_sessions  # noqa: E402
from sessionkeeper.server_side import ServerSideSessions  # noqa: E402

USERS = ("alice", "bob")
DEVICE_A = "device-A/1.0"
DEVICE_B = "device-B/1.0"
REMEMBER_COOKIE = "remember_token"  # Flask-Login's default REMEMBER_COOKIE_NAME


class User(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def add_login_views(app: Flask) -> None:
    """A Flask-Login app as its docs show it, plus views that report what they see."""

    @app.post("/login/<user_id>")
    def login(user_id: str) -> str:
        if user_id not in USERS:
            return "no such user", 404
        login_user(User(user_id), remember=request.args.get("remember") == "1")
        return "logged in"

    @app.post("/logout")
    def logout() -> str:
        logout_user()
        return "logged out"

    @app.post("/logout-and-flash")
    def logout_and_flash() -> str:
        logout_user()
        flash("You were logged out")  # the usual Flask-Login logout view
        return "logged out"

    @app.get("/whoami")
    def whoami() -> str:
        return str(current_user.get_id()) if current_user.is_authenticated else "anonymous"

    @app.get("/flashes")
    def flashes() -> Any:
        return jsonify(get_flashed_messages())

    @app.get("/cart/add/<item>")
    def cart_add(item: str) -> Any:
        session.setdefault("cart", []).append(item)
        return jsonify(session["cart"])

    @app.get("/cart")
    def cart() -> Any:
        return jsonify(session.get("cart", []))

    @app.get("/devices")
    def devices() -> Any:
        return jsonify([{"current": info.current, "user_agent": info.user_agent}
                        for info in user_sessions.list()])

    @app.get("/sessions-of/<user_id>")
    def sessions_of(user_id: str) -> Any:
        return jsonify(len(user_sessions.list(user_id)))


def add_login_manager(app: Flask) -> LoginManager:
    manager = LoginManager(app)

    @manager.user_loader
    def load_user(user_id: str) -> User | None:
        return User(user_id) if user_id in USERS else None

    return manager


@pytest.fixture
def login_app(make_app: Callable[..., Flask], app_config: dict[str, Any]) -> Flask:
    app = make_app(app_config)
    add_login_manager(app)
    add_login_views(app)
    return app


# -- helpers -------------------------------------------------------------------------
def cookie_name(app: Flask) -> str:
    return str(app.extensions["sessionkeeper"].interface.cookie_name)


def session_cookie(app: Flask, client: FlaskClient) -> str | None:
    cookie = client.get_cookie(cookie_name(app))
    return cookie.value if cookie is not None else None


def device(app: Flask, user_agent: str, cookie: str | None = None) -> FlaskClient:
    """A client with its own cookie jar and browser name, optionally holding ``cookie``."""
    client = app.test_client()
    client.environ_base["HTTP_USER_AGENT"] = user_agent
    if cookie is not None:
        client.set_cookie(cookie_name(app), cookie)
    return client


def server_side(app: Flask) -> ServerSideSessions | None:
    backend = app.extensions["sessionkeeper"].backend
    return backend if isinstance(backend, ServerSideSessions) else None


def stored(app: Flask, cookie: str) -> bool:
    """True when the store still holds the session this cookie names."""
    backend = server_side(app)
    assert backend is not None
    sid = backend.sid_from_token(cookie)
    assert sid is not None
    return backend.store.load(backend.key(sid), backend.clock()) is not None


def cookie_deleted(response: Any, name: str) -> bool:
    headers = response.headers.getlist("Set-Cookie")
    return any(h.startswith(f"{name}=;") and ("Max-Age=0" in h or "1970" in h)
               for h in headers)


# -- login_user ------------------------------------------------------------------------
def test_login_user_gives_a_new_session_id_and_keeps_the_data(login_app: Flask) -> None:
    client = device(login_app, DEVICE_A)
    assert client.get("/cart/add/apple").json == ["apple"]
    before = session_cookie(login_app, client)
    assert before is not None

    assert client.post("/login/alice").text == "logged in"
    after = session_cookie(login_app, client)
    assert after is not None and after != before
    assert client.get("/whoami").text == "alice"
    assert client.get("/cart").json == ["apple"]  # the data came along

    # Whoever planted or copied the cookie before login is not logged in by it.
    planted = device(login_app, DEVICE_A, cookie=before)
    assert planted.get("/whoami").text == "anonymous"
    if server_side(login_app) is not None:
        assert not stored(login_app, before)  # the old record is gone, not just unused
        assert stored(login_app, after)


def test_login_user_lists_the_session_among_the_users(login_app: Flask) -> None:
    client = device(login_app, DEVICE_A)
    client.post("/login/alice")
    assert client.get("/devices").json == [{"current": True, "user_agent": DEVICE_A}]
    if server_side(login_app) is not None:
        other = device(login_app, DEVICE_B)
        other.post("/login/alice")
        listed = other.get("/devices").json
        assert sorted(listed, key=lambda d: d["user_agent"]) == [
            {"current": False, "user_agent": DEVICE_A},
            {"current": True, "user_agent": DEVICE_B},
        ]
        assert device(login_app, DEVICE_B).get("/sessions-of/bob").json == 0


def test_login_as_another_user_moves_the_session_to_that_user(login_app: Flask) -> None:
    client = device(login_app, DEVICE_A)
    client.post("/login/alice")
    first = session_cookie(login_app, client)
    client.post("/login/bob")
    assert session_cookie(login_app, client) != first
    assert client.get("/whoami").text == "bob"
    if server_side(login_app) is not None:
        assert client.get("/sessions-of/alice").json == 0
        assert client.get("/sessions-of/bob").json == 1


# -- logout_user -----------------------------------------------------------------------
def test_logout_user_destroys_the_record_and_the_cookie(login_app: Flask) -> None:
    client = device(login_app, DEVICE_A)
    client.get("/cart/add/apple")
    client.post("/login/alice")
    copied = session_cookie(login_app, client)
    assert copied is not None

    response = client.post("/logout")
    assert response.text == "logged out"
    assert cookie_deleted(response, cookie_name(login_app))
    assert session_cookie(login_app, client) is None
    assert client.get("/whoami").text == "anonymous"
    assert client.get("/cart").json == []  # logout ends the whole session, not just the login

    if server_side(login_app) is not None:
        assert not stored(login_app, copied)
        # A copy of the cookie taken before logout is worthless on a server-side store.
        assert device(login_app, DEVICE_A, cookie=copied).get("/whoami").text == "anonymous"
        assert client.get("/sessions-of/alice").json == 0


def test_logout_user_ends_only_this_device(login_app: Flask) -> None:
    laptop, phone = device(login_app, DEVICE_A), device(login_app, DEVICE_B)
    laptop.post("/login/alice")
    phone.post("/login/alice")
    laptop.post("/logout")
    assert laptop.get("/whoami").text == "anonymous"
    assert phone.get("/whoami").text == "alice"
    assert phone.get("/devices").json == [{"current": True, "user_agent": DEVICE_B}]


def test_a_flash_after_logout_user_is_shown_logged_out(login_app: Flask) -> None:
    client = device(login_app, DEVICE_A)
    client.post("/login/alice")
    copied = session_cookie(login_app, client)
    client.post("/logout-and-flash")
    assert client.get("/flashes").json == ["You were logged out"]
    assert client.get("/whoami").text == "anonymous"
    assert client.get("/flashes").json == []  # shown once
    if server_side(login_app) is not None:
        assert copied is not None and not stored(login_app, copied)


def test_remember_me_cookie_cannot_log_the_user_back_in(login_app: Flask) -> None:
    client = device(login_app, DEVICE_A)
    client.post("/login/alice?remember=1")
    assert client.get_cookie(REMEMBER_COOKIE) is not None
    response = client.post("/logout")
    assert cookie_deleted(response, REMEMBER_COOKIE)
    assert client.get_cookie(REMEMBER_COOKIE) is None
    assert client.get("/whoami").text == "anonymous"


def test_remember_me_cookie_logs_in_again_with_a_fresh_bound_session(
        login_app: Flask) -> None:
    client = device(login_app, DEVICE_A)
    client.post("/login/alice?remember=1")
    remember = client.get_cookie(REMEMBER_COOKIE)
    assert remember is not None
    # The browser was closed: the session cookie is gone, the remember-me one is not.
    returning = device(login_app, DEVICE_B)
    returning.set_cookie(REMEMBER_COOKIE, remember.value)
    assert returning.get("/whoami").text == "alice"
    assert returning.get("/whoami").text == "alice"
    # Signed back in by the cookie, the new session is one of alice's like any login.
    assert {"current": True, "user_agent": DEVICE_B} in returning.get("/devices").json


# -- wiring ------------------------------------------------------------------------------
def test_login_manager_set_up_before_session_works_the_same(
        app_config: dict[str, Any], tmp_path: Any) -> None:
    from sessionkeeper.flask import Session

    app = Flask("login_first", instance_path=str(tmp_path / "instance"))
    app.config.update(SECRET_KEY="s" * 32, TESTING=True, **app_config)
    add_login_manager(app)
    Session(app)
    add_login_views(app)
    client = device(app, DEVICE_A)
    client.get("/cart/add/pear")
    before = session_cookie(app, client)
    client.post("/login/alice")
    assert session_cookie(app, client) != before
    assert client.get("/whoami").text == "alice"
    assert device(app, DEVICE_A, cookie=before).get("/whoami").text == "anonymous"
    client.post("/logout")
    assert session_cookie(app, client) is None
    assert client.get("/whoami").text == "anonymous"


def test_an_app_without_sessionkeeper_is_left_alone(login_app: Flask) -> None:
    # Flask-Login's signals are process-wide; a plain Flask app beside a sessionkeeper
    # app must keep Flask's own cookie session, untouched by sessionkeeper's receivers.
    plain = Flask("plain")
    plain.config.update(SECRET_KEY="p" * 32, TESTING=True)
    add_login_manager(plain)

    @plain.post("/login/<user_id>")
    def plain_login(user_id: str) -> str:
        login_user(User(user_id))
        return "logged in"

    @plain.post("/logout")
    def plain_logout() -> str:
        logout_user()
        return "logged out"

    @plain.get("/whoami")
    def plain_whoami() -> str:
        return str(current_user.get_id()) if current_user.is_authenticated else "anonymous"

    client = plain.test_client()
    assert client.post("/login/alice").text == "logged in"
    assert client.get("/whoami").text == "alice"
    assert client.post("/logout").text == "logged out"
    assert client.get("/whoami").text == "anonymous"
    # And the sessionkeeper app beside it still works.
    other = device(login_app, DEVICE_A)
    other.post("/login/bob")
    assert other.get("/whoami").text == "bob"
