"""Flask integration: ``from sessionkeeper.flask import Session`` replaces Flask-Session."""

try:
    import flask  # noqa: F401  (checked first: Flask is an extra, not a core dependency)
except ModuleNotFoundError as exc:
    if exc.name not in ("flask", "werkzeug"):
        raise  # Flask is there but broken: its own error says more
    raise ModuleNotFoundError(
        f"sessionkeeper.flask needs Flask, which is not installed ({exc}): "
        "pip install 'sessionkeeper[flask]'",
        name=exc.name,
    ) from exc

from .accounts import user_sessions
from .cookies import get_signed_cookie, set_signed_cookie
from .extension import FlaskSession, Session
from .interface import SessionKeeperInterface

__all__ = [
    "FlaskSession",
    "Session",
    "SessionKeeperInterface",
    "get_signed_cookie",
    "set_signed_cookie",
    "user_sessions",
]
