"""Secure cookie defaults, name prefixes, Partitioned, the Max-Age cap, Vary, ids never
taken from the URL, and header-carried ids for API clients - on every store kind.

ASVS 3.4.1-3.4.5 (cookie attributes), 3.1.1 (no ids in URLs), 3.5.x (tokens for API
clients). Misconfigured prefixes fail or warn at start-up, since browsers silently drop
such cookies.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from conftest import COOKIE_KINDS
from flask import Flask, session

from sessionkeeper.cookie_rules import InsecureCookieWarning
from sessionkeeper.errors import ConfigurationError

MakeApp = Callable[..., Flask]
HTTPS = "https://app.example.test"
TOKEN_HEADER = "X-Session-Token"
FOUR_HUNDRED_DAYS = 400 * 24 * 3600


def add_views(app: Flask) -> Flask:
    @app.post("/login/<user_id>")
    def login(user_id: str) -> str:
        session["user"] = user_id
        session.login(user_id)  # type: ignore[attr-defined]
        return "ok"

    @app.post("/remember/<word>")
    def remember(word: str) -> str:
        session["word"] = word
        return "ok"

    @app.post("/logout")
    def logout() -> str:
        session.logout()  # type: ignore[attr-defined]
        return "bye"

    @app.get("/me")
    def me() -> str:
        return str(session.get("user", "anonymous"))

    @app.get("/static-page")
    def static_page() -> str:
        return "no session here"

    return app


def cookie_header(response: Any, name: str = "session") -> str:
    found = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(f"{name}=")]
    assert len(found) == 1, response.headers.getlist("Set-Cookie")
    return str(found[0])


def attributes(header: str) -> dict[str, str]:
    _, *parts = header.split("; ")
    return {name.lower(): value for name, _, value in (p.partition("=") for p in parts)}


# -- defaults -----------------------------------------------------------------------------


def test_session_cookies_are_httponly_samesite_lax_and_host_only_by_default(
    make_app: MakeApp, app_kind: str, app_config: dict[str, Any],
) -> None:
    app = add_views(make_app(app_config))

    attrs = attributes(cookie_header(app.test_client().post("/login/42")))

    assert "httponly" in attrs
    if app_kind in COOKIE_KINDS:  # Flask's cookie session, sent as Flask sends it
        assert "samesite" not in attrs
    else:
        assert attrs["samesite"] == "Lax"
    assert attrs["path"] == "/"
    assert "domain" not in attrs
    assert "secure" not in attrs  # only when configured: plain-HTTP development works


@pytest.mark.parametrize("kind", sorted(COOKIE_KINDS))
def test_cookie_sessions_send_samesite_lax_when_configured(make_app: MakeApp,
                                                           kind: str) -> None:
    app = add_views(make_app(COOKIE_KINDS[kind], SESSION_COOKIE_SAMESITE="Lax"))
    browser = app.test_client()

    attrs = attributes(cookie_header(browser.post("/login/42")))

    assert attrs["samesite"] == "Lax"
    assert browser.get("/me").text == "42"


def test_secure_and_strict_apply_when_configured(make_app: MakeApp,
                                                 app_config: dict[str, Any]) -> None:
    app = add_views(make_app(app_config, SESSION_COOKIE_SECURE=True,
                             SESSION_COOKIE_SAMESITE="Strict"))
    browser = app.test_client()

    attrs = attributes(cookie_header(browser.post("/login/42", base_url=HTTPS)))

    assert "secure" in attrs and attrs["samesite"] == "Strict"
    assert browser.get("/me", base_url=HTTPS).text == "42"


def test_samesite_is_case_blind(make_app: MakeApp) -> None:
    app = add_views(make_app(SESSION_TYPE="memory", SESSION_COOKIE_SAMESITE="strict"))

    attrs = attributes(cookie_header(app.test_client().post("/login/1")))

    assert attrs["samesite"] == "Strict"


@pytest.mark.parametrize("value", ["sometimes", "Relaxed", 1])
def test_bad_samesite_values_fail_at_start_up(make_app: MakeApp, value: object) -> None:
    with pytest.raises(ConfigurationError, match="SESSION_COOKIE_SAMESITE"):
        make_app(SESSION_TYPE="memory", SESSION_COOKIE_SAMESITE=value)


def test_samesite_none_without_secure_warns(make_app: MakeApp,
                                            caplog: pytest.LogCaptureFixture) -> None:
    with pytest.warns(InsecureCookieWarning, match="SESSION_COOKIE_SECURE"):
        make_app(SESSION_TYPE="memory", SESSION_COOKIE_SAMESITE="None")
    assert any("SESSION_COOKIE_SECURE" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)


# -- __Host- and __Secure- names ------------------------------------------------------------


def test_a_host_prefixed_cookie_works_with_secure_and_no_domain(
    make_app: MakeApp, app_config: dict[str, Any],
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", InsecureCookieWarning)
        app = add_views(make_app(app_config, SESSION_COOKIE_NAME="__Host-session",
                                 SESSION_COOKIE_SECURE=True))
    browser = app.test_client()

    header = cookie_header(browser.post("/login/42", base_url=HTTPS), "__Host-session")

    attrs = attributes(header)
    assert "secure" in attrs and attrs["path"] == "/" and "domain" not in attrs
    assert browser.get("/me", base_url=HTTPS).text == "42"
    logout = cookie_header(browser.post("/logout", base_url=HTTPS), "__Host-session")
    assert "Max-Age=0" in logout and "Secure" in logout  # the deletion obeys the prefix too


@pytest.mark.parametrize(("setting", "value"), [("SESSION_COOKIE_DOMAIN", "example.test"),
                                                ("SESSION_COOKIE_PATH", "/app")])
def test_a_host_prefixed_cookie_with_domain_or_path_fails_at_start_up(
    make_app: MakeApp, setting: str, value: str,
) -> None:
    with pytest.raises(ConfigurationError, match="__Host-"):
        make_app(SESSION_TYPE="memory", SESSION_COOKIE_NAME="__Host-session",
                 SESSION_COOKIE_SECURE=True, **{setting: value})


@pytest.mark.parametrize("name", ["__Host-session", "__Secure-session", "__secure-sid"])
def test_a_prefixed_name_without_secure_warns_at_start_up(
    make_app: MakeApp, name: str, caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.warns(InsecureCookieWarning, match="SESSION_COOKIE_SECURE = True"):
        make_app(SESSION_TYPE="memory", SESSION_COOKIE_NAME=name)
    assert any(name in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_a_secure_prefixed_name_with_secure_starts_quietly(make_app: MakeApp) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", InsecureCookieWarning)
        make_app(SESSION_TYPE="memory", SESSION_COOKIE_NAME="__Secure-session",
                 SESSION_COOKIE_SECURE=True, SESSION_COOKIE_DOMAIN="example.test")


# -- Partitioned and Max-Age --------------------------------------------------------------


def test_partitioned_cookies_are_also_secure(make_app: MakeApp,
                                             app_config: dict[str, Any]) -> None:
    app = add_views(make_app(app_config, SESSION_COOKIE_PARTITIONED=True,
                             SESSION_COOKIE_SECURE=True, SESSION_COOKIE_SAMESITE="None"))

    attrs = attributes(cookie_header(app.test_client().post("/login/42", base_url=HTTPS)))

    assert "partitioned" in attrs and "secure" in attrs and attrs["samesite"] == "None"


def test_max_age_never_exceeds_400_days(make_app: MakeApp, app_config: dict[str, Any]) -> None:
    app = add_views(make_app(app_config, PERMANENT_SESSION_LIFETIME=500 * 24 * 3600))
    browser = app.test_client()

    attrs = attributes(cookie_header(browser.post("/login/42")))

    assert int(attrs["max-age"]) == FOUR_HUNDRED_DAYS
    assert browser.get("/me").text == "42"


# -- Vary ---------------------------------------------------------------------------------


def test_vary_cookie_whenever_the_session_was_used(make_app: MakeApp,
                                                   app_config: dict[str, Any]) -> None:
    app = add_views(make_app(app_config))
    browser = app.test_client()
    browser.post("/login/42")

    read = browser.get("/me")
    untouched = browser.get("/static-page")

    assert read.text == "42" and "Cookie" in read.vary
    if app_config.get("SESSION_TYPE") == "cookie":
        # As Flask's: a permanent cookie is re-signed on every request, used or not.
        assert "Cookie" in untouched.vary and "Set-Cookie" in untouched.headers
    else:
        assert "Cookie" not in untouched.vary  # shared caches may keep such pages


# -- ids are never taken from the URL or the body -------------------------------------------------


def test_a_valid_id_in_the_url_or_a_form_is_ignored(make_app: MakeApp,
                                                    app_config: dict[str, Any]) -> None:
    app = add_views(make_app(app_config))
    victim = app.test_client()
    victim.post("/login/42")
    stolen = victim.get_cookie("session").value  # type: ignore[union-attr]
    attacker = app.test_client()

    assert attacker.get(f"/me?session={stolen}").text == "anonymous"
    assert attacker.get(f"/me?{TOKEN_HEADER}={stolen}").text == "anonymous"
    response = attacker.post("/remember/x", data={"session": stolen})
    assert cookie_header(response).split(";")[0] != f"session={stolen}"
    assert victim.get("/me").text == "42"


# -- the session token in a header, for API clients ------------------------------------------------


def test_api_clients_carry_the_token_in_a_header(make_app: MakeApp,
                                                 app_config: dict[str, Any]) -> None:
    app = add_views(make_app(app_config, SESSION_HEADER_NAME=TOKEN_HEADER))
    api = app.test_client(use_cookies=False)

    started = api.post("/remember/hello", headers={TOKEN_HEADER: ""})
    first = started.headers[TOKEN_HEADER]
    logged_in = api.post("/login/42", headers={TOKEN_HEADER: first})
    token = logged_in.headers[TOKEN_HEADER]

    assert first and token and token != first  # login issues a new token
    assert started.headers.getlist("Set-Cookie") == [] == logged_in.headers.getlist("Set-Cookie")
    assert api.get("/me", headers={TOKEN_HEADER: token}).text == "42"
    assert api.get("/me", headers={TOKEN_HEADER: first}).text == "anonymous"
    assert TOKEN_HEADER in api.get("/me", headers={TOKEN_HEADER: token}).vary

    out = api.post("/logout", headers={TOKEN_HEADER: token})
    assert out.headers[TOKEN_HEADER] == ""  # forget the token
    assert api.get("/me", headers={TOKEN_HEADER: token}).text == "anonymous"


def test_browsers_keep_using_cookies_beside_header_clients(make_app: MakeApp,
                                                           app_config: dict[str, Any]) -> None:
    app = add_views(make_app(app_config, SESSION_HEADER_NAME=TOKEN_HEADER))
    browser = app.test_client()

    response = browser.post("/login/42")

    assert TOKEN_HEADER not in response.headers  # a cookie-borne token is never exposed
    assert browser.get("/me").text == "42"
    # A request naming the header uses it alone: the cookie is not consulted.
    assert browser.get("/me", headers={TOKEN_HEADER: "not-a-token"}).text == "anonymous"
    assert browser.get("/me").text == "42"


def test_the_header_is_ignored_unless_configured(make_app: MakeApp,
                                                 app_config: dict[str, Any]) -> None:
    app = add_views(make_app(app_config))
    api = app.test_client(use_cookies=False)
    browser = app.test_client()
    browser.post("/login/42")
    value = browser.get_cookie("session").value  # type: ignore[union-attr]

    response = api.get("/me", headers={TOKEN_HEADER: value})

    assert response.text == "anonymous" and TOKEN_HEADER not in response.headers


@pytest.mark.parametrize("name", ["", "X Session", "Cookie", "x-token\r\n", 42])
def test_bad_header_names_fail_at_start_up(make_app: MakeApp, name: object) -> None:
    with pytest.raises(ConfigurationError, match="SESSION_HEADER_NAME"):
        make_app(SESSION_TYPE="memory", SESSION_HEADER_NAME=name)


def test_header_tokens_look_like_cookie_tokens(make_app: MakeApp) -> None:
    app = add_views(make_app(SESSION_TYPE="memory", SESSION_HEADER_NAME=TOKEN_HEADER))

    token = app.test_client().post("/login/1", headers={TOKEN_HEADER: ""}).headers[TOKEN_HEADER]

    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token)
