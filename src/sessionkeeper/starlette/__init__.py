"""sessionkeeper for Starlette and FastAPI: a drop-in for Starlette's ``SessionMiddleware``.

    from sessionkeeper.starlette import SessionMiddleware   # was: starlette.middleware.sessions

    app.add_middleware(SessionMiddleware, secret_key="...")                  # Starlette's cookie
    app.add_middleware(SessionMiddleware, secret_key="...", store="redis://127.0.0.1:6379/0")
"""

from ..accounts import AsyncUserSessions
from .accounts import user_sessions
from .from_starsessions import (
    SessionAutoloadMiddleware,
    get_session_id,
    is_loaded,
    load_session,
    regenerate_session_id,
)
from .middleware import SessionMiddleware
from .session import Session

__all__ = [
    "AsyncUserSessions",
    "Session",
    "SessionAutoloadMiddleware",
    "SessionMiddleware",
    "get_session_id",
    "is_loaded",
    "load_session",
    "regenerate_session_id",
    "user_sessions",
]
