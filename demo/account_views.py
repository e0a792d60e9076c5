"""Your devices and your password: see every session of your account, end any of them,
and change your password, which signs out every other session.

Ending sessions and changing the password ask for the password again: whoever sits at
an unlocked, logged-in browser must not be able to lock its owner out of the other
ones (ASVS 3.3.4, 3.7.1). That also makes these forms worthless to a cross-site forger.
"""

from __future__ import annotations

from datetime import datetime, timezone

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue

from sessionkeeper.accounts import SessionInfo
from sessionkeeper.flask import user_sessions

from .browsers import browser_name
from .session_views import current_session
from .signed_out import forget_login
from .users import (
    MIN_PASSWORD_LENGTH,
    USERS_BY_UID,
    Accounts,
    DemoUser,
    password_problem,
)

account_views = Blueprint("accounts", __name__)

MAX_HANDLE_LENGTH = 200  # handles are short digests; anything longer is not one


def accounts() -> Accounts:
    return current_app.extensions["demo_accounts"]  # type: ignore[no-any-return]


def signed_in_user() -> DemoUser | None:
    """The user this session is bound to by ``session.login``, or None."""
    uid = current_session().user_id
    return USERS_BY_UID.get(uid) if uid else None


def sessions_ended(count: int, other: bool = False) -> str:
    """``1`` -> ``"1 other session"``; the noun agrees with the number."""
    noun = "session" if count == 1 else "sessions"
    return f"{count} {'other ' if other else ''}{noun}"


def cookie_sessions() -> bool:
    return bool(current_app.extensions["sessionkeeper"].settings.session_type == "cookie")


def others_ended(count: int) -> str:
    """What ``revoke_others`` did, for a flash message."""
    if cookie_sessions():
        return "every other session"  # cookie sessions cannot be counted, only stamped
    return sessions_ended(count, other=True)


def _must_log_in() -> ResponseReturnValue:
    flash("Log in to manage your devices and password")
    return redirect(url_for("sessions.login"))


def _requested_handle() -> str:
    handle = request.values.get("handle", "")
    return handle if len(handle) <= MAX_HANDLE_LENGTH else ""


def _find(handle: str) -> SessionInfo | None:
    return next((info for info in user_sessions.list() if info.handle == handle), None)


def describe(info: SessionInfo) -> str:
    """A session as its owner recognises it: browser and when it was last used."""
    return f"{browser_name(info.user_agent)}, last seen {utc(info.last_seen)}"


account_views.add_app_template_filter(browser_name, "browser_name")


@account_views.app_template_filter("utc")
def utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@account_views.route("/devices")
def devices() -> ResponseReturnValue:
    user = signed_in_user()
    if user is None:
        return _must_log_in()
    listed = user_sessions.list()
    return render_template("devices.html", user=user, devices=listed,
                           show_ip=any(info.ip for info in listed),
                           cookie_sessions=cookie_sessions())


def _confirm_page(*, title: str, question: str, action: str, button: str,
                  handle: str | None = None, error: str | None = None,
                  status: int = 200) -> ResponseReturnValue:
    return render_template("confirm.html", title=title, question=question, action=action,
                           button=button, handle=handle, error=error), status


def _revoke_page(info: SessionInfo, error: str | None = None,
                 status: int = 200) -> ResponseReturnValue:
    question = f"Sign out the session of {describe(info)}?"
    if info.current:
        question += " That is this device: you will be logged out here."
    return _confirm_page(title="Revoke a session", question=question,
                         action=url_for("accounts.revoke"), button="Revoke",
                         handle=info.handle, error=error, status=status)


def _others_page(error: str | None = None, status: int = 200) -> ResponseReturnValue:
    return _confirm_page(title="Sign out everywhere else",
                         question="Sign out every session of your account but this one?",
                         action=url_for("accounts.revoke_others"),
                         button="Sign out everywhere else", error=error, status=status)


def _already_ended() -> ResponseReturnValue:
    flash("That session had already ended")
    return redirect(url_for("accounts.devices"))


WRONG_PASSWORD = "Your password is not right."


@account_views.route("/devices/revoke", methods=["GET", "POST"])
def revoke() -> ResponseReturnValue:
    user = signed_in_user()
    if user is None:
        return _must_log_in()
    handle = _requested_handle()
    info = _find(handle) if handle else None
    if info is None:  # ended meanwhile, or not a session of this user
        return _already_ended()
    if request.method == "GET":
        return _revoke_page(info)
    if not accounts().password_matches(user, request.form.get("password", "")):
        return _revoke_page(info, error=WRONG_PASSWORD, status=403)
    if not user_sessions.revoke(handle):
        return _already_ended()
    flash(f"Signed out {sessions_ended(1)}: {describe(info)}")
    response = redirect(url_for("accounts.devices"))
    # Signed out here, on purpose: no "signed out from another device" next time.
    return forget_login(response) if info.current else response


@account_views.route("/devices/revoke-others", methods=["GET", "POST"])
def revoke_others() -> ResponseReturnValue:
    user = signed_in_user()
    if user is None:
        return _must_log_in()
    if request.method == "GET":
        return _others_page()
    if not accounts().password_matches(user, request.form.get("password", "")):
        return _others_page(error=WRONG_PASSWORD, status=403)
    ended = user_sessions.revoke_others()
    flash(f"Signed out {others_ended(ended)}")
    return redirect(url_for("accounts.devices"))


def _password_page(error: str | None = None, status: int = 200) -> ResponseReturnValue:
    return render_template("password.html", error=error,
                           min_length=MIN_PASSWORD_LENGTH), status


@account_views.route("/password", methods=["GET", "POST"])
def change_password() -> ResponseReturnValue:
    user = signed_in_user()
    if user is None:
        return _must_log_in()
    if request.method == "GET":
        return _password_page()
    form = request.form
    current_ok = accounts().password_matches(user, form.get("current_password", ""))
    new = form.get("new_password", "")
    problem = password_problem(current_ok, new, form.get("confirm_password", ""))
    if problem is not None:
        return _password_page(problem, 400 if current_ok else 403)
    accounts().change_password(user, new)
    # Whoever knew the old password may be logged in elsewhere: end those sessions.
    ended = user_sessions.revoke_others()
    flash(f"Your password was changed. Signed out {others_ended(ended)}.")
    return redirect(url_for("accounts.devices"))
