"""Flask integration: headers, flashing, permanence, store outages and the CLI.

Outages are simulated by wrapping a real store in a subclass whose chosen operations
raise ``StoreUnavailable`` - the store's own behaviour is never imitated, only its
absence.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from counting import count_store_calls
from flask import Flask, Response, flash, get_flashed_messages, redirect, request, session
from werkzeug.wrappers import Response as BaseResponse

from sessionkeeper.errors import StoreUnavailable
from sessionkeeper.flask import Session
from sessionkeeper.stores.base import SessionRecord, SessionStore, SessionUpdate

MakeApp = Callable[..., Flask]
THIRTY_ONE_DAYS = 31 * 24 * 3600


class OutageStore(SessionStore):
    """A real store that can be switched off operation by operation."""

    def __init__(self, inner: SessionStore) -> None:
        self.inner = inner
        self.name = inner.name
        self.down: set[str] = set()

    def _gate(self, operation: str) -> None:
        if operation in self.down:
            raise StoreUnavailable(self.name, "connection refused")

    def load(self, key: str, now: float) -> SessionRecord | None:
        self._gate("load")
        return self.inner.load(key, now)

    def create(self, key: str, record: SessionRecord) -> None:
        self._gate("create")
        self.inner.create(key, record)

    def update(self, key: str, update: SessionUpdate) -> bool:
        self._gate("update")
        return self.inner.update(key, update)

    def touch(self, key: str, accessed_at: float, expires_at: float, *,
              version: Any = None) -> None:
        self._gate("touch")
        self.inner.touch(key, accessed_at, expires_at, version=version)

    def delete(self, key: str) -> None:
        self._gate("delete")
        self.inner.delete(key)

    def delete_expired(self, now: float) -> int:
        self._gate("delete_expired")
        return self.inner.delete_expired(now)


def with_outage_switch(app: Flask) -> OutageStore:
    backend = app.extensions["sessionkeeper"].backend
    switch = OutageStore(backend.store)
    backend.store = switch
    return switch


def add_views(app: Flask) -> Flask:
    @app.post("/login")
    def login() -> str:
        session["user"] = request.args.get("user", "laowang")
        return "ok"

    @app.get("/whoami")
    def whoami() -> str:
        return str(session.get("user", "anonymous"))

    @app.get("/about")
    def about() -> str:
        return "no session here"

    @app.post("/remember-me")
    def remember_me() -> str:
        session.permanent = request.args.get("on", "1") == "1"
        session["user"] = "laowang"
        return "ok"

    @app.post("/comment")
    def comment() -> BaseResponse:
        flash("comment saved")
        flash("check your inbox", "info")
        return redirect("/inbox")

    @app.get("/inbox")
    def inbox() -> str:
        messages = get_flashed_messages(with_categories=True)
        return "|".join(f"{category}:{text}" for category, text in messages) or "nothing"

    @app.post("/fail")
    def fail() -> tuple[str, int]:
        session["user"] = "half-done"
        return "failed", 500

    return app


def session_set_cookie(response: Response) -> str | None:
    found = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("session=")]
    assert len(found) <= 1
    return found[0] if found else None


@pytest.fixture
def server_config(store_kind: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Config for every server-side store kind (the cookie kind has no store to lose)."""
    provider = importlib.import_module(f"providers.{store_kind}")
    with provider.flask_config(tmp_path) as config:
        yield config


# -- Vary ------------------------------------------------------------------------------


def test_vary_cookie_when_the_session_was_accessed(make_app: MakeApp,
                                                   app_config: dict[str, Any]) -> None:
    client = add_views(make_app(app_config)).test_client()
    anonymous_read = client.get("/whoami")
    assert "Cookie" in anonymous_read.vary
    client.post("/login")
    read = client.get("/whoami")
    assert read.text == "laowang"
    assert "Cookie" in read.vary
    untouched = client.get("/about")
    if app_config.get("SESSION_TYPE") == "cookie":
        # As Flask's: a permanent cookie is re-signed on every request, used or not.
        assert "Cookie" in untouched.vary and len(untouched.headers.getlist("Set-Cookie")) == 1
    else:
        assert "Cookie" not in untouched.vary
        assert untouched.headers.getlist("Set-Cookie") == []


# -- flashing --------------------------------------------------------------------------


def test_flash_messages_survive_a_redirect_once(make_app: MakeApp,
                                                app_config: dict[str, Any]) -> None:
    client = add_views(make_app(app_config)).test_client()
    response = client.post("/comment", follow_redirects=True)
    assert response.status_code == 200
    assert response.text == "message:comment saved|info:check your inbox"
    assert client.get("/inbox").text == "nothing"


def test_flash_messages_do_not_disturb_other_session_data(
    make_app: MakeApp, app_config: dict[str, Any]
) -> None:
    client = add_views(make_app(app_config)).test_client()
    client.post("/login")
    client.post("/comment", follow_redirects=True)
    assert client.get("/whoami").text == "laowang"


# -- permanence ------------------------------------------------------------------------


def test_session_permanent_true_gives_31_day_cookie(make_app: MakeApp,
                                                    app_config: dict[str, Any]) -> None:
    app = add_views(make_app(app_config, SESSION_PERMANENT=False))
    client = app.test_client()
    header = session_set_cookie(client.post("/remember-me?on=1"))
    assert header is not None
    assert f"Max-Age={THIRTY_ONE_DAYS}" in header
    assert client.get("/whoami").text == "laowang"


def test_non_permanent_session_gives_browser_session_cookie(
    make_app: MakeApp, app_config: dict[str, Any]
) -> None:
    app = add_views(make_app(app_config))
    client = app.test_client()
    header = session_set_cookie(client.post("/remember-me?on=0"))
    assert header is not None
    assert "Max-Age" not in header
    assert "Expires" not in header
    assert client.get("/whoami").text == "laowang"


def test_turning_permanence_off_reissues_a_browser_session_cookie(
    make_app: MakeApp, app_config: dict[str, Any]
) -> None:
    app = add_views(make_app(app_config))
    client = app.test_client()
    first = session_set_cookie(client.post("/remember-me?on=1"))
    assert first is not None and "Max-Age" in first
    second = session_set_cookie(client.post("/remember-me?on=0"))
    assert second is not None and "Max-Age" not in second
    assert client.get("/whoami").text == "laowang"


# -- store outages -----------------------------------------------------------------------


def test_store_down_while_loading_answers_503(make_app: MakeApp,
                                              server_config: dict[str, Any],
                                              caplog: pytest.LogCaptureFixture) -> None:
    app = add_views(make_app(server_config))
    client = app.test_client()
    client.post("/login")
    switch = with_outage_switch(app)
    switch.down.add("load")

    response = client.get("/whoami")
    assert response.status_code == 503
    assert "Service Unavailable" in response.text
    assert session_set_cookie(response) is None
    assert any(r.levelno == logging.ERROR and "unavailable" in r.getMessage()
               for r in caplog.records if r.name == "sessionkeeper")
    # Views that do not use the session are unaffected.
    assert client.get("/about").status_code == 200

    switch.down.clear()
    assert client.get("/whoami").text == "laowang"


def test_app_handler_registered_before_session_is_kept(tmp_path: Path) -> None:
    app = add_views(Flask("own_handler", instance_path=str(tmp_path / "instance")))
    app.config.update(SECRET_KEY="k" * 32, SESSION_TYPE="memory")

    @app.errorhandler(StoreUnavailable)
    def maintenance(error: StoreUnavailable) -> tuple[dict[str, str], int]:
        return {"status": "maintenance", "store": error.store}, 503

    Session(app)
    client = app.test_client()
    client.post("/login")
    with_outage_switch(app).down.add("load")

    response = client.get("/whoami")
    assert response.status_code == 503
    assert response.get_json() == {"status": "maintenance", "store": "memory"}


@pytest.mark.parametrize("operation", ["create", "update", "delete"])
def test_store_down_while_saving_answers_503_without_cookie(
    make_app: MakeApp, server_config: dict[str, Any], operation: str
) -> None:
    app = add_views(make_app(server_config))

    @app.get("/logout")
    def logout() -> str:
        session.clear()
        return "bye"

    client = app.test_client()
    if operation != "create":
        client.post("/login")
    with_outage_switch(app).down.add(operation)

    if operation == "delete":
        response = client.get("/logout")
    else:
        response = client.post("/login?user=laozhao")
    assert response.status_code == 503
    assert "could not be saved" in response.text
    assert session_set_cookie(response) is None
    assert "Cookie" in response.vary


def test_failed_save_leaves_the_previous_session_intact(make_app: MakeApp,
                                                        server_config: dict[str, Any]) -> None:
    app = add_views(make_app(server_config))
    client = app.test_client()
    client.post("/login")
    switch = with_outage_switch(app)
    switch.down.add("update")
    assert client.post("/login?user=laozhao").status_code == 503
    switch.down.clear()
    assert client.get("/whoami").text == "laowang"


def test_a_5xx_response_writes_nothing(make_app: MakeApp, server_config: dict[str, Any]) -> None:
    app = add_views(make_app(server_config))
    client = app.test_client()
    client.post("/login")
    counter = count_store_calls(app)
    response = client.post("/fail")
    assert response.status_code == 500
    assert counter.writes == 0
    assert session_set_cookie(response) is None
    assert client.get("/whoami").text == "laowang"


# -- CLI -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "filesystem", "memory"])
def test_cleanup_command_removes_expired_sessions_and_prints_the_count(
    make_app: MakeApp, tmp_path: Path, kind: str
) -> None:
    config = {"SESSION_TYPE": kind, "SESSION_FILE_DIR": str(tmp_path / "files"),
              "PERMANENT_SESSION_LIFETIME": 3600}
    app = add_views(make_app(config))
    backend = app.extensions["sessionkeeper"].backend
    live = app.test_client()
    live.post("/login?user=alive")
    backend.clock = lambda: time.time() - 2 * 3600  # sessions made two hours ago
    for _ in range(3):
        app.test_client().post("/login?user=gone")
    backend.clock = time.time

    runner = app.test_cli_runner()
    result = runner.invoke(args=["sessions", "cleanup"])
    assert result.exit_code == 0, result.output
    assert f"removed 3 expired sessions from the {kind} store" in result.output
    assert "removed 0 expired" in runner.invoke(args=["sessions", "cleanup"]).output
    assert live.get("/whoami").text == "alive"


def test_cleanup_command_with_cookie_sessions_explains_there_is_nothing_to_do(
    make_app: MakeApp,
) -> None:
    app = make_app(SESSION_TYPE="cookie")
    result = app.test_cli_runner().invoke(args=["sessions", "cleanup"])
    assert result.exit_code == 0
    assert "nothing to clean up" in result.output


def test_cleanup_command_reports_an_unreachable_store(make_app: MakeApp) -> None:
    app = make_app(SESSION_TYPE="memory")
    with_outage_switch(app).down.add("delete_expired")
    result = app.test_cli_runner().invoke(args=["sessions", "cleanup"])
    assert result.exit_code != 0
    assert "unavailable" in result.output
    assert "Traceback" not in result.output
