"""Quart integration: ``from sessionkeeper.quart import Session`` replaces quart-session
and Quart's cookie session, with the Flask extension's configuration keys."""

try:
    import quart  # noqa: F401  (checked first: Quart is an extra, not a core dependency)
except ModuleNotFoundError as exc:
    if exc.name != "quart":
        raise  # Quart is there but broken: its own error says more
    raise ModuleNotFoundError(
        f"sessionkeeper.quart needs Quart, which is not installed ({exc}): "
        "pip install 'sessionkeeper[quart]'",
        name=exc.name,
    ) from exc

from ..accounts import AsyncUserSessions
from .accounts import user_sessions
from .extension import Session, SessionKeeperState
from .interface import QuartSessionInterface
from .session import QuartSession

__all__ = ["AsyncUserSessions", "QuartSession", "QuartSessionInterface", "Session",
           "SessionKeeperState", "user_sessions"]
