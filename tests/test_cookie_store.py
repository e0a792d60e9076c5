"""SESSION_TYPE="cookie": the session lives in a signed (optionally encrypted) cookie.

The signed cookie is Flask's own format, so users stay logged in when an app moves from
Flask's default session to sessionkeeper and back. These tests pass real cookies between
a plain Flask app and a sessionkeeper app sharing one SECRET_KEY.
"""

from __future__ import annotations

import base64
import logging
import random
import secrets
import string
import time
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from types import SimpleNamespace
from typing import Any

import itsdangerous.timed
import pytest
from flask import Flask, Response, request, session
from flask.sessions import SecureCookieSessionInterface
from flask.testing import FlaskClient
from itsdangerous import BadSignature
from markupsafe import Markup

from sessionkeeper.errors import SessionTooLarge

MakeApp = Callable[..., Flask]
OLD_KEY = "old-secret-key-" * 3
NEW_KEY = "new-secret-key-" * 3

#: Every value type Flask's cookie serializer tags, as the seeds' apps store them.
PROFILE: dict[str, Any] = {
    "user": "laowang",
    "uid": 123456,
    "roles": ("admin", "editor"),
    "avatar": b"\x89PNG\x00\xff",
    "since": datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc),
    "motd": Markup("<b>welcome</b>"),
    "prefs": {"langs": ["zh", "en"], "theme": "dark"},  # Flask sorts keys
    "ratio": 0.25,
    "flag": None,
}


def add_views(app: Flask) -> Flask:
    @app.post("/login")
    def login() -> str:
        session.update(PROFILE)
        session.permanent = request.args.get("permanent", "1") == "1"
        return "ok"

    @app.get("/whoami")
    def whoami() -> str:
        return session.get("user", "anonymous")

    @app.get("/profile")
    def profile() -> str:
        return repr(({key: session.get(key) for key in PROFILE}, session.permanent))

    @app.post("/rename")
    def rename() -> str:
        session["user"] = request.args["to"]
        return "ok"

    @app.post("/cart/add")
    def cart_add() -> str:
        # In-place change of a nested value, without session.modified = True.
        session.setdefault("cart", {"items": []})["items"].append(request.args["item"])
        return "ok"

    @app.get("/cart")
    def cart() -> str:
        return ",".join(session.get("cart", {"items": []})["items"])

    @app.post("/stuff")
    def stuff() -> str:
        session["blob"] = request.get_data(as_text=True)
        return "ok"

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

    return app


def plain_flask(secret: str = NEW_KEY, fallbacks: list[str] | None = None) -> Flask:
    """An app on Flask's built-in cookie session, as apps are before switching."""
    app = Flask("plain_flask")
    app.config.update(SECRET_KEY=secret, SECRET_KEY_FALLBACKS=fallbacks or [], TESTING=True)
    return add_views(app)


def cookie_app(make_app: MakeApp, secret: str = NEW_KEY, **config: Any) -> Flask:
    return add_views(make_app(SESSION_TYPE="cookie", SECRET_KEY=secret, **config))


def session_cookie(client: FlaskClient) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None, "no session cookie was kept"
    return cookie.value


def client_with(app: Flask, value: str) -> FlaskClient:
    client = app.test_client()
    client.set_cookie("session", value)
    return client


def login_cookie(app: Flask, permanent: bool = True) -> str:
    client = app.test_client()
    assert client.post(f"/login?permanent={int(permanent)}").status_code == 200
    return session_cookie(client)


def expected_profile(permanent: bool) -> str:
    return repr((PROFILE, permanent))


def set_cookie_headers(response: Response) -> list[str]:
    return [h for h in response.headers.getlist("Set-Cookie") if h.startswith("session=")]


def move_clock(app: Flask, seconds: float) -> None:
    """Let the session backend believe ``seconds`` more have passed than really did."""
    app.extensions["sessionkeeper"].backend.clock = lambda: time.time() + seconds


def unsealed(value: str) -> bytes:
    body = value[1:]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def sealed(blob: bytes) -> str:
    return "~" + base64.urlsafe_b64encode(blob).decode().rstrip("=")


# -- compatibility with Flask's own session cookie ------------------------------------


@pytest.mark.parametrize("permanent", [True, False])
def test_cookie_from_plain_flask_is_read_by_sessionkeeper(
    make_app: MakeApp, permanent: bool
) -> None:
    value = login_cookie(plain_flask(), permanent)
    switched = cookie_app(make_app)
    response = client_with(switched, value).get("/profile")
    assert response.status_code == 200
    assert response.text == expected_profile(permanent)
    # As Flask: a read re-signs a permanent cookie, and leaves a browser-session one.
    assert len(set_cookie_headers(response)) == (1 if permanent else 0)


@pytest.mark.parametrize("permanent", [True, False])
def test_cookie_from_sessionkeeper_is_read_by_plain_flask(
    make_app: MakeApp, permanent: bool
) -> None:
    value = login_cookie(cookie_app(make_app), permanent)
    response = client_with(plain_flask(), value).get("/profile")
    assert response.text == expected_profile(permanent)


def test_permanence_gives_the_same_cookie_lifetime_as_flask(make_app: MakeApp) -> None:
    ours = cookie_app(make_app).test_client().post("/login")
    flasks = plain_flask().test_client().post("/login")
    [our_header] = set_cookie_headers(ours)
    [flask_header] = set_cookie_headers(flasks)
    # Flask sends only Expires; Max-Age says the same and wins over a skewed client clock.
    ours_end, flasks_end = (parsedate_to_datetime(h.split("Expires=")[1].split(";")[0])
                            for h in (our_header, flask_header))
    assert abs((ours_end - flasks_end).total_seconds()) < 60
    assert "Max-Age=2678400" in our_header

    browser_session = cookie_app(make_app).test_client().post("/login?permanent=0")
    [header] = set_cookie_headers(browser_session)
    assert "Max-Age" not in header
    assert "Expires" not in header


def test_round_trip_through_both_apps_keeps_changes(make_app: MakeApp) -> None:
    flask_app, ours = plain_flask(), cookie_app(make_app)
    client = client_with(ours, login_cookie(flask_app))
    client.post("/rename?to=laozhao")
    back = client_with(flask_app, session_cookie(client))
    assert back.get("/whoami").text == "laozhao"


NON_FINITE = ["inf", "-inf", "nan"]


@pytest.mark.parametrize("text", NON_FINITE)
def test_non_finite_floats_are_kept_as_flask_keeps_them(make_app: MakeApp, text: str) -> None:
    client = cookie_app(make_app).test_client()

    assert client.post(f"/score?v={text}").status_code == 200
    assert client.post(f"/scores/append?v={text}").status_code == 200  # changed in place
    expected = repr((float(text), [1.0, float(text)]))

    assert client.get("/scores").text == expected
    assert client_with(plain_flask(), session_cookie(client)).get("/scores").text == expected


@pytest.mark.parametrize("text", NON_FINITE)
def test_a_flask_cookie_holding_non_finite_floats_is_read_and_changed(
    make_app: MakeApp, text: str
) -> None:
    flask_client = plain_flask().test_client()
    flask_client.post(f"/scores/append?v={text}")
    client = client_with(cookie_app(make_app), session_cookie(flask_client))

    response = client.get("/scores")
    assert response.status_code == 200
    assert response.text == repr((None, [1.0, float(text)]))

    assert client.post("/scores/append?v=2.5").status_code == 200
    back = client_with(plain_flask(), session_cookie(client))
    assert back.get("/scores").text == repr((None, [1.0, float(text), 2.5]))


# -- rejected cookies ----------------------------------------------------------------


@pytest.mark.parametrize("where", ["payload", "timestamp", "signature"])
def test_tampered_cookie_gives_a_fresh_session(
    make_app: MakeApp, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    value = login_cookie(plain_flask())
    payload, stamp, signature = value.rsplit(".", 2)
    part = {"payload": payload, "timestamp": stamp, "signature": signature}[where]
    index = len(part) // 2
    forged_part = part[:index] + ("A" if part[index] != "A" else "B") + part[index + 1:]
    forged = value.replace(part, forged_part, 1)

    caplog.set_level(logging.INFO, logger="sessionkeeper")
    response = client_with(cookie_app(make_app), forged).get("/whoami")
    assert response.status_code == 200
    assert response.text == "anonymous"
    assert any("rejected" in r.getMessage() for r in caplog.records)


def test_cookie_signed_with_another_key_gives_a_fresh_session(make_app: MakeApp) -> None:
    value = login_cookie(plain_flask(secret="somebody-elses-key"))
    assert client_with(cookie_app(make_app), value).get("/whoami").text == "anonymous"


def test_cookie_older_than_lifetime_gives_a_fresh_session(make_app: MakeApp) -> None:
    app = cookie_app(make_app, PERMANENT_SESSION_LIFETIME=3600)
    value = login_cookie(app)
    move_clock(app, 3500)
    assert client_with(app, value).get("/whoami").text == "laowang"
    move_clock(app, 3601)
    assert client_with(app, value).get("/whoami").text == "anonymous"


def test_flask_cookie_issued_before_the_lifetime_is_rejected(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Flask signed this cookie 32 days ago: its signature timestamp says so.
    long_ago = time.time() - 32 * 24 * 3600
    monkeypatch.setattr(itsdangerous.timed, "time", SimpleNamespace(time=lambda: long_ago))
    value = login_cookie(plain_flask())
    monkeypatch.undo()

    assert client_with(cookie_app(make_app), value).get("/whoami").text == "anonymous"
    # With a longer lifetime the same cookie is still good: the age is what decides.
    longer = cookie_app(make_app, PERMANENT_SESSION_LIFETIME=40 * 24 * 3600)
    assert client_with(longer, value).get("/whoami").text == "laowang"


# -- key rotation --------------------------------------------------------------------


def test_cookie_signed_with_a_fallback_key_is_accepted_and_reissued_with_the_new_key(
    make_app: MakeApp,
) -> None:
    value = login_cookie(plain_flask(secret=OLD_KEY))
    rotated = cookie_app(make_app, secret=NEW_KEY, SECRET_KEY_FALLBACKS=[OLD_KEY])
    client = client_with(rotated, value)
    assert client.get("/whoami").text == "laowang"

    client.post("/rename?to=laozhao")
    reissued = session_cookie(client)
    new_key_only = SecureCookieSessionInterface().get_signing_serializer(plain_flask(NEW_KEY))
    old_key_only = SecureCookieSessionInterface().get_signing_serializer(plain_flask(OLD_KEY))
    assert new_key_only is not None and old_key_only is not None
    assert new_key_only.loads(reissued)["user"] == "laozhao"
    with pytest.raises(BadSignature):
        old_key_only.loads(reissued)


def test_old_key_not_listed_in_fallbacks_is_rejected(make_app: MakeApp) -> None:
    value = login_cookie(plain_flask(secret=OLD_KEY))
    rotated = cookie_app(make_app, secret=NEW_KEY, SECRET_KEY_FALLBACKS=["unrelated-key"])
    assert client_with(rotated, value).get("/whoami").text == "anonymous"


# -- encryption ----------------------------------------------------------------------


def test_encrypted_cookie_hides_the_data(make_app: MakeApp) -> None:
    app = cookie_app(make_app, SESSION_COOKIE_ENCRYPT=True)
    value = login_cookie(app)

    assert value.startswith("~")
    blob = unsealed(value)
    for secret in (b"laowang", b"admin", b"dark", b"123456"):
        assert secret not in value.encode()
        assert secret not in blob
    client = client_with(app, value)
    assert client.get("/profile").text == expected_profile(True)


def test_encrypted_cookie_is_not_readable_as_a_signed_one(make_app: MakeApp) -> None:
    value = login_cookie(cookie_app(make_app, SESSION_COOKIE_ENCRYPT=True))
    assert client_with(plain_flask(), value).get("/whoami").text == "anonymous"
    assert client_with(cookie_app(make_app), value).get("/whoami").text == "anonymous"


def test_encrypted_cookie_decrypts_after_rotation_via_fallbacks(make_app: MakeApp) -> None:
    value = login_cookie(cookie_app(make_app, secret=OLD_KEY, SESSION_COOKIE_ENCRYPT=True))

    rotated = cookie_app(make_app, secret=NEW_KEY, SECRET_KEY_FALLBACKS=[OLD_KEY],
                         SESSION_COOKIE_ENCRYPT=True)
    client = client_with(rotated, value)
    assert client.get("/whoami").text == "laowang"
    client.post("/rename?to=laozhao")
    reissued = session_cookie(client)

    new_only = cookie_app(make_app, secret=NEW_KEY, SESSION_COOKIE_ENCRYPT=True)
    assert client_with(new_only, reissued).get("/whoami").text == "laozhao"
    assert client_with(new_only, value).get("/whoami").text == "anonymous"


def test_tampering_any_byte_of_an_encrypted_cookie_gives_a_fresh_session(
    make_app: MakeApp,
) -> None:
    app = cookie_app(make_app, SESSION_COOKIE_ENCRYPT=True)
    value = login_cookie(app)
    blob = unsealed(value)
    assert client_with(app, sealed(blob)).get("/whoami").text == "laowang"

    accepted = []
    for index in range(len(blob)):
        forged = bytearray(blob)
        forged[index] ^= 0x01
        if client_with(app, sealed(bytes(forged))).get("/whoami").text != "anonymous":
            accepted.append(index)
    for cut in (1, 16, len(blob) // 2):
        if client_with(app, sealed(blob[:-cut])).get("/whoami").text != "anonymous":
            accepted.append(-cut)
    assert accepted == []


def test_encrypted_cookie_older_than_lifetime_gives_a_fresh_session(make_app: MakeApp) -> None:
    app = cookie_app(make_app, SESSION_COOKIE_ENCRYPT=True, PERMANENT_SESSION_LIFETIME=3600)
    client = client_with(app, login_cookie(app))
    move_clock(app, 3601)
    assert client.get("/whoami").text == "anonymous"


def test_signed_flask_cookie_still_accepted_when_encryption_is_turned_on(
    make_app: MakeApp,
) -> None:
    value = login_cookie(plain_flask())
    encrypting = cookie_app(make_app, SESSION_COOKIE_ENCRYPT=True)
    client = client_with(encrypting, value)
    assert client.get("/profile").text == expected_profile(True)

    client.post("/rename?to=laozhao")  # the next cookie issued is encrypted
    reissued = session_cookie(client)
    assert reissued.startswith("~")
    assert b"laozhao" not in unsealed(reissued)
    assert client.get("/whoami").text == "laozhao"


# -- a permanent cookie is re-issued on every request, used or not (as Flask's) ----------


def untouched_response(app: Flask, value: str) -> Response:
    """A request with the cookie ``value`` to a view that never uses the session."""
    app.add_url_rule("/health", "health", lambda: "ok")
    return client_with(app, value).get("/health")


@pytest.mark.parametrize("data", [{"user": "laowang"}, PROFILE], ids=["plain", "compressed"])
def test_an_untouched_permanent_cookie_is_reissued_later_under_the_current_key(
        make_app: MakeApp, data: dict[str, Any]) -> None:
    flask_app = plain_flask(secret=OLD_KEY)
    flask_app.add_url_rule("/keep", "keep", lambda: session.update(data, _permanent=True)
                           or "ok", methods=["POST"])
    client = flask_app.test_client()
    client.post("/keep")
    value = session_cookie(client)
    ours = cookie_app(make_app, SECRET_KEY_FALLBACKS=[OLD_KEY])
    move_clock(ours, 3600)

    [header] = set_cookie_headers(untouched_response(ours, value))

    reissued = header.split(";")[0].removeprefix("session=")
    # itsdangerous compresses a payload when that makes it shorter: kept as it came
    assert reissued.startswith(".") == value.startswith(".") == (data is PROFILE)
    new_key_only = SecureCookieSessionInterface().get_signing_serializer(plain_flask(NEW_KEY))
    assert new_key_only is not None
    loaded, signed_at = new_key_only.loads(reissued, return_timestamp=True)
    assert loaded == {**data, "_permanent": True}
    assert abs(signed_at.timestamp() - (time.time() + 3600)) < 5
    assert "Max-Age=2678400" in header
    assert client_with(ours, reissued).get("/whoami").text == "laowang"


def test_an_untouched_browser_session_cookie_is_not_reissued(make_app: MakeApp) -> None:
    value = login_cookie(plain_flask(), permanent=False)
    ours = cookie_app(make_app)
    move_clock(ours, 3600)
    response = untouched_response(ours, value)
    assert response.text == "ok" and set_cookie_headers(response) == []


#: base64 of {"_permanent":true,"user":"mallory"}, signed by no one
FORGED_PERMANENT = "eyJfcGVybWFuZW50Ijp0cnVlLCJ1c2VyIjoibWFsbG9yeSJ9"


@pytest.mark.parametrize("forge", [
    lambda value: value[:-2] + ("AA" if value[-2:] != "AA" else "BB"),  # signature
    lambda value: "e30" + value[value.index("."):],  # payload: an empty one
    lambda value: "%%%." + value.split(".", 1)[1],  # payload: not base64
    # payload: another permanent one, which the unverified look lets through
    lambda value: FORGED_PERMANENT + value[value.index("."):],
], ids=["signature", "payload", "garbled", "permanent-payload"])
def test_an_untouched_tampered_cookie_is_not_reissued(
        make_app: MakeApp, forge: Callable[[str], str]) -> None:
    value = forge(login_cookie(plain_flask(), permanent=True))
    response = untouched_response(cookie_app(make_app), value)
    assert response.text == "ok" and set_cookie_headers(response) == []


def test_an_untouched_signed_cookie_is_reissued_encrypted_when_encryption_is_on(
        make_app: MakeApp) -> None:
    value = login_cookie(plain_flask(), permanent=True)
    encrypting = cookie_app(make_app, SESSION_COOKIE_ENCRYPT=True)
    [header] = set_cookie_headers(untouched_response(encrypting, value))
    reissued = header.split(";")[0].removeprefix("session=")
    assert reissued.startswith("~") and b"laowang" not in unsealed(reissued)
    assert client_with(encrypting, reissued).get("/profile").text == expected_profile(True)

    move_clock(encrypting, 3600)  # and an encrypted one is re-sealed
    [again] = set_cookie_headers(client_with(encrypting, reissued).get("/health"))
    resealed = again.split(";")[0].removeprefix("session=")
    assert resealed.startswith("~") and resealed != reissued
    assert client_with(encrypting, resealed).get("/profile").text == expected_profile(True)


# -- size limit ------------------------------------------------------------------------


def test_session_over_browser_limit_raises_instead_of_sending_a_dropped_cookie(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    app = cookie_app(make_app)
    client = app.test_client()
    client.post("/login")
    before = session_cookie(client)

    # Random text does not compress: the signed cookie would be well over 4093 bytes.
    with pytest.raises(SessionTooLarge) as caught:
        client.post("/stuff", data=secrets.token_urlsafe(3600))
    message = str(caught.value)
    assert "4093" in message
    assert "server-side SESSION_TYPE" in message
    assert any(r.levelno == logging.ERROR and r.name == "sessionkeeper"
               for r in caplog.records)
    # The browser keeps its previous, still valid, cookie.
    assert session_cookie(client) == before
    assert client.get("/whoami").text == "laowang"


def test_session_over_browser_limit_in_production_is_a_500_without_cookie(
    make_app: MakeApp,
) -> None:
    app = cookie_app(make_app, TESTING=False)
    response = app.test_client().post("/stuff", data=secrets.token_urlsafe(3600))
    assert response.status_code == 500
    assert set_cookie_headers(response) == []


COOKIE_LIMIT = 4093  # bytes of name, "=" and value (docs/cookies.md)
#: text that compresses about as well at any length, the same in every run
FILLER = "".join(random.Random(4093).choices(string.ascii_letters + string.digits, k=6000))


def largest_fitting_filler(make_app: MakeApp, **config: Any) -> tuple[int, int]:
    """How much of FILLER the "session" cookie holds within the limit, and that
    cookie's size. The size grows unevenly with the data (compression, base64), so the
    cookie's name, which the limit counts too, closes the gap byte by byte."""
    app = cookie_app(make_app, PROPAGATE_EXCEPTIONS=False, **config)

    def size(n: int) -> int | None:
        response = app.test_client().post("/stuff", data=FILLER[:n])
        if response.status_code == 500:
            return None
        [header] = set_cookie_headers(response)
        return len(header.split(";")[0])

    fits, too_big = 0, len(FILLER)
    assert size(too_big) is None
    while too_big - fits > 1:
        middle = (fits + too_big) // 2
        if size(middle) is None:
            too_big = middle
        else:
            fits = middle
    found = size(fits)
    assert found is not None and found <= COOKIE_LIMIT
    return fits, found


@pytest.mark.parametrize("encrypt", [False, True], ids=["signed", "encrypted"])
# Werkzeug warns from 4093 bytes of the whole header, attributes included; browsers
# count name and value only, as sessionkeeper does.
@pytest.mark.filterwarnings("ignore:The '.*' cookie is too large")
def test_session_exactly_at_the_limit_is_sent_and_one_byte_more_is_refused(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture, encrypt: bool,
) -> None:
    length, size = largest_fitting_filler(make_app, SESSION_COOKIE_ENCRYPT=encrypt)
    name = "session" + "x" * (COOKIE_LIMIT - size)

    at_limit = cookie_app(make_app, SESSION_COOKIE_NAME=name, SESSION_COOKIE_ENCRYPT=encrypt)
    at_limit.add_url_rule("/stuff", "read_stuff", lambda: session.get("blob", "none"))
    client = at_limit.test_client()
    response = client.post("/stuff", data=FILLER[:length])
    assert response.status_code == 200
    [header] = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(name + "=")]
    assert len(header.split(";")[0]) == COOKIE_LIMIT
    assert client.get("/stuff").text == FILLER[:length]

    over = cookie_app(make_app, SESSION_COOKIE_NAME=name + "x",
                      SESSION_COOKIE_ENCRYPT=encrypt)
    caplog.set_level(logging.ERROR, logger="sessionkeeper")
    caplog.clear()  # the search above logged its refusals too
    client = over.test_client()
    with pytest.raises(SessionTooLarge) as caught:
        client.post("/stuff", data=FILLER[:length])
    assert (caught.value.size, caught.value.limit) == (COOKIE_LIMIT + 1, COOKIE_LIMIT)
    assert str(caught.value).startswith(
        "the session cookie would be 4094 bytes, over the 4093-byte limit browsers keep")
    assert [r.getMessage() for r in caplog.records if r.name == "sessionkeeper"] == [
        "session cookie of 4094 bytes not sent: over the 4093-byte limit"]
    assert client.get_cookie(name + "x") is None


# -- what gets written -------------------------------------------------------------------


def test_nested_mutation_is_saved_without_modified_flag(make_app: MakeApp) -> None:
    app = cookie_app(make_app)
    client = app.test_client()
    client.post("/cart/add?item=apple")
    client.post("/cart/add?item=pear")
    client.post("/cart/add?item=plum")
    assert client.get("/cart").text == "apple,pear,plum"


def test_read_only_request_sends_no_cookie_when_refreshes_are_throttled(
        make_app: MakeApp) -> None:
    app = cookie_app(make_app, SESSION_REFRESH_FRACTION=0.1)
    client = app.test_client()
    client.post("/login")
    for path in ("/whoami", "/profile", "/cart"):
        response = client.get(path)
        assert response.status_code == 200
        assert set_cookie_headers(response) == []


def test_anonymous_read_sends_no_cookie(make_app: MakeApp) -> None:
    response = cookie_app(make_app).test_client().get("/whoami")
    assert response.text == "anonymous"
    assert response.headers.getlist("Set-Cookie") == []
