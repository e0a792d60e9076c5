"""Signed standalone cookies: ``set_signed_cookie`` / ``get_signed_cookie``.

The seeds set plain cookies (``resp.set_cookie('nickname', 'laowang', max_age=3600)``)
that any browser user can rewrite. The signed versions keep the value readable but
unforgeable: a changed, moved, re-salted or too old value reads as the default.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from types import SimpleNamespace

import itsdangerous.timed
import pytest
from flask import Flask, Response, make_response, request
from flask.testing import FlaskClient

from sessionkeeper.errors import ConfigurationError
from sessionkeeper.flask import get_signed_cookie, set_signed_cookie

KEY = "signing-key-" * 4
OLD_KEY = "retired-key-" * 4
IN_30_DAYS = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=30)


def cookie_app(secret: str | None = KEY, fallbacks: list[str] | None = None) -> Flask:
    app = Flask("signed_cookies")
    app.config.update(SECRET_KEY=secret, SECRET_KEY_FALLBACKS=fallbacks or [], TESTING=True)

    @app.route("/setcookie")
    def setcookie() -> Response:
        resp = make_response("cookies set")
        set_signed_cookie(resp, "nickname", request.args.get("nickname", "laowang"),
                          max_age=3600)
        set_signed_cookie(resp, "age", "12", expires=IN_30_DAYS)
        return resp

    @app.route("/getcookie")
    def getcookie() -> str:
        max_age = request.args.get("max_age", type=int)
        nickname = get_signed_cookie("nickname", "guest", max_age=max_age)
        age = get_signed_cookie("age")
        return f"nickname={nickname} age={age}"

    @app.route("/remember")
    def remember() -> Response:
        resp = make_response("remembered")
        set_signed_cookie(resp, "remember", "user-42", salt=request.args["salt"],
                          httponly=True, secure=True, samesite="Lax")
        return resp

    @app.route("/recall")
    def recall() -> str:
        return str(get_signed_cookie("remember", salt=request.args["salt"]))

    @app.route("/delcookie")
    def delcookie() -> Response:
        resp = make_response("deleted")
        resp.delete_cookie("nickname")
        return resp

    return app


def header_for(response: Response, name: str) -> str:
    [header] = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(f"{name}=")]
    return header


def cookie_value(client: FlaskClient, name: str) -> str:
    cookie = client.get_cookie(name)
    assert cookie is not None
    return cookie.value


def test_round_trip() -> None:
    client = cookie_app().test_client()
    assert client.get("/setcookie").status_code == 200
    assert client.get("/getcookie").text == "nickname=laowang age=12"


def test_value_stays_readable_but_carries_a_signature() -> None:
    client = cookie_app().test_client()
    client.get("/setcookie?nickname=laozhao")
    value = cookie_value(client, "nickname")
    assert value.startswith("laozhao.")
    assert len(value) > len("laozhao.") + 20


def test_unicode_values_round_trip() -> None:
    client = cookie_app().test_client()
    client.get("/setcookie?nickname=老王 wang")
    assert client.get("/getcookie").text == "nickname=老王 wang age=12"


def test_missing_cookie_reads_as_default() -> None:
    assert cookie_app().test_client().get("/getcookie").text == "nickname=guest age=None"


@pytest.mark.parametrize("forge", [
    pytest.param(lambda v: "admin" + v[v.index("."):], id="value-changed"),
    pytest.param(lambda v: v[:-3] + ("xyz" if not v.endswith("xyz") else "abc"),
                 id="signature-changed"),
    pytest.param(lambda v: v.rsplit(".", 1)[0], id="signature-removed"),
    pytest.param(lambda v: "laowang", id="plain-value"),
    pytest.param(lambda v: "", id="empty"),
])
def test_tampered_cookie_reads_as_default(forge: Callable[[str], str],
                                          caplog: pytest.LogCaptureFixture) -> None:
    client = cookie_app().test_client()
    client.get("/setcookie")
    client.set_cookie("nickname", forge(cookie_value(client, "nickname")))

    caplog.set_level(logging.INFO, logger="sessionkeeper")
    response = client.get("/getcookie")
    assert response.status_code == 200
    assert response.text == "nickname=guest age=12"
    assert any("nickname" in r.getMessage() and "rejected" in r.getMessage()
               for r in caplog.records if r.name == "sessionkeeper")


def test_value_moved_to_another_cookie_name_reads_as_default() -> None:
    client = cookie_app().test_client()
    client.get("/setcookie")
    # The signed nickname "laowang" replayed as the "age" cookie.
    client.set_cookie("age", cookie_value(client, "nickname"))
    assert client.get("/getcookie").text == "nickname=laowang age=None"


def test_value_signed_with_another_salt_reads_as_default() -> None:
    client = cookie_app().test_client()
    client.get("/remember?salt=login")
    assert client.get("/recall?salt=login").text == "user-42"
    assert client.get("/recall?salt=password-reset").text == "None"
    assert client.get("/recall?salt=").text == "None"


def test_value_older_than_max_age_reads_as_default(monkeypatch: pytest.MonkeyPatch) -> None:
    client = cookie_app().test_client()
    # The cookie was signed two hours ago (its signature carries the time).
    two_hours_ago = time.time() - 2 * 3600
    monkeypatch.setattr(itsdangerous.timed, "time", SimpleNamespace(time=lambda: two_hours_ago))
    client.get("/setcookie")
    monkeypatch.undo()

    assert client.get("/getcookie?max_age=3600").text == "nickname=guest age=12"
    assert client.get("/getcookie?max_age=10800").text == "nickname=laowang age=12"
    assert client.get("/getcookie").text == "nickname=laowang age=12"


def test_fresh_value_within_max_age_is_accepted() -> None:
    client = cookie_app().test_client()
    client.get("/setcookie")
    assert client.get("/getcookie?max_age=60").text == "nickname=laowang age=12"


def test_value_signed_with_a_fallback_key_is_accepted() -> None:
    old = cookie_app(secret=OLD_KEY).test_client()
    old.get("/setcookie")
    value = cookie_value(old, "nickname")

    rotated = cookie_app(secret=KEY, fallbacks=[OLD_KEY]).test_client()
    rotated.set_cookie("nickname", value)
    assert rotated.get("/getcookie").text == "nickname=laowang age=None"

    not_listed = cookie_app(secret=KEY).test_client()
    not_listed.set_cookie("nickname", value)
    assert not_listed.get("/getcookie").text == "nickname=guest age=None"


def test_new_values_are_signed_with_the_current_key() -> None:
    rotated = cookie_app(secret=KEY, fallbacks=[OLD_KEY]).test_client()
    rotated.get("/setcookie")
    only_current = cookie_app(secret=KEY).test_client()
    only_current.set_cookie("nickname", cookie_value(rotated, "nickname"))
    assert only_current.get("/getcookie").text == "nickname=laowang age=None"


def test_max_age_and_expires_reach_set_cookie() -> None:
    response = cookie_app().test_client().get("/setcookie")
    nickname = header_for(response, "nickname")
    assert "Max-Age=3600" in nickname
    age = header_for(response, "age")
    expires = age.split("Expires=")[1].split(";")[0]
    assert parsedate_to_datetime(expires) == IN_30_DAYS
    assert "Max-Age" not in age


def test_other_cookie_options_reach_set_cookie() -> None:
    response = cookie_app().test_client().get("/remember?salt=login")
    header = header_for(response, "remember")
    assert "HttpOnly" in header
    assert "Secure" in header
    assert "SameSite=Lax" in header


def test_deleted_cookie_reads_as_default() -> None:
    client = cookie_app().test_client()
    client.get("/setcookie")
    response = client.get("/delcookie")
    assert "Max-Age=0" in header_for(response, "nickname")
    assert client.get("/getcookie").text == "nickname=guest age=12"


def test_signing_without_secret_key_says_what_to_set() -> None:
    app = cookie_app(secret=None)
    with pytest.raises(ConfigurationError, match="SECRET_KEY"):
        app.test_client().get("/setcookie")
