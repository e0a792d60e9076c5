"""Login binding and logout, on every store and on cookie sessions (ASVS 3.2.1, 3.3.1).

``session.login(user_id)`` gives the session a new id while keeping its data, retires
the old id, records the user (listed among the user's sessions) and what the device is;
``session.logout()`` destroys the record and the cookie, so a copy of the cookie is
worthless afterwards. ``session.clear()`` - Flask's classic logout - unbinds the user too.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, flash, get_flashed_messages, jsonify, request, session
from flask.testing import FlaskClient

from sessionkeeper.flask import FlaskSession, user_sessions
from sessionkeeper.model import DEVICE_KEY
from sessionkeeper.server_side import ServerSideSessions

MakeApp = Callable[..., Flask]
PHONE = "Mozilla/5.0 (Linux; Android 14) Mobile"


def add_views(app: Flask) -> Flask:
    @app.post("/cart/<item>")
    def add_to_cart(item: str) -> str:
        session.setdefault("cart", []).append(item)
        return "added"

    @app.post("/login/<user_id>")
    def login(user_id: str) -> str:
        session.login(user_id)  # type: ignore[attr-defined]
        return "logged in"

    @app.post("/logout")
    def logout() -> str:
        session.logout()  # type: ignore[attr-defined]
        return "logged out"

    @app.post("/logout-and-flash")
    def logout_and_flash() -> str:
        session.logout()  # type: ignore[attr-defined]
        flash("See you soon")
        return "logged out"

    @app.post("/clear-and-flash")
    def clear_and_flash() -> str:
        session.clear()  # the Flask tutorial's logout
        flash("See you soon")
        return "cleared"

    @app.get("/me")
    def me() -> Any:
        return jsonify(user=session.user_id,  # type: ignore[attr-defined]
                       keys=sorted(session), size=len(session),
                       device_key_visible=DEVICE_KEY in session,
                       cart=session.get("cart", []))

    @app.get("/flashes")
    def flashes() -> Any:
        return jsonify(get_flashed_messages())

    @app.get("/device")
    def device() -> Any:
        current = session._get_current_object()  # type: ignore[attr-defined]
        assert isinstance(current, FlaskSession)
        return jsonify(current.device)

    @app.get("/devices")
    def devices() -> Any:
        return jsonify([info.handle for info in user_sessions.list(request.args.get("user"))])

    return app


def token(client: FlaskClient) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None, "no session cookie"
    return cookie.value


def replay(app: Flask, value: str) -> FlaskClient:
    """A second browser holding a copy of a cookie value."""
    copy = app.test_client()
    copy.set_cookie("session", value)
    return copy


def deletes_cookie(response: Any) -> bool:
    return any(h.startswith("session=;") and "Max-Age=0" in h
               for h in response.headers.getlist("Set-Cookie"))


@pytest.fixture
def server_config(store_kind: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Every server-side store (the per-user index lives there)."""
    provider = importlib.import_module(f"providers.{store_kind}")
    with provider.flask_config(tmp_path) as config:
        yield config


def backend_of(app: Flask) -> ServerSideSessions:
    made = app.extensions["sessionkeeper"].backend
    assert isinstance(made, ServerSideSessions)
    return made


# -- login --------------------------------------------------------------------------------


def test_login_issues_a_new_id_and_keeps_the_data(make_app: MakeApp,
                                                  app_config: dict[str, Any]) -> None:
    app = add_views(make_app(app_config))
    browser = app.test_client()
    browser.post("/cart/apple")
    before = token(browser)

    response = browser.post("/login/42")

    after = token(browser)
    assert response.status_code == 200 and after != before
    assert browser.get("/me").json == {"user": "42", "keys": ["cart"], "size": 1,
                                       "device_key_visible": False, "cart": ["apple"]}
    # The cookie from before login (planted by an attacker, say) is not logged in.
    assert replay(app, before).get("/me").json["user"] is None


def test_the_id_from_before_login_stops_working_at_once(make_app: MakeApp,
                                                        server_config: dict[str, Any]) -> None:
    app = add_views(make_app(server_config))
    browser = app.test_client()
    browser.post("/cart/apple")
    before = token(browser)

    browser.post("/login/42")

    stale = replay(app, before)
    assert stale.get("/me").json == {"user": None, "keys": [], "size": 0,
                                     "device_key_visible": False, "cart": []}
    backend = backend_of(app)
    assert backend.store.load(backend.key(before), backend.clock()) is None


def test_login_records_the_user_in_the_per_user_index(make_app: MakeApp,
                                                      server_config: dict[str, Any]) -> None:
    app = add_views(make_app(server_config))
    browser = app.test_client()

    browser.post("/login/user-7")

    backend = backend_of(app)
    assert backend.store.keys_for_user("user-7", backend.clock()) == [
        backend.key(token(browser))]
    assert browser.get("/devices").json and len(browser.get("/devices").json) == 1


def test_logging_in_as_someone_else_moves_the_session_between_users(
    make_app: MakeApp, server_config: dict[str, Any],
) -> None:
    app = add_views(make_app(server_config))
    browser = app.test_client()
    browser.post("/login/alice")

    browser.post("/login/bob")

    backend = backend_of(app)
    now = backend.clock()
    assert backend.store.keys_for_user("alice", now) == []
    assert backend.store.keys_for_user("bob", now) == [backend.key(token(browser))]
    assert browser.get("/me").json["user"] == "bob"


def test_a_login_with_no_other_data_is_kept(make_app: MakeApp,
                                            app_config: dict[str, Any]) -> None:
    app = add_views(make_app(app_config, SESSION_DEVICE_INFO=()))
    browser = app.test_client()

    response = browser.post("/login/42")

    assert "session=" in response.headers.get("Set-Cookie", "")
    assert browser.get("/me").json["user"] == "42"


# -- device details -----------------------------------------------------------------------


def test_login_records_the_user_agent_but_not_the_address_by_default(
    make_app: MakeApp, app_config: dict[str, Any],
) -> None:
    app = add_views(make_app(app_config))
    browser = app.test_client()

    browser.post("/login/42", headers={"User-Agent": PHONE})

    assert browser.get("/device").json == {"user_agent": PHONE}


def test_the_address_is_recorded_only_when_configured(make_app: MakeApp,
                                                      app_config: dict[str, Any]) -> None:
    app = add_views(make_app(app_config, SESSION_DEVICE_INFO=["user_agent", "ip"]))
    browser = app.test_client()

    browser.post("/login/42", headers={"User-Agent": PHONE},
                 environ_base={"REMOTE_ADDR": "203.0.113.9"})

    assert browser.get("/device").json == {"user_agent": PHONE, "ip": "203.0.113.9"}


def test_a_long_user_agent_is_cut_to_256_characters(make_app: MakeApp,
                                                   app_config: dict[str, Any]) -> None:
    app = add_views(make_app(app_config))
    browser = app.test_client()

    browser.post("/login/42", headers={"User-Agent": "x" * 3000})

    assert browser.get("/device").json == {"user_agent": "x" * 256}


def test_device_details_stay_out_of_the_apps_view(make_app: MakeApp,
                                                  app_config: dict[str, Any]) -> None:
    app = add_views(make_app(app_config))
    browser = app.test_client()
    browser.post("/cart/pear")

    browser.post("/login/42", headers={"User-Agent": PHONE})

    seen = browser.get("/me").json
    assert seen["keys"] == ["cart"] and seen["size"] == 1
    assert seen["device_key_visible"] is False


def test_apps_cannot_write_reserved_keys(make_app: MakeApp, app_config: dict[str, Any]) -> None:
    app = add_views(make_app(app_config))

    @app.post("/forge")
    def forge() -> str:
        try:
            session[DEVICE_KEY] = {"user_agent": "forged"}
        except KeyError as error:
            return f"refused: {error}"
        return "accepted"

    assert app.test_client().post("/forge").text.startswith("refused")


# -- logout -------------------------------------------------------------------------------


def test_logout_deletes_the_cookie_and_a_copy_of_it_is_worthless(
    make_app: MakeApp, app_config: dict[str, Any],
) -> None:
    app = add_views(make_app(app_config))
    browser = app.test_client()
    browser.post("/cart/apple")
    browser.post("/login/42")
    copied = token(browser)

    response = browser.post("/logout")

    assert deletes_cookie(response)
    assert browser.get("/me").json["user"] is None
    # The back button or a stolen copy cannot resume the session (cookie sessions too).
    assert replay(app, copied).get("/me").json == {
        "user": None, "keys": [], "size": 0, "device_key_visible": False, "cart": []}


def test_logout_removes_the_record_and_the_index_entry(make_app: MakeApp,
                                                       server_config: dict[str, Any]) -> None:
    app = add_views(make_app(server_config))
    browser = app.test_client()
    browser.post("/login/42")
    copied = token(browser)

    browser.post("/logout")

    backend = backend_of(app)
    now = backend.clock()
    assert backend.store.load(backend.key(copied), now) is None
    assert backend.store.keys_for_user("42", now) == []


def test_data_written_after_logout_starts_a_new_anonymous_session(
    make_app: MakeApp, app_config: dict[str, Any],
) -> None:
    app = add_views(make_app(app_config))
    browser = app.test_client()
    browser.post("/cart/apple")
    browser.post("/login/42")
    copied = token(browser)

    browser.post("/logout-and-flash")

    assert token(browser) != copied
    assert browser.get("/flashes").json == ["See you soon"]
    assert browser.get("/me").json == {"user": None, "keys": [], "size": 0,
                                       "device_key_visible": False, "cart": []}
    assert replay(app, copied).get("/me").json["user"] is None


def test_clear_unbinds_the_user_even_when_the_view_writes_afterwards(
    make_app: MakeApp, app_config: dict[str, Any],
) -> None:
    app = add_views(make_app(app_config))
    browser = app.test_client()
    browser.post("/login/42")

    browser.post("/clear-and-flash")

    assert browser.get("/me").json["user"] is None
    assert browser.get("/flashes").json == ["See you soon"]
    assert app.test_client().get("/devices?user=42").json == []


def test_logout_of_an_anonymous_visitor_sets_no_cookie(make_app: MakeApp,
                                                       app_config: dict[str, Any]) -> None:
    app = add_views(make_app(app_config))

    response = app.test_client().post("/logout")

    assert response.status_code == 200
    assert response.headers.getlist("Set-Cookie") == []


# -- Flask-Login's remember-me cookie -------------------------------------------------------


def test_a_remember_me_cookie_login_is_bound_like_any_login(make_app: MakeApp,
                                                            app_config: dict[str, Any]) -> None:
    flask_login = pytest.importorskip("flask_login", reason="flask-login")

    class User(flask_login.UserMixin):  # type: ignore[misc, name-defined]
        def __init__(self, user_id: str) -> None:
            self.id = user_id

    app = add_views(make_app(app_config))
    manager = flask_login.LoginManager(app)
    manager.user_loader(User)

    @app.post("/remember-me/<user_id>")
    def remember_me(user_id: str) -> str:
        flask_login.login_user(User(user_id), remember=True)
        return "ok"

    @app.get("/who")
    def who() -> Any:
        user = flask_login.current_user
        return jsonify(login=user.get_id() if user.is_authenticated else None,
                       bound=session.user_id,  # type: ignore[attr-defined]
                       listed=[info.current for info in user_sessions.list()])

    browser = app.test_client()
    browser.post("/remember-me/42")
    browser.delete_cookie("session")  # the browser restarted: only the remember-me cookie

    first = browser.get("/who").json  # signed in from the remember-me cookie
    again = browser.get("/who").json  # the session it got is bound and listed

    assert first["login"] == "42" and first["bound"] == "42"
    assert again["login"] == "42" and again["bound"] == "42"
    assert again["listed"].count(True) == 1
