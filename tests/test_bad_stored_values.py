"""A stored value that no longer decodes never gives a 500, on every server-side store.

A value can stop decoding when SESSION_SERIALIZATION_FORMAT changes with sessions stored,
or when its bytes are damaged. Such a session is treated like a bad cookie: the request
that meets the value answers 200 with a fresh, empty session, a line is logged, the
stored record is removed and its cookie cleared; views that never read the value, and
logout, keep working. Records are written through the store's own API, exactly as the
app would have written them except for the one damaged value, and then used through
real requests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import provider
from flask import Flask, Response, get_flashed_messages, jsonify, request, session
from flask.testing import FlaskClient

from sessionkeeper.serialization import ValueCodec
from sessionkeeper.server_side import ServerSideSessions
from sessionkeeper.stores.base import SessionRecord

MakeApp = Callable[..., Flask]
FORMATS = ("msgpack", "json")


def other_format(fmt: str) -> str:
    return "json" if fmt == "msgpack" else "msgpack"


#: how a stored value can stop decoding, as bytes for a store of the given format
DAMAGE: dict[str, Callable[[str], bytes]] = {
    # Random bytes: for stores that keep a record as one blob, the whole record is damaged.
    "garbage bytes": lambda fmt: b"\xc1\xff\x00garbage",
    # Written before SESSION_SERIALIZATION_FORMAT changed.
    "other format": lambda fmt: ValueCodec(other_format(fmt)).encode(["apple"]),  # type: ignore[arg-type]
    # Well-formed in the format, but no session value (a damaged bytes tag).
    "damaged tag": lambda fmt: ValueCodec(fmt).module.encode({" b": "not base64!"}),  # type: ignore[arg-type]
}


def add_views(app: Flask) -> Flask:
    @app.get("/user")
    def user() -> str:
        return str(session.get("user", "anonymous"))

    @app.get("/cart")
    def cart() -> Response:
        return jsonify(cart=session.get("cart", []), has_cart="cart" in session)

    @app.get("/everything")
    def everything() -> Response:
        return jsonify(dict(session))

    @app.post("/cart/add")
    def cart_add() -> str:
        session.setdefault("cart", []).append(request.args["item"])
        return "ok"

    @app.get("/flashes")
    def flashes() -> Response:
        return jsonify(get_flashed_messages())

    @app.post("/logout")
    def logout() -> str:
        session.clear()
        return "bye"

    @app.get("/about")
    def about() -> str:
        return "a page that never uses the session"

    return app


@dataclass
class Lab:
    """An app on one store, and a way to plant records in that store."""

    app: Flask
    backend: ServerSideSessions
    fmt: str
    caplog: pytest.LogCaptureFixture

    def plant(self, **values: bytes) -> tuple[str, FlaskClient]:
        """A record holding ``values`` (already encoded); its key and a client whose
        cookie points at it."""
        backend, now = self.backend, time.time()
        sid = backend.ids.new()
        key = backend.key(sid)
        backend.store.create(key, SessionRecord(
            values=values, created_at=now, accessed_at=now,
            expires_at=now + backend.policy.window, permanent=True,
        ))
        client = self.app.test_client()
        client.set_cookie("session", backend.token(sid))
        return key, client

    def encode(self, value: Any) -> bytes:
        return self.backend.codec.encode(value)

    def stored(self, key: str) -> SessionRecord | None:
        return self.backend.store.load(key, time.time())

    def logged_fresh_start(self) -> bool:
        return any(r.name == "sessionkeeper" and r.levelno == logging.INFO
                   and "fresh" in r.getMessage() for r in self.caplog.records)


@pytest.fixture(params=FORMATS)
def lab(request: pytest.FixtureRequest, store_kind: str, tmp_path: Path, make_app: MakeApp,
        caplog: pytest.LogCaptureFixture) -> Iterator[Lab]:
    caplog.set_level(logging.INFO, logger="sessionkeeper")
    fmt = str(request.param)
    with provider(store_kind).flask_config(tmp_path) as config:
        app = add_views(make_app(config, SESSION_SERIALIZATION_FORMAT=fmt))
        backend = app.extensions["sessionkeeper"].backend
        assert isinstance(backend, ServerSideSessions)
        yield Lab(app, backend, fmt, caplog)


def cookie_cleared(response: Response) -> bool:
    return any(h.startswith("session=;") and "Max-Age=0" in h
               for h in response.headers.getlist("Set-Cookie"))


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_value_that_no_longer_decodes_gives_a_fresh_session(
    lab: Lab, damage: Callable[[str], bytes]
) -> None:
    key, client = lab.plant(user=lab.encode("alice"), cart=damage(lab.fmt))

    assert client.get("/about").status_code == 200
    response = client.get("/cart")

    assert response.status_code == 200, response.text
    assert response.get_json() == {"cart": [], "has_cart": False}
    assert lab.logged_fresh_start(), [r.getMessage() for r in lab.caplog.records]
    assert cookie_cleared(response)
    assert lab.stored(key) is None
    # The rest of the old session went with it; the app goes on working.
    assert client.get("/user").text == "anonymous"
    assert client.get("/everything").get_json() == {}
    assert client.post("/logout").status_code == 200


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_writing_after_meeting_a_damaged_value_starts_a_new_session(
    lab: Lab, damage: Callable[[str], bytes]
) -> None:
    key, client = lab.plant(user=lab.encode("alice"), cart=damage(lab.fmt))
    old_cookie = client.get_cookie("session")
    assert old_cookie is not None

    # The view reads the damaged cart and then writes a new one: as after a logout,
    # that is a new session under a new id.
    response = client.post("/cart/add?item=pear")

    assert response.status_code == 200, response.text
    new_cookie = client.get_cookie("session")
    assert new_cookie is not None and new_cookie.value != old_cookie.value
    assert lab.stored(key) is None
    assert client.get("/cart").get_json() == {"cart": ["pear"], "has_cart": True}
    assert client.get("/user").text == "anonymous"


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_views_that_never_read_the_damaged_value_work_and_logout_removes_it(
    lab: Lab, damage: Callable[[str], bytes]
) -> None:
    key, client = lab.plant(user=lab.encode("alice"), cart=damage(lab.fmt))

    if DAMAGE["damaged tag"] is damage:  # the record itself is intact: only "cart" is bad
        assert client.get("/user").text == "alice"
    for path in ("/user", "/about"):
        assert client.get(path).status_code == 200
    response = client.post("/logout")

    assert response.status_code == 200
    assert lab.stored(key) is None
    assert client.get("/user").text == "anonymous"


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_damaged_flash_messages_give_a_fresh_session(
    lab: Lab, damage: Callable[[str], bytes]
) -> None:
    # Flask's get_flashed_messages(): `session.pop("_flashes") if "_flashes" in session`.
    key, client = lab.plant(user=lab.encode("alice"), _flashes=damage(lab.fmt))

    response = client.get("/flashes")

    assert response.status_code == 200, response.text
    assert response.get_json() == []
    assert lab.stored(key) is None
    assert client.get("/user").text == "anonymous"
