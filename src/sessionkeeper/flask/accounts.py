"""``user_sessions``: the signed-in user's sessions, for a "your devices" page.

Bound to ``current_app`` and the request's ``session``, so views call it directly::

    for info in user_sessions.list():          # the current session's user
        ...
    user_sessions.revoke(handle)               # one device
    user_sessions.revoke_others()              # e.g. after a password change
    user_sessions.revoke_all()                 # sign out everywhere, here too
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import current_app, request
from flask import session as flask_session

from ..accounts import CookieUserSessions, SessionInfo, UserSessions, handle_of_key
from ..client_side import CookieSessions
from ..device_info import device_info
from ..model import Session
from ..server_side import ServerSideSessions


def device_of_request(fields: Iterable[str]) -> dict[str, str | None]:
    """What SESSION_DEVICE_INFO asks to record about the requesting device."""
    return device_info(fields, request.headers.get("User-Agent"), request.remote_addr)


class FlaskUserSessions:
    """List and revoke sessions of a user; ``user_id=None`` means the current session's
    user (nothing is listed or revoked when the current session is anonymous)."""

    def list(self, user_id: str | int | None = None) -> list[SessionInfo]:
        found = _resolve(user_id)
        if found is None:
            return []
        current, uid, backend = found
        if isinstance(backend, CookieSessions):
            return CookieUserSessions(backend).list(uid, current)
        return UserSessions(backend).list(uid, current=_own_sid(current, uid))

    def revoke(self, handle: str, user_id: str | int | None = None) -> bool:
        """End one session of the user; True when ``handle`` named one. Revoking the
        current session logs this request out too."""
        found = _resolve(user_id)
        if found is None:
            return False
        current, uid, backend = found
        if isinstance(backend, CookieSessions):
            return CookieUserSessions(backend).revoke(uid, handle, current)
        sid = _own_sid(current, uid)
        revoked = UserSessions(backend).revoke(uid, handle)
        if revoked and sid is not None and handle == handle_of_key(backend.key(sid)):
            current.logout()
        return revoked

    def revoke_all(self, user_id: str | int | None = None) -> int:
        """End every session of the user, the current one included (it is logged out)."""
        found = _resolve(user_id)
        if found is None:
            return 0
        current, uid, backend = found
        if isinstance(backend, CookieSessions):
            return CookieUserSessions(backend).revoke_all(uid, current)
        revoked = UserSessions(backend).revoke_all(uid)
        if current.user_id == uid:
            current.logout()
        return revoked

    def revoke_others(self, user_id: str | int | None = None) -> int:
        """End every session of the user but the current one; returns how many (cookie
        sessions: 0, they cannot be counted)."""
        found = _resolve(user_id)
        if found is None:
            return 0
        current, uid, backend = found
        if isinstance(backend, CookieSessions):
            return CookieUserSessions(backend).revoke_others(uid, current)
        return UserSessions(backend).revoke_all(uid, keep=_own_sid(current, uid))


def _current_session() -> Session:
    current = flask_session._get_current_object()  # type: ignore[attr-defined]
    if not isinstance(current, Session):
        raise RuntimeError("user_sessions needs sessionkeeper's Session(app) on this app")
    return current


def _backend() -> ServerSideSessions | CookieSessions:
    state = current_app.extensions.get("sessionkeeper")
    if state is None:
        raise RuntimeError("user_sessions needs sessionkeeper's Session(app) on this app")
    backend = state.backend
    if not isinstance(backend, ServerSideSessions | CookieSessions):
        raise RuntimeError(f"user_sessions does not know the {type(backend).__name__} backend")
    return backend


def _resolve(
    user_id: str | int | None,
) -> tuple[Session, str, ServerSideSessions | CookieSessions] | None:
    """The current session, the user meant (``None``: the session's own) and the backend;
    None when no user is meant (an anonymous session)."""
    current = _current_session()
    uid = str(user_id) if user_id is not None else current.user_id
    return None if uid is None else (current, uid, _backend())


def _own_sid(current: Session, user_id: str) -> str | None:
    """The current session's id when it is stored and bound to ``user_id``."""
    if current.user_id != user_id or current.new:
        return None
    return current.sid


user_sessions = FlaskUserSessions()

__all__ = ["FlaskUserSessions", "device_of_request", "user_sessions"]
