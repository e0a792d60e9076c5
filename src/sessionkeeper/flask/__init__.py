"""Flask integration: ``from sessionkeeper.flask import Session`` replaces Flask-Session."""

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
