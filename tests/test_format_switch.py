"""Switching SESSION_SERIALIZATION_FORMAT with sessions stored never answers 500.

The records (or values) written in the other format no longer decode. On every server
store that is treated like a bad cookie: the session reads as a fresh, empty one, a line
is logged, the stale record is removed, and logging out or in again works.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import pytest
from conftest import STORE_KINDS, provider
from flask import Flask, session

from sessionkeeper.flask import Session

# Two apps on one store: the in-process memory store cannot be shared between them.
SHARED_KINDS = [kind for kind in STORE_KINDS if kind != "memory"]


def app_on(config: dict[str, object], fmt: str, tmp_path: Path) -> Flask:
    app = Flask("format_switch", instance_path=str(tmp_path / "instance"))
    app.config.update(config, SECRET_KEY="k", TESTING=True, SESSION_SERIALIZATION_FORMAT=fmt)
    Session(app)

    @app.post("/login")
    def login() -> str:
        session.login("ann")
        session["cart"] = {"items": ["tea"], "total": 3}
        return "ok"

    @app.get("/me")
    def me() -> dict[str, object]:
        cart = session.get("cart")  # the values first: a damaged one empties the session
        return {"user": session.user_id, "cart": cart}

    @app.post("/logout")
    def logout() -> str:
        session.logout()
        return "bye"

    return app


@pytest.mark.parametrize("kind", SHARED_KINDS)
@pytest.mark.parametrize(("before", "after"), [("msgpack", "json"), ("json", "msgpack")])
def test_records_of_the_other_format_start_a_fresh_session(
        kind: str, before: str, after: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    with provider(kind).flask_config(tmp_path) as config:
        config = {**config, "SESSION_KEY_PREFIX": f"fmt:{secrets.token_hex(4)}:"}
        old_app = app_on(config, before, tmp_path)
        browser = old_app.test_client()
        assert browser.post("/login").status_code == 200
        cookie = browser.get_cookie("session")
        assert cookie is not None

        new_app = app_on(config, after, tmp_path)
        switched = new_app.test_client()
        switched.set_cookie("session", cookie.value)
        with caplog.at_level(logging.INFO, logger="sessionkeeper"):
            first = switched.get("/me")
        assert first.status_code == 200
        assert first.json == {"user": None, "cart": None}
        assert any("decode" in record.getMessage() for record in caplog.records)
        # The stale record is gone: the old app cannot read it any more either.
        again = old_app.test_client()
        again.set_cookie("session", cookie.value)
        assert again.get("/me").json == {"user": None, "cart": None}
        # The user can log out and in again on the new format.
        assert switched.post("/logout").status_code == 200
        assert switched.post("/login").status_code == 200
        assert switched.get("/me").json == {"user": "ann", "cart": {"items": ["tea"], "total": 3}}
