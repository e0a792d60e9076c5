"""Telling a device that it was signed out from another one.

A revoked session simply stops resolving: on its next request the browser is just
logged out, with no word why. To say why, the demo gives a browser that logs in a small
signed marker cookie (``signed_in``, no session data in it) and takes it away when the
browser logs out here. On a request that carries the marker, the demo reads the session
first; if sessionkeeper refused its cookie as unknown (server stores: the record is
gone) or revoked (cookie sessions: signed out through the per-user stamp), the session
ended without this browser logging out, so the page says "You were signed out from
another device" and the marker goes. Sessions rotated moments ago by a login of this
browser are not refused (they answer without a session), so they never trigger it.
"""

from __future__ import annotations

from typing import Any

from flask import (
    Flask,
    Response,
    after_this_request,
    current_app,
    flash,
    g,
    request,
    session,
)

from sessionkeeper.flask import get_signed_cookie, set_signed_cookie
from sessionkeeper.signals import session_rejected

MARKER = "signed_in"
MESSAGE = "You were signed out from another device"
_SALT = "demo-signed-in"
#: session_rejected reasons that mean "this session was ended", not "this cookie is bad"
ENDED_REASONS = frozenset({"unknown or expired", "revoked"})
_FLAG = "demo_session_ended"


def _cookie_options() -> dict[str, Any]:
    config = current_app.config
    return {"httponly": True, "samesite": config.get("SESSION_COOKIE_SAMESITE") or "Lax",
            "secure": bool(config.get("SESSION_COOKIE_SECURE")), "path": "/"}


def remember_login(response: Response, uid: str, max_age: float | None) -> None:
    """Mark this browser as logged in, for as long as its session cookie lasts.

    API clients carrying their session in SESSION_HEADER_NAME get no cookie at all."""
    header = current_app.config.get("SESSION_HEADER_NAME")
    if header and header in request.headers:
        return
    set_signed_cookie(response, MARKER, uid, salt=_SALT, max_age=max_age, **_cookie_options())


def forget_login(response: Response) -> Response:
    """This browser logged out here (or was told): no message for it later."""
    response.delete_cookie(MARKER, **_cookie_options())
    return response


def install(app: Flask) -> None:
    backend = app.extensions["sessionkeeper"].backend

    def note_rejection(sender: object, **details: Any) -> None:
        if details.get("reason") in ENDED_REASONS:
            g.setdefault(_FLAG, True)

    # weak=False: the receiver lives only in this closure.
    session_rejected.connect(note_rejection, sender=backend, weak=False)

    @app.before_request
    def tell_a_device_signed_out_elsewhere() -> None:
        if MARKER not in request.cookies or get_signed_cookie(MARKER, salt=_SALT) is None:
            return  # not logged in here before: nothing to tell (and nothing to load)
        if "username" in session:  # reading loads it; a refused cookie signals on the way
            return
        if g.pop(_FLAG, False):
            flash(MESSAGE)
            after_this_request(forget_login)
