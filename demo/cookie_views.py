"""Plain and signed cookies: the tutorials' /setcookie, /getcookie and /delcookie, and
/set_cookie, /get_cookie and /del_cookie as the other tutorial spells them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flask import Blueprint, Response, make_response, render_template, request

from sessionkeeper.flask import get_signed_cookie, set_signed_cookie

cookie_views = Blueprint("cookies", __name__)

NICKNAME_MAX_AGE = 3600  # seconds
USER_MAX_AGE = 30  # seconds
AGE_LIFETIME = timedelta(days=30)
SIGNED_COOKIE = "remember"


def _page(title: str, *lines: str) -> Response:
    return make_response(render_template("message.html", title=title, lines=lines))


@cookie_views.route("/setcookie", methods=["GET", "POST"])
def setcookie() -> Response:
    expires = datetime.now(timezone.utc) + AGE_LIFETIME
    response = _page(
        "Cookies set",
        f"nickname=laowang, kept for {NICKNAME_MAX_AGE} seconds (max_age)",
        f"age=12, kept until {expires:%Y-%m-%d %H:%M} UTC (expires)",
    )
    response.set_cookie("nickname", "laowang", max_age=NICKNAME_MAX_AGE)
    response.set_cookie("age", "12", expires=expires)
    return response


@cookie_views.route("/getcookie", methods=["GET", "POST"])
def getcookie() -> Response:
    nickname = request.cookies.get("nickname")
    age = request.cookies.get("age")
    return _page("Cookies read", f"nickname={nickname} age={age}")


@cookie_views.route("/delcookie", methods=["GET", "POST"])
def delcookie() -> Response:
    response = _page("Cookie deleted", "nickname is gone; age stays")
    # Deleting a cookie is asking the browser to expire it now.
    response.delete_cookie("nickname")
    return response


@cookie_views.route("/set_cookie")
def set_cookie() -> Response:
    response = _page(
        "Cookies set",
        "username=xiaoming, kept until the browser closes (no max_age)",
        f"user=xiaoming, kept for {USER_MAX_AGE} seconds (max_age)",
    )
    response.set_cookie("username", "xiaoming")
    response.set_cookie("user", "xiaoming", max_age=USER_MAX_AGE)
    return response


@cookie_views.route("/get_cookie")
def get_cookie() -> Response:
    username = request.cookies.get("username")
    user = request.cookies.get("user")
    return _page("Cookies read", f"username={username},user={user}")


@cookie_views.route("/del_cookie")
def del_cookie() -> Response:
    response = _page("Cookies deleted", "username and user are gone")
    # The tutorial's way, the same request delete_cookie makes: an empty value that
    # expires at once, so the browser drops the cookie.
    response.set_cookie("user", "", max_age=0)
    response.set_cookie("username", "", max_age=0)
    return response


@cookie_views.route("/set_signed_cookie")
def set_signed() -> Response:
    response = _page("Signed cookie set",
                     f"{SIGNED_COOKIE}=laowang, signed: readable by the browser, not forgeable")
    set_signed_cookie(response, SIGNED_COOKIE, "laowang", max_age=NICKNAME_MAX_AGE,
                      httponly=True)
    return response


@cookie_views.route("/get_signed_cookie")
def get_signed() -> Response:
    value = get_signed_cookie(SIGNED_COOKIE)
    if value is None:
        return _page("Signed cookie read",
                     f"{SIGNED_COOKIE}=None (missing, or its signature does not match)")
    return _page("Signed cookie read", f"{SIGNED_COOKIE}={value}")
