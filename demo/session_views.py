"""Sessions: log in and out, store and read values, permanence, a cart, a JSON API."""

from __future__ import annotations

from datetime import datetime, timezone

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue

from sessionkeeper.flask import FlaskSession

from .signed_out import forget_login, remember_login
from .users import Accounts

session_views = Blueprint("sessions", __name__)

MAX_CART_ITEMS = 20
MAX_ITEM_LENGTH = 40


def current_session() -> FlaskSession:
    """``flask.session`` as sessionkeeper's object, for ``login()`` and expiry times."""
    current = session._get_current_object()  # type: ignore[attr-defined]
    if not isinstance(current, FlaskSession):
        raise RuntimeError("the demo needs sessionkeeper's Session(app)")
    return current


def _page(title: str, *lines: str, status: int = 200) -> ResponseReturnValue:
    return render_template("message.html", title=title, lines=lines), status


@session_views.route("/", methods=["GET", "POST"])
def index() -> ResponseReturnValue:
    current = current_session()
    username = current.get("username")
    until = None
    if username and current.permanent:
        until = datetime.fromtimestamp(current.expires_at, timezone.utc)
    return render_template("index.html", username=username, permanent_until=until)


@session_views.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    if request.method == "GET":
        return render_template("login.html", error=None, username="")
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    accounts: Accounts = current_app.extensions["demo_accounts"]
    user = accounts.authenticate(username, password)
    if user is None:
        return render_template("login.html", error="Login failed!", username=username)
    current = current_session()
    current["username"] = user.username
    current["uid"] = user.uid
    # A new session id at login, so an id planted before login is worthless; and the
    # session joins the user's list on /devices, from where it can be revoked.
    current.login(user.uid)
    flash("You were logged in")
    response = redirect(url_for("sessions.index"))
    remember_login(response, user.uid, _cookie_lifetime(current))
    return response


def _cookie_lifetime(current: FlaskSession) -> float | None:
    """The session cookie's Max-Age: None (ends with the browser) unless permanent."""
    if not current.permanent:
        return None
    return float(current_app.extensions["sessionkeeper"].backend.policy.window)


# POST only, from a form button: a link or an <img> on another site cannot log anyone
# out (a GET answers 405, and SameSite=Lax keeps the cookie off cross-site POSTs).
@session_views.post("/logout")
def logout() -> ResponseReturnValue:
    # The record goes, not just the names in it: a copy of the cookie is worthless now,
    # and the session leaves the user's list of devices.
    current_session().logout()
    flash("You were logged out")
    return forget_login(redirect(url_for("sessions.index")))


@session_views.route("/set_session")
def set_session() -> ResponseReturnValue:
    session["username"] = "xiaoming"
    session["info"] = {"name": "xiaohong", "age": 16}
    return _page("set_session", "username and info are in the session")


@session_views.route("/get_session")
def get_session() -> ResponseReturnValue:
    return jsonify(username=session.get("username"), info=session.get("info"))


@session_views.route("/del_session")
def del_session() -> ResponseReturnValue:
    # pop() of a missing key raises KeyError, so check first.
    if "username" in session:
        session.pop("username")
    if "info" in session:
        session.pop("info")
    return _page("del_session", "username and info were removed from the session")


@session_views.route("/permanent")
def permanent() -> ResponseReturnValue:
    if not session:
        return _page("Permanent session",
                     "There is nothing in your session to keep yet: log in first.")
    session.permanent = True
    # The policy's window, not just PERMANENT_SESSION_LIFETIME: an idle timeout shortens it.
    window = current_app.extensions["sessionkeeper"].backend.policy.window
    response = make_response(_page(
        "Permanent session",
        f"Your session is now kept for {describe_duration(window)} after your last "
        "visit, even if you close the browser."))
    user_id = current_session().user_id
    if user_id is not None:  # the "logged in here" marker lasts as long as the session
        remember_login(response, user_id, window)
    return response


def describe_duration(seconds: float) -> str:
    """``2678400`` -> ``"31 days"``; the largest unit that divides it, else seconds."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    count = int(seconds)
    return f"{count} second{'' if count == 1 else 's'}"


@session_views.route("/cart")
def cart() -> ResponseReturnValue:
    return render_template("cart.html", cart=session.get("cart", []))


@session_views.route("/cart/add/<item>")
def cart_add(item: str) -> ResponseReturnValue:
    if len(item) > MAX_ITEM_LENGTH:
        return _page("Cart", f"Item names are at most {MAX_ITEM_LENGTH} characters.",
                     status=400)
    if len(session.get("cart", [])) >= MAX_CART_ITEMS:
        return _page("Cart", f"The cart holds at most {MAX_CART_ITEMS} items.", status=400)
    # An in-place change, without session.modified = True: sessionkeeper notices it.
    session.setdefault("cart", []).append(item)
    return render_template("cart.html", cart=session["cart"])


@session_views.route("/comment", methods=["GET", "POST"])
def comment() -> ResponseReturnValue:
    username = session.get("username")
    if not username:
        return jsonify(msg="No login, login in comments first"), 401
    return jsonify(msg=f"Comment succeeded:{username}")


@session_views.route("/error")
def error() -> ResponseReturnValue:
    abort(500)
