"""Bad session cookies never break a request, on every app kind.

Whatever a client sends as its session cookie - random text, a tampered, garbled or
truncated copy of a real cookie, something huge, an expired cookie, an id the store
never issued - the request answers 200 with a fresh, empty session, the bad cookie is
cleared, and the "sessionkeeper" logger records the rejection. A view that does not use
the session ignores the cookie entirely: no store call, no cookie, no log line.
"""

from __future__ import annotations

import base64
import logging
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from counting import count_store_calls
from flask import Flask, Response, jsonify, request, session
from flask.sessions import SecureCookieSessionInterface
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessionkeeper.server_side import ServerSideSessions

MakeApp = Callable[..., Flask]

BOUNDED = settings(
    max_examples=60,
    deadline=None,
    # One app per test serves every example; each example uses a fresh client.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
BASE64URL = string.ascii_letters + string.digits + "-_"
#: characters a cookie value could be garbled with (separators and the encryption mark too)
GARBLE = BASE64URL + ".~!*%$ "
#: characters werkzeug releases have read differently (spaces inside a value, quotes,
#: escapes, whitespace that str.strip() removes but the cookie grammar keeps)
TRICKY = ' \t\x0b\x0c\x1c\x1f\x85\xa0"\\;=,'
#: what a raw Cookie header can carry: latin-1 but line breaks, tricky characters often
HEADER_TEXT = st.text(
    alphabet=st.one_of(st.sampled_from(TRICKY),
                       st.characters(max_codepoint=0xFF, exclude_characters="\r\n")),
    max_size=300,
)


@dataclass
class BadCookieLab:
    """An app of one kind with a logged-in user's real cookie to mangle."""

    app: Flask
    kind: str
    valid_cookie: str
    caplog: pytest.LogCaptureFixture

    def send(self, value: str, path: str = "/whoami", *, raw: bool = True) -> Response:
        """A request carrying ``value`` as the session cookie (raw header or via werkzeug)."""
        self.caplog.clear()
        if raw:
            client = self.app.test_client(use_cookies=False)
            return client.get(path, headers={"Cookie": f"session={value}"})
        client = self.app.test_client()
        client.set_cookie("session", value)
        return client.get(path)

    def rejection_logged(self) -> bool:
        return any(r.name == "sessionkeeper" and "fresh" in r.getMessage()
                   for r in self.caplog.records)

    def assert_fresh_session(self, response: Response) -> None:
        assert response.status_code == 200, response.text
        body = response.get_json()
        assert body["session"] == {}
        for header in response.headers.getlist("Set-Cookie"):
            assert header.startswith("session=;") and "Max-Age=0" in header, header
        # The session layer reads the very cookie the app sees in request.cookies: it
        # rejects (and logs) exactly the cookies the app received.
        logged = [r.getMessage() for r in self.caplog.records]
        assert self.rejection_logged() == bool(body["seen"]), (body["seen"], logged)


def add_views(app: Flask) -> Flask:
    @app.post("/login")
    def login() -> str:
        session["user"] = "laowang"
        session["cart"] = ["apple"]
        return "ok"

    @app.get("/whoami")
    def whoami() -> Response:
        # What the app received, and what the session holds for it.
        return jsonify(seen=request.cookies.get("session"), session=dict(session))

    @app.get("/about")
    def about() -> str:
        return "a page that never uses the session"

    return app


@pytest.fixture
def lab(make_app: MakeApp, app_config: dict[str, Any], app_kind: str,
        caplog: pytest.LogCaptureFixture) -> Iterator[BadCookieLab]:
    caplog.set_level(logging.INFO, logger="sessionkeeper")
    app = add_views(make_app(app_config))
    client = app.test_client()
    client.post("/login")
    cookie = client.get_cookie("session")
    assert cookie is not None
    made = BadCookieLab(app, app_kind, cookie.value, caplog)
    # The baseline the properties are measured against: the real cookie works, quietly.
    response = made.send(cookie.value)
    assert response.get_json()["session"] == {"user": "laowang", "cart": ["apple"]}
    assert not made.rejection_logged()
    yield made


def mangled(valid: str) -> st.SearchStrategy[str]:
    """Tampered, garbled, truncated and extended copies of a real cookie.

    The last character is left alone when replacing: in base64 its low bits may be
    padding, so some "changes" there decode to the very same cookie.
    """
    last = len(valid) - 2
    replace_one = st.tuples(st.integers(0, last), st.sampled_from(GARBLE)).filter(
        lambda edit: valid[edit[0]] != edit[1]
    ).map(lambda edit: valid[:edit[0]] + edit[1] + valid[edit[0] + 1:])

    def garble(edits: list[tuple[int, str]]) -> str:
        chars = list(valid)
        for index, char in edits:
            chars[index] = char
        return "".join(chars)

    garbled = st.lists(st.tuples(st.integers(0, last), st.sampled_from(GARBLE)),
                       min_size=2, max_size=12).map(garble).filter(lambda v: v != valid)
    truncated = st.integers(1, len(valid) - 1).map(lambda n: valid[:n])
    extended = st.text(alphabet=BASE64URL, min_size=1, max_size=40).map(lambda s: valid + s)
    spliced = st.tuples(st.integers(1, len(valid) - 1), st.text(GARBLE, min_size=1,
                                                                  max_size=10)).map(
        lambda cut: valid[:cut[0]] + cut[1] + valid[cut[0]:]
    )
    return st.one_of(replace_one, garbled, truncated, extended, spliced)


def unknown_well_formed(lab: BadCookieLab) -> st.SearchStrategy[str]:
    """Cookies shaped exactly like real ones that this app never issued."""
    backend = lab.app.extensions["sessionkeeper"].backend
    if isinstance(backend, ServerSideSessions):
        size = backend.ids.length
        return st.binary(min_size=size, max_size=size).map(
            lambda raw: base64.urlsafe_b64encode(raw).decode().rstrip("=")
        )

    # A genuine Flask session cookie, signed with some other key.
    def flask_cookie(key: bytes, user: str) -> str:
        other = Flask("elsewhere")
        other.secret_key = key
        serializer = SecureCookieSessionInterface().get_signing_serializer(other)
        assert serializer is not None
        return str(serializer.dumps({"user": user}))

    app_key = str(lab.app.secret_key).encode()
    return st.builds(flask_cookie, st.binary(min_size=16, max_size=32).filter(
        lambda key: key != app_key), st.text(max_size=20))


# -- properties ----------------------------------------------------------------------


@BOUNDED
@given(value=st.text(max_size=300))
def test_arbitrary_text_gives_a_fresh_session(lab: BadCookieLab, value: str) -> None:
    lab.assert_fresh_session(lab.send(value, raw=False))


@BOUNDED
@given(value=HEADER_TEXT)
def test_arbitrary_raw_header_bytes_give_a_fresh_session(lab: BadCookieLab, value: str) -> None:
    lab.assert_fresh_session(lab.send(value))


@BOUNDED
@given(data=st.data())
def test_mangled_real_cookie_gives_a_fresh_session(lab: BadCookieLab, data: st.DataObject
                                                   ) -> None:
    value = data.draw(mangled(lab.valid_cookie), label="mangled cookie")
    response = lab.send(value)
    # Logged whenever the app received it (werkzeug 3.1.9 drops a value with a space).
    lab.assert_fresh_session(response)


def oversized(valid: str) -> st.SearchStrategy[str]:
    """5000+ characters: a short pattern repeated, or a real cookie padded out."""
    length = st.integers(5000, 12000)
    repeated = st.builds(lambda unit, size: (unit * size)[:size],
                         st.text(alphabet=GARBLE.strip(), min_size=1, max_size=64), length)
    padded = st.builds(lambda unit, size: valid + (unit * size)[:size],
                       st.text(alphabet=BASE64URL, min_size=1, max_size=8), length)
    return st.one_of(repeated, padded)


@BOUNDED
@given(data=st.data())
def test_oversized_cookie_gives_a_fresh_session(lab: BadCookieLab, data: st.DataObject) -> None:
    value = data.draw(oversized(lab.valid_cookie), label="oversized cookie")
    assert len(value) >= 5000
    response = lab.send(value)
    lab.assert_fresh_session(response)
    assert lab.rejection_logged()


@BOUNDED
@given(data=st.data())
def test_unknown_well_formed_cookie_gives_a_fresh_session(lab: BadCookieLab,
                                                          data: st.DataObject) -> None:
    value = data.draw(unknown_well_formed(lab), label="unknown cookie")
    response = lab.send(value)
    lab.assert_fresh_session(response)
    assert lab.rejection_logged()


@BOUNDED
@given(data=st.data())
def test_bad_cookie_on_a_view_without_session_does_nothing(lab: BadCookieLab,
                                                           data: st.DataObject) -> None:
    value = data.draw(st.one_of(HEADER_TEXT, mangled(lab.valid_cookie),
                                oversized(lab.valid_cookie)), label="bad cookie")
    backend = lab.app.extensions["sessionkeeper"].backend
    counter = count_store_calls(lab.app) if isinstance(backend, ServerSideSessions) else None
    try:
        response = lab.send(value, "/about")
    finally:
        if counter is not None:
            backend.store = counter.inner
    assert response.status_code == 200
    assert response.text == "a page that never uses the session"
    assert response.headers.getlist("Set-Cookie") == []
    assert "Cookie" not in response.vary
    assert [r for r in lab.caplog.records if r.name == "sessionkeeper"] == []
    if counter is not None:
        assert sum(counter.calls.values()) == 0, counter.calls


# -- single cases ----------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    "ab c", "\x85", "\x0bvalue\x1c", "\xa0abc\x85", "a b; other=1", 'a"b', "a\\b", " \t",
])
def test_values_werkzeug_releases_read_differently_give_a_fresh_session(
        lab: BadCookieLab, value: str) -> None:
    lab.assert_fresh_session(lab.send(value))


def test_expired_cookie_gives_a_fresh_session(lab: BadCookieLab) -> None:
    backend = lab.app.extensions["sessionkeeper"].backend
    lifetime = backend.policy.window
    backend.clock = lambda: time.time() + lifetime + 60
    response = lab.send(lab.valid_cookie)
    lab.assert_fresh_session(response)
    assert lab.rejection_logged()


def test_bad_cookie_is_replaced_by_a_new_session_on_login(lab: BadCookieLab) -> None:
    forged = lab.valid_cookie[:-5] + ("AAAAA" if not lab.valid_cookie.endswith("AAAAA")
                                      else "BBBBB")
    client = lab.app.test_client()
    client.set_cookie("session", forged)
    client.post("/login")
    cookie = client.get_cookie("session")
    assert cookie is not None
    # A server-side app never adopts an id it did not issue (session fixation).
    assert cookie.value != forged
    body = client.get("/whoami").get_json()
    assert body["session"] == {"user": "laowang", "cart": ["apple"]}


def test_real_cookie_still_works_after_bad_ones(lab: BadCookieLab) -> None:
    for value in ("garbage", lab.valid_cookie[:10], "~" + lab.valid_cookie, "x" * 5000):
        lab.assert_fresh_session(lab.send(value))
    response = lab.send(lab.valid_cookie)
    assert response.get_json()["session"] == {"user": "laowang", "cart": ["apple"]}
