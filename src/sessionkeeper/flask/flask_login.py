"""Flask-Login wiring: its login and logout become sessionkeeper's.

When Flask-Login is installed, ``Session(app)`` connects to its signals for that app:

- ``user_logged_in`` (``login_user``) and ``user_loaded_from_cookie`` (a "remember me"
  cookie signing the user back in) call ``session.login(user.get_id())``: a new session
  id, the user bound to it (listed among their devices), the data kept;
- ``user_logged_out`` (``logout_user``) calls ``session.logout()``: the record and the
  cookie are deleted.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask import session as flask_session

from ..model import Session

#: Flask-Login parks "clear the remember-me cookie" in the session for its after-request
#: hook; a logout must keep that note or the user would be signed straight back in.
_REMEMBER = "_remember"


def connect_flask_login(app: Flask) -> bool:
    """Connect the handlers for ``app``; False when Flask-Login is not installed."""
    try:
        import flask_login  # type: ignore[import-untyped]
    except ImportError:
        return False
    flask_login.user_logged_in.connect(_logged_in, sender=app)
    flask_login.user_loaded_from_cookie.connect(_logged_in, sender=app)
    flask_login.user_logged_out.connect(_logged_out, sender=app)
    return True


def _session() -> Session | None:
    current = flask_session._get_current_object()  # type: ignore[attr-defined]
    return current if isinstance(current, Session) else None


def _logged_in(sender: Flask, user: Any = None, **extra: Any) -> None:
    current = _session()
    user_id = user.get_id() if user is not None else None
    if current is not None and user_id is not None:
        current.login(user_id)


def _logged_out(sender: Flask, user: Any = None, **extra: Any) -> None:
    current = _session()
    if current is None:
        return
    remember = current.get(_REMEMBER)
    current.logout()
    if remember is not None:
        current[_REMEMBER] = remember  # consumed by Flask-Login before the save
