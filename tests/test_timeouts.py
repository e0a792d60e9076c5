"""Idle and absolute timeouts, enforced by the server on every store and on cookie
sessions (ASVS 3.3.1, 3.3.2): whatever the browser keeps or sends back, a session
unused for SESSION_IDLE_TIMEOUT, or older than SESSION_ABSOLUTE_TIMEOUT, is over.

Time is moved with the backend's ``clock``; a browser that ignores Max-Age is played by
sending an old cookie value again.
"""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, session
from flask.sessions import SecureCookieSessionInterface
from flask.testing import FlaskClient

from sessionkeeper.errors import ConfigurationError
from sessionkeeper.server_side import ServerSideSessions

MakeApp = Callable[..., Flask]
IDLE = 60
ABSOLUTE = 300


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def add_views(app: Flask) -> Flask:
    @app.post("/login")
    def login() -> str:
        session["user"] = "alice"
        return "ok"

    @app.get("/me")
    def me() -> str:
        return str(session.get("user", "anonymous"))

    return app


def timed_app(make_app: MakeApp, config: dict[str, Any], **timeouts: Any) -> tuple[Flask, Clock]:
    app = add_views(make_app(config, **timeouts))
    clock = Clock()
    app.extensions["sessionkeeper"].backend.clock = clock
    return app, clock


def max_age(response: Any) -> int | None:
    match = re.search(r"Max-Age=(\d+)", response.headers.get("Set-Cookie", ""))
    return int(match.group(1)) if match else None


def replayed(app: Flask, value: str) -> FlaskClient:
    """A browser that kept a cookie value past its Max-Age and sends it anyway."""
    client = app.test_client()
    client.set_cookie("session", value)
    return client


@pytest.fixture
def server_config(store_kind: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    provider = importlib.import_module(f"providers.{store_kind}")
    with provider.flask_config(tmp_path) as config:
        yield config


# -- idle timeout -------------------------------------------------------------------------


def test_a_session_unused_for_the_idle_timeout_is_over(make_app: MakeApp,
                                                      app_config: dict[str, Any]) -> None:
    app, clock = timed_app(make_app, app_config, SESSION_IDLE_TIMEOUT=IDLE)
    browser = app.test_client()
    browser.post("/login")

    clock.now += IDLE + 1

    assert browser.get("/me").text == "anonymous"


def test_a_session_in_use_outlives_the_idle_timeout(make_app: MakeApp,
                                                    app_config: dict[str, Any]) -> None:
    app, clock = timed_app(make_app, app_config, SESSION_IDLE_TIMEOUT=IDLE)
    browser = app.test_client()
    browser.post("/login")

    for _ in range(10):  # ten minutes, a read every half minute
        clock.now += IDLE / 2
        assert browser.get("/me").text == "alice"


def test_the_idle_timeout_is_enforced_whatever_cookie_comes_back(
    make_app: MakeApp, app_config: dict[str, Any],
) -> None:
    app, clock = timed_app(make_app, app_config, SESSION_IDLE_TIMEOUT=IDLE)
    browser = app.test_client()
    browser.post("/login")
    kept = browser.get_cookie("session").value  # type: ignore[union-attr]

    clock.now += IDLE + 1

    assert replayed(app, kept).get("/me").text == "anonymous"


def test_the_idle_timeout_also_caps_a_long_lifetime(make_app: MakeApp,
                                                   app_config: dict[str, Any]) -> None:
    app, _ = timed_app(make_app, app_config, SESSION_IDLE_TIMEOUT=timedelta(minutes=1),
                       PERMANENT_SESSION_LIFETIME=timedelta(days=30))

    response = app.test_client().post("/login")

    assert max_age(response) == IDLE


def restarted(app: Flask, clock: Clock, make_app: MakeApp, config: dict[str, Any],
              **timeouts: Any) -> Flask:
    """The app started again with new timeouts, on the same store and secret key."""
    again = add_views(make_app(config, SECRET_KEY=app.config["SECRET_KEY"], **timeouts))
    old, new = app.extensions["sessionkeeper"].backend, again.extensions["sessionkeeper"].backend
    if isinstance(old, ServerSideSessions):
        new.store = old.store  # what a persistent store shows the new process
    new.clock = clock
    return again


@pytest.mark.parametrize("before", [{}, {"SESSION_IDLE_TIMEOUT": 3600}],
                         ids=["idle-timeout-newly-set", "idle-timeout-shortened"])
def test_a_restart_with_a_shorter_idle_timeout_ends_sessions_idle_longer(
    make_app: MakeApp, app_config: dict[str, Any], before: dict[str, Any],
) -> None:
    app, clock = timed_app(make_app, app_config, **before)
    browser = app.test_client()
    browser.post("/login")
    kept = browser.get_cookie("session").value  # type: ignore[union-attr]
    clock.now += IDLE + 1

    again = restarted(app, clock, make_app, app_config, SESSION_IDLE_TIMEOUT=IDLE)

    assert replayed(again, kept).get("/me").text == "anonymous"


def test_a_restart_with_a_shorter_idle_timeout_keeps_sessions_in_use(
    make_app: MakeApp, app_config: dict[str, Any],
) -> None:
    app, clock = timed_app(make_app, app_config, SESSION_IDLE_TIMEOUT=3600)
    browser = app.test_client()
    browser.post("/login")
    clock.now += IDLE / 2
    assert browser.get("/me").text == "alice"  # too soon for a refresh under 3600 s
    kept = browser.get_cookie("session").value  # type: ignore[union-attr]
    clock.now += IDLE / 3

    again = restarted(app, clock, make_app, app_config, SESSION_IDLE_TIMEOUT=IDLE)
    user = replayed(again, kept)

    for _ in range(10):  # five minutes, a read every half minute
        assert user.get("/me").text == "alice"
        clock.now += IDLE / 2
    clock.now += IDLE / 2 + 1
    assert user.get("/me").text == "anonymous"


# -- absolute timeout ---------------------------------------------------------------------


def test_an_active_session_ends_at_the_absolute_timeout(make_app: MakeApp,
                                                       app_config: dict[str, Any]) -> None:
    app, clock = timed_app(make_app, app_config, SESSION_IDLE_TIMEOUT=IDLE,
                           SESSION_ABSOLUTE_TIMEOUT=ABSOLUTE)
    browser = app.test_client()
    browser.post("/login")
    started = clock.now

    while clock.now + IDLE / 2 < started + ABSOLUTE:
        clock.now += IDLE / 2
        assert browser.get("/me").text == "alice", f"{clock.now - started:.0f}s in"

    clock.now = started + ABSOLUTE + 1
    assert browser.get("/me").text == "anonymous"


def test_the_absolute_timeout_alone_ends_a_session(make_app: MakeApp,
                                                  app_config: dict[str, Any]) -> None:
    app, clock = timed_app(make_app, app_config, SESSION_ABSOLUTE_TIMEOUT=ABSOLUTE)
    browser = app.test_client()
    browser.post("/login")
    kept = browser.get_cookie("session").value  # type: ignore[union-attr]
    started = clock.now

    clock.now = started + ABSOLUTE - 1
    assert browser.get("/me").text == "alice"
    clock.now = started + ABSOLUTE + 1
    assert browser.get("/me").text == "anonymous"
    assert replayed(app, kept).get("/me").text == "anonymous"


def test_max_age_counts_down_to_the_absolute_timeout(make_app: MakeApp,
                                                     app_config: dict[str, Any]) -> None:
    app, clock = timed_app(make_app, app_config, SESSION_ABSOLUTE_TIMEOUT=ABSOLUTE,
                           SESSION_REFRESH_FRACTION=0)
    browser = app.test_client()
    first = browser.post("/login")
    started = clock.now

    clock.now = started + ABSOLUTE - 20
    refreshed = browser.get("/me")

    assert max_age(first) == ABSOLUTE
    assert refreshed.text == "alice"
    assert max_age(refreshed) is not None and max_age(refreshed) <= 20  # type: ignore[operator]


def test_a_timed_out_record_is_removed_from_the_store(make_app: MakeApp,
                                                      server_config: dict[str, Any]) -> None:
    app, clock = timed_app(make_app, server_config, SESSION_IDLE_TIMEOUT=IDLE)
    browser = app.test_client()
    browser.post("/login")
    sid = browser.get_cookie("session").value  # type: ignore[union-attr]
    backend = app.extensions["sessionkeeper"].backend
    assert isinstance(backend, ServerSideSessions)

    clock.now += IDLE + 1
    browser.get("/me")

    assert backend.store.load(backend.key(sid), clock.now - 10 * IDLE) is None


# -- cookie sessions carry a creation time only when needed ----------------------------------


def flask_payload(app: Flask, value: str) -> Any:
    """The cookie's payload as plain Flask reads it."""
    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    assert serializer is not None
    return serializer.loads(value)


def test_default_cookie_sessions_stay_exactly_flasks(make_app: MakeApp) -> None:
    app = add_views(make_app(SESSION_TYPE="cookie", SESSION_IDLE_TIMEOUT=IDLE))
    browser = app.test_client()
    browser.post("/login")

    payload = flask_payload(app, browser.get_cookie("session").value)  # type: ignore[union-attr]

    assert payload == {"user": "alice"}  # and not permanent, as Flask's default session


def test_cookie_sessions_carry_their_creation_time_for_the_absolute_timeout(
    make_app: MakeApp,
) -> None:
    app, clock = timed_app(make_app, {"SESSION_TYPE": "cookie"},
                           SESSION_ABSOLUTE_TIMEOUT=ABSOLUTE)
    browser = app.test_client()
    browser.post("/login")
    started = clock.now
    clock.now += 100
    browser.post("/login")  # a change re-issues the cookie; the creation time stays

    payload = flask_payload(app, browser.get_cookie("session").value)  # type: ignore[union-attr]

    assert payload["user"] == "alice"
    assert payload["_sk.meta"]["c"] == pytest.approx(started, abs=1)


# -- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["SESSION_IDLE_TIMEOUT", "SESSION_ABSOLUTE_TIMEOUT"])
@pytest.mark.parametrize("value", ["2h", 0, -30, True])
def test_bad_timeouts_fail_at_start_up(make_app: MakeApp, key: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=key):
        make_app(SESSION_TYPE="memory", **{key: value})
