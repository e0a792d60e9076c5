"""The session's Set-Cookie header (flask/set_cookie.py) is werkzeug's, byte for byte."""

from __future__ import annotations

import time
import warnings
from typing import Any

from flask import Flask, session
from flask.wrappers import Response as FlaskResponse
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.http import dump_cookie
from werkzeug.wrappers import Response

from sessionkeeper.flask import Session
from sessionkeeper.flask.set_cookie import SetCookie

names = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126,
                                       exclude_characters=";,= \"\\"), min_size=1, max_size=12)
# signed tokens, base64 and also what werkzeug quotes (spaces, quotes, commas, non-ASCII)
values = st.one_of(st.from_regex(r"[A-Za-z0-9_.\-:!]{0,60}", fullmatch=True),
                   st.text(max_size=30))
options = st.fixed_dictionaries({
    "domain": st.sampled_from([None, "example.com", ".sub.example.org", "localhost:5000"]),
    "path": st.sampled_from([None, "/", "/app", "/a b;c/é"]),
    "secure": st.booleans(),
    "httponly": st.booleans(),
    "samesite": st.sampled_from([None, "Lax", "strict", "None"]),
    "partitioned": st.booleans(),
})
max_ages = st.one_of(st.none(), st.integers(min_value=0, max_value=10 ** 9))


@settings(max_examples=400, deadline=None)
@given(names, values, options, max_ages, st.floats(min_value=0, max_value=4e9))
def test_the_header_is_the_one_werkzeug_writes(name: str, value: str, cookie: dict[str, Any],
                                               max_age: int | None, now: float) -> None:
    header = SetCookie(name, cookie).header(value, max_age, now)
    expires = None if max_age is None else now + max_age
    expected = dump_cookie(name, value, max_age=max_age, expires=expires, **cookie)
    if header is None:  # left to werkzeug: only values it quotes
        assert expected.split(";", 1)[0] != f"{name}={value}"
    else:
        assert header == expected


def test_a_header_over_the_size_limit_still_warns_as_werkzeug_does() -> None:
    response = Response()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SetCookie("session", {"path": "/"}).add_to(response, "v" * 5000, 60)
    assert any("too large" in str(w.message) for w in caught)
    assert response.headers["Set-Cookie"].startswith("session=vvv")


def test_a_flask_response_sends_the_cookie_werkzeug_would(tmp_path: Any) -> None:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="k", SESSION_TYPE="filesystem",
                      SESSION_FILE_DIR=str(tmp_path), SESSION_COOKIE_DOMAIN="example.com",
                      SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_SECURE=True)
    Session(app)

    @app.post("/set")
    def set_value() -> str:
        session["n"] = 1
        return "ok"

    client = app.test_client()
    before = time.time()
    sent = client.post("/set", base_url="https://example.com").headers["Set-Cookie"]
    value = sent.split(";", 1)[0].split("=", 1)[1]
    lifetime = int(app.permanent_session_lifetime.total_seconds())
    candidates = {dump_cookie("session", value, max_age=lifetime, expires=moment + lifetime,
                              domain="example.com", path="/", secure=True, httponly=True,
                              samesite="Strict")
                  for moment in (before, time.time())}
    assert sent in candidates


def test_each_second_gets_its_own_expiry() -> None:
    cookie = SetCookie("session", {"path": "/", "httponly": True})
    for now in (1000.2, 1000.9, 1001.0, 999.5, 86400 * 365.25 * 30):
        assert cookie.header("v", 60, now) == dump_cookie(
            "session", "v", max_age=60, expires=now + 60, path="/", httponly=True)


def _writing_app(tmp_path: Any, response_class: type[Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="k", SESSION_TYPE="filesystem",
                      SESSION_FILE_DIR=str(tmp_path))
    if response_class is not None:
        app.response_class = response_class
    Session(app)

    @app.post("/set")
    def set_value() -> str:
        session["n"] = 1
        return "ok"

    return app


def _size_warnings(app: Flask) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        response = app.test_client().post("/set")
    assert response.headers["Set-Cookie"].startswith("session=")
    return [str(w.message) for w in caught if "too large" in str(w.message)]


def test_max_cookie_size_is_the_apps_as_flask_reads_it(tmp_path: Any) -> None:
    app = _writing_app(tmp_path)
    assert not _size_warnings(app)
    app.config["MAX_COOKIE_SIZE"] = 40  # under a session cookie's length: werkzeug warns

    assert _size_warnings(app)


def test_a_response_class_with_its_own_cookie_size_limit_is_asked(tmp_path: Any) -> None:
    class SmallCookies(FlaskResponse):
        max_cookie_size = 40  # type: ignore[assignment]

    assert _size_warnings(_writing_app(tmp_path, SmallCookies))
