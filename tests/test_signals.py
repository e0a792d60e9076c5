"""Lifecycle signals (blinker) and log lines: created, regenerated, destroyed, expired,
revoked, rejected - on every store and on cookie sessions (ASVS 3.2.x, 7.1.x of 4.0.3).

Receivers get a salted hash of the session id (``log_id``), never the id; log lines
carry the same hash, so one session's events can be followed through the logs without
the logs ever holding a usable id.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify, session

from sessionkeeper import signals
from sessionkeeper.flask import user_sessions

MakeApp = Callable[..., Flask]
IDLE = 60
SIGNALS = {
    "created": signals.session_created,
    "regenerated": signals.session_regenerated,
    "destroyed": signals.session_destroyed,
    "expired": signals.session_expired,
    "revoked": signals.session_revoked,
    "rejected": signals.session_rejected,
}


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@contextmanager
def recorded() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every lifecycle signal sent meanwhile, as (name, keyword arguments)."""
    events: list[tuple[str, dict[str, Any]]] = []
    with ExitStack() as stack:
        for name, signal in SIGNALS.items():
            def receiver(sender: Any, _name: str = name, **kwargs: Any) -> None:
                events.append((_name, kwargs))
            stack.enter_context(signal.connected_to(receiver))
        yield events


def names(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [name for name, _ in events]


def add_views(app: Flask) -> Flask:
    @app.post("/remember")
    def remember() -> str:
        session["word"] = "hello"
        return "ok"

    @app.post("/login/<user_id>")
    def login(user_id: str) -> str:
        session.login(user_id)  # type: ignore[attr-defined]
        return "ok"

    @app.post("/logout")
    def logout() -> str:
        session.logout()  # type: ignore[attr-defined]
        return "bye"

    @app.get("/me")
    def me() -> str:
        return str(session.user_id or "anonymous")  # type: ignore[attr-defined]

    @app.post("/revoke-others")
    def revoke_others() -> Any:
        return jsonify(user_sessions.revoke_others())

    return app


def timed_app(make_app: MakeApp, config: dict[str, Any], **more: Any) -> tuple[Flask, Clock]:
    app = add_views(make_app(config, **more))
    clock = Clock()
    app.extensions["sessionkeeper"].backend.clock = clock
    return app, clock


@pytest.fixture
def server_config(store_kind: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    provider = importlib.import_module(f"providers.{store_kind}")
    with provider.flask_config(tmp_path) as config:
        yield config


# -- server-side sessions -------------------------------------------------------------------


def test_created_regenerated_destroyed_follow_one_session(make_app: MakeApp,
                                                          server_config: dict[str, Any]) -> None:
    app = add_views(make_app(server_config))
    browser = app.test_client()

    with recorded() as events:
        browser.post("/remember")
        browser.post("/login/42")
        browser.post("/logout")

    assert names(events) == ["created", "regenerated", "destroyed"]
    created, regenerated, destroyed = (kwargs for _, kwargs in events)
    assert created["user_id"] is None
    assert regenerated["old_log_id"] == created["log_id"]
    assert regenerated["user_id"] == "42"
    assert destroyed == {"log_id": regenerated["log_id"], "user_id": "42"}


def test_revoked_sessions_are_signalled_one_by_one_with_their_log_ids(
    make_app: MakeApp, server_config: dict[str, Any],
) -> None:
    app = add_views(make_app(server_config))
    devices = [app.test_client() for _ in range(3)]
    with recorded() as logins:
        for browser in devices:
            browser.post("/login/alice")
    issued = {kwargs["log_id"] for _, kwargs in logins}

    with recorded() as events:
        assert devices[0].post("/revoke-others").json == 2

    assert names(events) == ["revoked", "revoked"]
    revoked = {kwargs["log_id"] for _, kwargs in events}
    assert revoked < issued and len(revoked) == 2  # the same ids the sessions had all along
    assert all(kwargs["user_id"] == "alice" and kwargs["handle"] for _, kwargs in events)


def test_a_timed_out_session_is_signalled_as_expired(make_app: MakeApp,
                                                     server_config: dict[str, Any]) -> None:
    app, clock = timed_app(make_app, server_config, SESSION_IDLE_TIMEOUT=IDLE)
    browser = app.test_client()
    with recorded() as logins:
        browser.post("/login/42")

    clock.now += IDLE + 1
    with recorded() as events:
        assert browser.get("/me").text == "anonymous"

    assert names(events) == ["expired"]
    assert events[0][1] == {"log_id": logins[0][1]["log_id"], "user_id": "42"}


@pytest.mark.parametrize("kind", ["redis", "redis_cluster", "memcached"])
@pytest.mark.parametrize(("keep_expired", "reported_as"),
                         [(60, "expired"), (None, "rejected")])
def test_stores_that_expire_records_report_expiry_while_they_keep_them(
    make_app: MakeApp, tmp_path: Path, kind: str, keep_expired: int | None,
    reported_as: str,
) -> None:
    # Redis and memcached drop a record at its expiry, in real time: without a record a
    # returning session looks like any unknown id. SESSION_KEEP_EXPIRED keeps it longer.
    with importlib.import_module(f"providers.{kind}").flask_config(tmp_path) as config:
        app = add_views(make_app(config, PERMANENT_SESSION_LIFETIME=2,
                                 SESSION_KEEP_EXPIRED=keep_expired))
        browser = app.test_client()
        with recorded() as logins:
            browser.post("/login/42")
        # Past the lifetime, also at memcached's one-second resolution, and less than one
        # lifetime after it (what a session is reported as expired within).
        time.sleep(3.2)

        with recorded() as events:
            assert browser.get("/me").text == "anonymous"

    assert names(events) == [reported_as]
    if reported_as == "expired":
        assert events[0][1] == {"log_id": logins[0][1]["log_id"], "user_id": "42"}


def test_an_unknown_id_is_signalled_as_rejected(make_app: MakeApp,
                                                server_config: dict[str, Any]) -> None:
    app = add_views(make_app(server_config))
    browser = app.test_client()
    browser.set_cookie("session", "A" * 43)  # well formed, never issued

    with recorded() as events:
        assert browser.get("/me").text == "anonymous"

    assert names(events) == ["rejected"]
    assert events[0][1]["reason"] == "unknown or expired"


def test_log_ids_are_salted_hashes_never_the_id(make_app: MakeApp,
                                                server_config: dict[str, Any]) -> None:
    app = add_views(make_app(server_config))
    browser = app.test_client()
    with recorded() as events:
        browser.post("/remember")
    sid = browser.get_cookie("session").value  # type: ignore[union-attr]

    log_id = events[0][1]["log_id"]

    assert log_id not in sid
    assert log_id not in hashlib.sha256(sid.encode()).hexdigest()  # not the store key either
    other = add_views(make_app(server_config))  # another SECRET_KEY: another salt
    assert other.extensions["sessionkeeper"].backend.log_id(sid) != log_id


# -- cookie sessions ----------------------------------------------------------------------------


def test_cookie_sessions_signal_their_lifecycle_too(make_app: MakeApp) -> None:
    app, clock = timed_app(make_app, {"SESSION_TYPE": "cookie"}, SESSION_IDLE_TIMEOUT=IDLE)
    laptop, phone = app.test_client(), app.test_client()

    with recorded() as events:
        laptop.post("/login/42")
        phone.post("/login/42")
        laptop.post("/revoke-others")
        phone.get("/me")  # refused: revoked
        laptop.post("/logout")
        browser = app.test_client()
        browser.post("/remember")
        clock.now += IDLE + 1
        browser.get("/me")

    assert names(events) == ["created", "created", "revoked", "rejected", "destroyed",
                             "created", "expired"]
    by_name = dict(events)
    assert by_name["revoked"] == {"log_id": "-", "user_id": "42", "scope": "others"}
    assert by_name["rejected"] == {"reason": "revoked", "user_id": "42"}
    assert by_name["destroyed"] == {"log_id": "-", "user_id": "42"}
    assert by_name["expired"]["reason"] == "idle or lifetime timeout"


def test_cookie_sessions_signal_a_login_and_a_regeneration(make_app: MakeApp) -> None:
    app = add_views(make_app(SESSION_TYPE="cookie"))

    @app.post("/regenerate")
    def regenerate() -> str:
        session.regenerate()  # type: ignore[attr-defined]
        return "ok"

    browser = app.test_client()
    with recorded() as events:
        browser.post("/remember")
        browser.post("/login/42")
        browser.post("/regenerate")
        app.test_client().post("/login/7")  # a login that starts the session: created

    assert names(events) == ["created", "regenerated", "regenerated", "created"]
    regenerated = [kwargs for name, kwargs in events if name == "regenerated"]
    assert regenerated == [{"log_id": "-", "old_log_id": "-", "user_id": "42"}] * 2
    assert events[-1][1] == {"log_id": "-", "user_id": "7"}


def test_a_tampered_cookie_is_signalled_as_rejected(make_app: MakeApp) -> None:
    app = add_views(make_app(SESSION_TYPE="cookie"))
    browser = app.test_client()
    browser.post("/remember")
    value = browser.get_cookie("session").value  # type: ignore[union-attr]
    browser.set_cookie("session", value[:-2] + ("AA" if value[-2:] != "AA" else "BB"))

    with recorded() as events:
        browser.get("/me")

    assert names(events) == ["rejected"] and "Signature" in events[0][1]["reason"]


# -- logs -----------------------------------------------------------------------------------------


def test_log_lines_never_contain_a_session_id(make_app: MakeApp, app_config: dict[str, Any],
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    app, clock = timed_app(make_app, app_config, SESSION_IDLE_TIMEOUT=IDLE)
    laptop, phone = app.test_client(), app.test_client()
    tokens: set[str] = set()

    def keep(client: Any) -> None:
        cookie = client.get_cookie("session")
        if cookie is not None:
            tokens.add(cookie.value)

    for client in (laptop, phone):
        client.post("/remember")
        keep(client)
        client.post("/login/42")  # regenerated
        keep(client)
    laptop.post("/revoke-others")
    phone.get("/me")  # revoked, rejected
    laptop.post("/logout")
    laptop.post("/remember")
    keep(laptop)
    clock.now += IDLE + 1
    laptop.get("/me")  # expired
    stale = app.test_client()
    stale.set_cookie("session", next(iter(tokens)))
    stale.get("/me")  # unknown

    secrets = tokens | {hashlib.sha256(t.encode()).hexdigest() for t in tokens}
    text = "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert len(tokens) >= 3 and caplog.records  # something happened and was logged
    leaked = [s for s in secrets if s in text]
    assert leaked == [], f"session ids in log lines: {leaked}"
