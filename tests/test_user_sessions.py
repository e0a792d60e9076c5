"""A user's sessions: list them, revoke one, all, or all but the current one.

ASVS 4.0.3 3.3.3 (log out other sessions after a credential change), 3.3.4 (see and end
active sessions); ASVS 5.0 7.4.2, 7.4.5, 7.5.2. Server-side stores list every live
session of a user through their per-user index - expired and ended sessions drop out of
it - and a revoked device is logged out on its next request. Cookie sessions know only
the current session; revoking the others works through a per-user "not before" stamp.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify, request, session
from flask.testing import FlaskClient

from sessionkeeper.accounts import SessionInfo, UserSessions, handle_of_key
from sessionkeeper.flask import user_sessions
from sessionkeeper.server_side import ServerSideSessions
from sessionkeeper.stores.base import SessionStore

MakeApp = Callable[..., Flask]
LAPTOP, PHONE, TABLET = "laptop-browser/1.0", "phone-browser/2.0", "tablet-browser/3.0"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def clocked(app: Flask) -> Clock:
    """A clock the test moves by hand, installed as the app's session clock."""
    clock = Clock()
    app.extensions["sessionkeeper"].backend.clock = clock
    return clock


def add_views(app: Flask) -> Flask:
    @app.post("/login/<user_id>")
    def login(user_id: str) -> str:
        session["name"] = user_id
        session.login(user_id)  # type: ignore[attr-defined]
        return "logged in"

    @app.post("/logout")
    def logout() -> str:
        session.logout()  # type: ignore[attr-defined]
        return "logged out"

    @app.get("/me")
    def me() -> str:
        return str(session.user_id or "anonymous")  # type: ignore[attr-defined]

    @app.get("/devices")
    def devices() -> Any:
        infos = user_sessions.list(request.args.get("user"))
        return jsonify([info.__dict__ for info in infos])

    @app.post("/revoke")
    def revoke() -> Any:
        return jsonify(user_sessions.revoke(request.form["handle"], request.args.get("user")))

    @app.post("/revoke-others")
    def revoke_others() -> Any:
        return jsonify(user_sessions.revoke_others())

    @app.post("/revoke-all")
    def revoke_all() -> Any:
        return jsonify(user_sessions.revoke_all(request.args.get("user")))

    return app


def device(app: Flask, user: str, agent: str) -> FlaskClient:
    """A browser with its own user agent, logged in as ``user``."""
    client = app.test_client()
    client.environ_base["HTTP_USER_AGENT"] = agent
    assert client.post(f"/login/{user}").status_code == 200
    return client


def listed(client: FlaskClient, user: str | None = None) -> list[dict[str, Any]]:
    response = client.get("/devices" + (f"?user={user}" if user else ""))
    assert response.status_code == 200
    return list(response.json)


def deletes_cookie(response: Any) -> bool:
    return any(h.startswith("session=;") and "Max-Age=0" in h
               for h in response.headers.getlist("Set-Cookie"))


@pytest.fixture
def server_config(store_kind: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Every server-side store: these tests need sessions the server can enumerate."""
    provider = importlib.import_module(f"providers.{store_kind}")
    with provider.flask_config(tmp_path) as config:
        yield config


# -- listing (server-side stores) ---------------------------------------------------------


def test_every_live_session_of_the_user_is_listed_with_its_device(
    make_app: MakeApp, server_config: dict[str, Any],
) -> None:
    app = add_views(make_app(server_config))
    clock = clocked(app)
    laptop = device(app, "alice", LAPTOP)
    clock.now += 60
    phone = device(app, "alice", PHONE)
    device(app, "bob", TABLET)

    seen = listed(laptop)

    assert [(s["user_agent"], s["current"]) for s in seen] == [(PHONE, False), (LAPTOP, True)]
    assert {s["user_id"] for s in seen} == {"alice"}
    assert all(s["ip"] is None for s in seen)  # not recorded unless configured
    newest = seen[0]
    assert newest["created_at"] == pytest.approx(clock.now, abs=1)
    assert newest["last_seen"] == pytest.approx(clock.now, abs=1)
    assert newest["expires_at"] > clock.now
    assert [s["current"] for s in listed(phone)] == [True, False]
    assert [s["user_agent"] for s in listed(laptop, "bob")] == [TABLET]


def test_handles_are_not_session_ids(make_app: MakeApp, server_config: dict[str, Any]) -> None:
    app = add_views(make_app(server_config))
    laptop = device(app, "alice", LAPTOP)
    sid = laptop.get_cookie("session").value  # type: ignore[union-attr]
    backend = app.extensions["sessionkeeper"].backend

    (only,) = listed(laptop)

    assert sid not in only["handle"] and only["handle"] not in backend.key(sid)


def test_addresses_are_listed_when_configured(make_app: MakeApp,
                                              server_config: dict[str, Any]) -> None:
    app = add_views(make_app(server_config, SESSION_DEVICE_INFO=("user_agent", "ip")))
    laptop = app.test_client()
    laptop.post("/login/alice", environ_base={"REMOTE_ADDR": "198.51.100.4"})

    (only,) = listed(laptop)

    assert only["ip"] == "198.51.100.4"


def test_an_anonymous_visitor_lists_nothing(make_app: MakeApp,
                                            app_config: dict[str, Any]) -> None:
    app = add_views(make_app(app_config))

    assert listed(app.test_client()) == []


def test_expired_sessions_drop_out_of_the_list_and_the_index(
    make_app: MakeApp, server_config: dict[str, Any],
) -> None:
    app = add_views(make_app(server_config, PERMANENT_SESSION_LIFETIME=600))
    backend = app.extensions["sessionkeeper"].backend
    clock = clocked(app)
    device(app, "alice", LAPTOP)
    clock.now += 500
    phone = device(app, "alice", PHONE)

    clock.now += 200  # the laptop's session has expired, the phone's has not

    assert [s["user_agent"] for s in listed(phone)] == [PHONE]
    assert backend.store.keys_for_user("alice", clock.now) == [
        backend.key(phone.get_cookie("session").value)]  # type: ignore[union-attr]


def test_a_restart_with_an_idle_timeout_drops_sessions_idle_longer_from_the_list(
    make_app: MakeApp, server_config: dict[str, Any],
) -> None:
    app = add_views(make_app(server_config))
    clock = clocked(app)
    device(app, "alice", LAPTOP)
    clock.now += 900
    phone = device(app, "alice", PHONE)
    clock.now += 200  # the laptop has been idle 1100 s, the phone 200 s

    again = add_views(make_app(server_config, SECRET_KEY=app.config["SECRET_KEY"],
                               SESSION_IDLE_TIMEOUT=600))
    backend = again.extensions["sessionkeeper"].backend
    backend.store, backend.clock = app.extensions["sessionkeeper"].backend.store, clock
    phone_again = again.test_client()
    phone_again.set_cookie("session", phone.get_cookie("session").value)  # type: ignore[union-attr]

    assert [s["user_agent"] for s in listed(phone_again)] == [PHONE]


def test_ended_sessions_drop_out_of_the_list(make_app: MakeApp,
                                             server_config: dict[str, Any]) -> None:
    app = add_views(make_app(server_config))
    laptop = device(app, "alice", LAPTOP)
    phone = device(app, "alice", PHONE)
    switched = device(app, "alice", TABLET)

    phone.post("/logout")
    switched.post("/login/bob")

    assert [s["user_agent"] for s in listed(laptop)] == [LAPTOP]
    assert [s["user_agent"] for s in listed(laptop, "bob")] == [TABLET]


# -- revoking (server-side stores) --------------------------------------------------------


def test_revoking_a_device_logs_it_out_on_its_next_request(
    make_app: MakeApp, server_config: dict[str, Any],
) -> None:
    app = add_views(make_app(server_config))
    laptop = device(app, "alice", LAPTOP)
    phone = device(app, "alice", PHONE)
    (phone_handle,) = [s["handle"] for s in listed(laptop) if not s["current"]]

    assert laptop.post("/revoke", data={"handle": phone_handle}).json is True

    assert phone.get("/me").text == "anonymous"
    assert laptop.get("/me").text == "alice"
    assert [s["user_agent"] for s in listed(laptop)] == [LAPTOP]
    assert laptop.post("/revoke", data={"handle": phone_handle}).json is False  # already gone


def test_revoking_the_current_session_logs_this_request_out(
    make_app: MakeApp, server_config: dict[str, Any],
) -> None:
    app = add_views(make_app(server_config))
    laptop = device(app, "alice", LAPTOP)
    (own,) = [s["handle"] for s in listed(laptop)]

    response = laptop.post("/revoke", data={"handle": own})

    assert response.json is True and deletes_cookie(response)
    assert laptop.get("/me").text == "anonymous"


def test_a_handle_of_another_users_session_is_refused(
    make_app: MakeApp, server_config: dict[str, Any],
) -> None:
    app = add_views(make_app(server_config))
    mallory = device(app, "mallory", LAPTOP)
    alice = device(app, "alice", PHONE)
    (alices_handle,) = [s["handle"] for s in listed(alice)]

    assert mallory.post("/revoke", data={"handle": alices_handle}).json is False

    assert alice.get("/me").text == "alice"


@pytest.mark.parametrize("handle", ["nope", "0" * 32, "../../etc/passwd", "x" * 2000])
def test_a_made_up_handle_revokes_nothing(make_app: MakeApp, app_config: dict[str, Any],
                                          handle: str) -> None:
    app = add_views(make_app(app_config))
    laptop = device(app, "alice", LAPTOP)

    response = laptop.post("/revoke", data={"handle": handle})

    assert response.status_code == 200 and response.json is False
    assert laptop.get("/me").text == "alice"


def test_revoke_others_keeps_only_the_current_session(make_app: MakeApp,
                                                      server_config: dict[str, Any]) -> None:
    app = add_views(make_app(server_config))
    laptop = device(app, "alice", LAPTOP)
    phone = device(app, "alice", PHONE)
    tablet = device(app, "alice", TABLET)
    bob = device(app, "bob", LAPTOP)

    assert laptop.post("/revoke-others").json == 2

    assert phone.get("/me").text == "anonymous"
    assert tablet.get("/me").text == "anonymous"
    assert laptop.get("/me").text == "alice"
    assert bob.get("/me").text == "bob"
    assert [s["user_agent"] for s in listed(laptop)] == [LAPTOP]


def test_revoke_all_ends_the_current_session_too(make_app: MakeApp,
                                                 server_config: dict[str, Any]) -> None:
    app = add_views(make_app(server_config))
    laptop = device(app, "alice", LAPTOP)
    phone = device(app, "alice", PHONE)

    response = laptop.post("/revoke-all")

    assert response.json == 2 and deletes_cookie(response)
    assert laptop.get("/me").text == "anonymous"
    assert phone.get("/me").text == "anonymous"
    assert listed(app.test_client(), "alice") == []


def test_an_admin_can_end_another_users_sessions(make_app: MakeApp,
                                                 server_config: dict[str, Any]) -> None:
    app = add_views(make_app(server_config))
    admin = device(app, "admin", LAPTOP)
    alice = device(app, "alice", PHONE)

    assert admin.post("/revoke-all?user=alice").json == 1

    assert alice.get("/me").text == "anonymous"
    assert admin.get("/me").text == "admin"


# -- cookie sessions: only the current one is known ------------------------------------------


@pytest.fixture
def cookie_app(make_app: MakeApp) -> Flask:
    return add_views(make_app(SESSION_TYPE="cookie"))


def test_cookie_sessions_list_only_the_current_one(cookie_app: Flask) -> None:
    laptop = device(cookie_app, "alice", LAPTOP)
    device(cookie_app, "alice", PHONE)

    (only,) = listed(laptop)

    assert only["current"] is True and only["user_agent"] == LAPTOP
    assert only["user_id"] == "alice" and only["handle"]


def test_cookie_sessions_report_their_login_time_and_last_visit(make_app: MakeApp) -> None:
    app = add_views(make_app(SESSION_TYPE="cookie", SESSION_PERMANENT=True))
    clock = clocked(app)
    laptop = device(app, "alice", LAPTOP)
    logged_in_at = clock.now

    clock.now += 600
    laptop.get("/me")  # re-issues the cookie (refresh on every request)
    (only,) = listed(laptop)

    assert only["created_at"] == pytest.approx(logged_in_at, abs=1)
    assert only["last_seen"] == pytest.approx(clock.now, abs=1)


def test_cookie_revoke_others_logs_out_every_other_device(cookie_app: Flask) -> None:
    laptop = device(cookie_app, "alice", LAPTOP)
    phone = device(cookie_app, "alice", PHONE)
    bob = device(cookie_app, "bob", TABLET)

    assert laptop.post("/revoke-others").json == 0  # cookie sessions cannot be counted

    assert phone.get("/me").text == "anonymous"
    assert laptop.get("/me").text == "alice"
    assert bob.get("/me").text == "bob"
    # A later login on the revoked device works normally.
    assert device(cookie_app, "alice", PHONE).get("/me").text == "alice"


def test_cookie_revoke_all_logs_out_everywhere(cookie_app: Flask) -> None:
    laptop = device(cookie_app, "alice", LAPTOP)
    phone = device(cookie_app, "alice", PHONE)
    copied = laptop.get_cookie("session").value  # type: ignore[union-attr]

    response = laptop.post("/revoke-all")

    assert response.json == 1 and deletes_cookie(response)
    assert phone.get("/me").text == "anonymous"
    thief = cookie_app.test_client()
    thief.set_cookie("session", copied)
    assert thief.get("/me").text == "anonymous"


def test_cookie_revoke_of_the_current_handle_logs_out(cookie_app: Flask) -> None:
    laptop = device(cookie_app, "alice", LAPTOP)
    copied = laptop.get_cookie("session").value  # type: ignore[union-attr]
    (own,) = [s["handle"] for s in listed(laptop)]

    assert laptop.post("/revoke", data={"handle": own}).json is True

    thief = cookie_app.test_client()
    thief.set_cookie("session", copied)
    assert thief.get("/me").text == "anonymous"
    assert laptop.get("/me").text == "anonymous"


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_cookie_revocations_can_live_in_any_store(make_app: MakeApp, tmp_path: Path,
                                                  kind: str) -> None:
    provider = importlib.import_module(f"providers.{kind}")
    with provider.flask_config(tmp_path) as store_config:
        extra = {k: v for k, v in store_config.items() if k != "SESSION_TYPE"}
        app = add_views(make_app(SESSION_TYPE="cookie", SESSION_REVOCATION_STORE=kind, **extra))
        laptop = device(app, "alice", LAPTOP)
        phone = device(app, "alice", PHONE)

        laptop.post("/revoke-others")

        assert phone.get("/me").text == "anonymous"
        assert laptop.get("/me").text == "alice"
        revocations = app.extensions["sessionkeeper"].backend.revocations
        assert revocations.store.name == kind


def test_anonymous_cookie_sessions_never_touch_the_revocation_store(
    make_app: MakeApp, tmp_path: Path,
) -> None:
    app = add_views(make_app(SESSION_TYPE="cookie"))

    @app.post("/remember/<word>")
    def remember(word: str) -> str:
        session["word"] = word
        return "ok"

    browser = app.test_client()
    browser.post("/remember/hello")
    browser.get("/me")

    assert list(tmp_path.rglob("*.sqlite3")) == []


def test_a_bad_revocation_store_name_fails_at_start_up(make_app: MakeApp) -> None:
    from sessionkeeper.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="SESSION_REVOCATION_STORE"):
        make_app(SESSION_TYPE="cookie", SESSION_REVOCATION_STORE="cookie")


# -- the core API, on every store ---------------------------------------------------------


def test_user_sessions_over_a_store(store: SessionStore) -> None:
    backend = ServerSideSessions(store, policy=_policy())
    accounts = UserSessions(backend)
    laptop = _stored_login(backend, "carol")
    phone = _stored_login(backend, "carol")
    _stored_login(backend, "dave")

    infos = accounts.list("carol", current=laptop)

    assert sorted(i.handle for i in infos) == sorted(
        handle_of_key(backend.key(sid)) for sid in (laptop, phone))
    assert [i.current for i in infos if i.handle == handle_of_key(backend.key(laptop))] == [True]
    assert all(isinstance(i, SessionInfo) and i.user_id == "carol" for i in infos)
    assert accounts.revoke("dave", handle_of_key(backend.key(phone))) is False
    assert accounts.revoke_all("carol", keep=laptop) == 1
    assert [i.handle for i in accounts.list("carol")] == [handle_of_key(backend.key(laptop))]
    assert accounts.revoke("carol", handle_of_key(backend.key(laptop))) is True
    assert accounts.list("carol") == []
    assert len(accounts.list("dave")) == 1


def _policy() -> Any:
    from sessionkeeper.policy import ExpiryPolicy

    return ExpiryPolicy(lifetime=3600)


def _stored_login(backend: ServerSideSessions, user: str) -> str:
    """Save a new session bound to ``user`` through the backend; returns its id."""
    session = backend.open(None)
    session.login(user)
    update = backend.save(session)
    assert update is not None and update.value is not None
    return update.value
