"""Whatever a session accepts reads back; what it cannot keep fails when it is stored.

Values nested deeper than MAX_DEPTH are refused by the request that stores them, with an
error naming the key, and the session stays usable. Stored data nested deeper (records
of an older version, a forged cookie) is a bad session - a fresh one, logged - never a
RecursionError on every later request. Non-finite floats are kept as Flask's own cookie
keeps them; the JSON format, which has no way to write them, refuses them by key.
Every store and both cookie kinds run these, through real requests.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import COOKIE_KINDS, STORE_KINDS, provider
from flask import Flask, Response, jsonify, request, session
from flask.testing import FlaskClient
from itsdangerous import URLSafeTimedSerializer

from sessionkeeper.encryption import CookieCipher
from sessionkeeper.serialization import MAX_DEPTH
from sessionkeeper.server_side import ServerSideSessions
from sessionkeeper.signing import KeyRing
from sessionkeeper.stores.base import SessionRecord

MakeApp = Callable[..., Flask]


def nested(shape: str, depth: int) -> Any:
    """A value ``depth`` lists, dicts or tuples deep."""
    value: Any = "leaf"
    for level in range(depth):
        if shape == "list":
            value = [value]
        elif shape == "dict":
            value = {"k": value}
        else:
            value = (value, level)
    return value


def depth_of(value: Any) -> int:
    depth = 0
    while isinstance(value, list | tuple | dict):
        value = value["k"] if isinstance(value, dict) else value[0]
        depth += 1
    return depth


def add_views(app: Flask) -> Flask:
    @app.post("/login")
    def login() -> str:
        session["user"] = "alice"
        return "ok"

    @app.get("/whoami")
    def whoami() -> str:
        return str(session.get("user", "anonymous"))

    @app.post("/deep")
    def store_deep() -> str:
        session["deep"] = nested(request.args["shape"], int(request.args["depth"]))
        return "stored"

    @app.get("/deep")
    def read_deep() -> Response:
        value = session.get("deep")
        return jsonify(depth=None if value is None else depth_of(value))

    @app.post("/score")
    def score() -> str:
        session["score"] = float(request.args["v"])
        return "ok"

    @app.post("/scores/append")
    def scores_append() -> str:
        session.setdefault("scores", [1.0]).append(float(request.args["v"]))
        return "ok"

    @app.get("/scores")
    def scores() -> str:
        return repr((session.get("score"), session.get("scores")))

    @app.post("/logout")
    def logout() -> str:
        session.clear()
        return "bye"

    return app


@dataclass
class Lab:
    app: Flask
    kind: str
    caplog: pytest.LogCaptureFixture

    def logged_in(self) -> FlaskClient:
        client = self.app.test_client()
        assert client.post("/login").status_code == 200
        return client

    def logged_fresh_start(self) -> bool:
        return any(r.name == "sessionkeeper" and r.levelno == logging.INFO
                   and "fresh" in r.getMessage() for r in self.caplog.records)


def make_lab(make_app: MakeApp, config: dict[str, Any], kind: str,
             caplog: pytest.LogCaptureFixture) -> Lab:
    caplog.set_level(logging.INFO, logger="sessionkeeper")
    # Users see a failing request as a 500, not as an exception in the test client.
    app = add_views(make_app(config, PROPAGATE_EXCEPTIONS=False))
    return Lab(app, kind, caplog)


@pytest.fixture
def lab(make_app: MakeApp, app_config: dict[str, Any], app_kind: str,
        caplog: pytest.LogCaptureFixture) -> Lab:
    return make_lab(make_app, app_config, app_kind, caplog)


# -- nesting -----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", ["tuple", "list", "dict"])
def test_a_value_nested_to_the_limit_is_stored_and_reads_back(lab: Lab, shape: str) -> None:
    client = lab.logged_in()

    assert client.post(f"/deep?shape={shape}&depth={MAX_DEPTH}").status_code == 200
    response = client.get("/deep")

    assert response.status_code == 200
    assert response.get_json() == {"depth": MAX_DEPTH}
    assert client.get("/whoami").text == "alice"


@pytest.mark.parametrize(("shape", "depth"), [
    ("tuple", MAX_DEPTH + 1), ("tuple", 245), ("tuple", 490), ("list", 490), ("dict", 490),
])
def test_a_value_nested_too_deep_fails_the_request_that_stores_it(
    lab: Lab, shape: str, depth: int
) -> None:
    client = lab.logged_in()

    response = client.post(f"/deep?shape={shape}&depth={depth}")

    assert response.status_code == 500
    assert f"session['deep'] cannot be stored: a session value may nest at most {MAX_DEPTH}" \
        in lab.caplog.text
    # Nothing of it was kept, and the session goes on working, logout included.
    assert client.get("/deep").get_json() == {"depth": None}
    assert client.get("/whoami").text == "alice"
    assert client.post("/logout").status_code == 200
    assert client.get("/whoami").text == "anonymous"


def tagged_tuples(fmt: str, depth: int) -> bytes:
    """Tuples nested ``depth`` deep, as older versions stored them (written out by hand:
    encoding them needs more recursion than a test has to spare)."""
    if fmt == "json":
        return b'{" t":[' * depth + b"1" + b"]}" * depth
    return b"\x81\xa2 t\x91" * depth + b"\x01"


def lists(fmt: str, depth: int) -> bytes:
    if fmt == "json":
        return b"[" * depth + b"1" + b"]" * depth
    return b"\x91" * depth + b"\x01"


@pytest.fixture(params=STORE_KINDS)
def server_lab(request: pytest.FixtureRequest, make_app: MakeApp, tmp_path: Path,
               caplog: pytest.LogCaptureFixture) -> Iterator[Lab]:
    with provider(request.param).flask_config(tmp_path) as config:
        yield make_lab(make_app, config, str(request.param), caplog)


@pytest.mark.parametrize("stored", [
    pytest.param(lambda fmt: tagged_tuples(fmt, MAX_DEPTH + 1), id="tuples-101"),
    pytest.param(lambda fmt: tagged_tuples(fmt, 245), id="tuples-245"),
    pytest.param(lambda fmt: tagged_tuples(fmt, 490), id="tuples-490"),
    pytest.param(lambda fmt: lists(fmt, 5000), id="lists-5000"),
])
def test_a_stored_value_nested_too_deep_is_a_fresh_session_not_a_500(
    server_lab: Lab, stored: Callable[[str], bytes]
) -> None:
    backend = server_lab.app.extensions["sessionkeeper"].backend
    assert isinstance(backend, ServerSideSessions)
    now, sid = time.time(), backend.ids.new()
    key = backend.key(sid)
    backend.store.create(key, SessionRecord(
        values={"user": backend.codec.encode("alice"),
                "deep": stored(backend.codec.format)},
        created_at=now, accessed_at=now, expires_at=now + 3600, permanent=True,
    ))
    client = server_lab.app.test_client()
    client.set_cookie("session", backend.token(sid))

    response = client.get("/deep")

    assert response.status_code == 200, response.text
    assert response.get_json() == {"depth": None}
    assert server_lab.logged_fresh_start()
    assert backend.store.load(key, time.time()) is None
    assert client.get("/whoami").text == "anonymous"
    assert client.post("/logout").status_code == 200


class _Text:
    """Lets itsdangerous sign a hand-written payload as it is."""

    @staticmethod
    def dumps(text: str) -> str:
        return str(text)  # also when itsdangerous probes it with {}: a text serializer

    @staticmethod
    def loads(text: str) -> str:
        return text


def forged_cookie(app: Flask, payload: str, *, encrypted: bool) -> str:
    """A cookie carrying ``payload``, signed (or sealed) with the app's own key."""
    if encrypted:
        cipher = CookieCipher(KeyRing(str(app.secret_key)))
        return cipher.encrypt(payload.encode(), int(time.time()))
    signer = URLSafeTimedSerializer(
        str(app.secret_key), salt="cookie-session", serializer=_Text,
        signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha1})
    return signer.dumps(payload)


@pytest.fixture(params=list(COOKIE_KINDS))
def cookie_lab(request: pytest.FixtureRequest, make_app: MakeApp,
               caplog: pytest.LogCaptureFixture) -> Lab:
    return make_lab(make_app, COOKIE_KINDS[request.param], str(request.param), caplog)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 490, 1200])  # 1200: past the recursion limit
def test_a_cookie_nested_too_deep_is_a_bad_cookie_not_a_500(cookie_lab: Lab, depth: int
                                                            ) -> None:
    payload = '{"user":"alice","deep":' + "[" * depth + "1" + "]" * depth + "}"
    client = cookie_lab.app.test_client()
    client.set_cookie("session", forged_cookie(
        cookie_lab.app, payload, encrypted=cookie_lab.kind == "cookie-encrypted"))

    response = client.get("/whoami")

    assert response.status_code == 200, response.text
    assert response.text == "anonymous"
    assert cookie_lab.logged_fresh_start()
    assert client.get("/deep").get_json() == {"depth": None}
    assert client.post("/logout").status_code == 200


def test_a_forged_cookie_just_at_the_limit_is_read(cookie_lab: Lab) -> None:
    payload = '{"deep":' + "[" * MAX_DEPTH + '"leaf"' + "]" * MAX_DEPTH + "}"
    client = cookie_lab.app.test_client()
    client.set_cookie("session", forged_cookie(
        cookie_lab.app, payload, encrypted=cookie_lab.kind == "cookie-encrypted"))

    assert client.get("/deep").get_json() == {"depth": MAX_DEPTH}


# -- non-finite floats -------------------------------------------------------------------
@pytest.mark.parametrize("text", ["inf", "-inf", "nan"])
def test_non_finite_floats_are_kept(lab: Lab, text: str) -> None:
    client = lab.logged_in()

    assert client.post(f"/score?v={text}").status_code == 200
    assert client.post("/scores/append?v=2.5").status_code == 200
    assert client.post(f"/scores/append?v={text}").status_code == 200  # changed in place
    response = client.get("/scores")

    assert response.status_code == 200
    assert response.text == repr((float(text), [1.0, 2.5, float(text)]))


@pytest.fixture(params=STORE_KINDS)
def json_lab(request: pytest.FixtureRequest, make_app: MakeApp, tmp_path: Path,
             caplog: pytest.LogCaptureFixture) -> Iterator[Lab]:
    with provider(request.param).flask_config(tmp_path) as config:
        yield make_lab(make_app, {**config, "SESSION_SERIALIZATION_FORMAT": "json"},
                       str(request.param), caplog)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=repr)
def test_the_json_format_refuses_non_finite_floats_naming_the_key(json_lab: Lab,
                                                                  value: float) -> None:
    client = json_lab.logged_in()

    assert client.post(f"/score?v={value}").status_code == 500
    assert client.post("/scores/append?v=2.5").status_code == 200
    assert client.post(f"/scores/append?v={value}").status_code == 500

    assert "session['score'] cannot be stored" in json_lab.caplog.text
    assert "session['scores'] cannot be stored" in json_lab.caplog.text
    assert client.get("/scores").text == repr((None, [1.0, 2.5]))
    assert client.get("/whoami").text == "alice"
