"""A user's sessions from an ASGI endpoint: list them ("your devices"), revoke one, or
all but the current one. The core's :class:`AsyncUserSessions`, its store calls run in
the middleware's own threads so the event loop never waits on the store."""

from __future__ import annotations

from typing import Any

from starlette.requests import HTTPConnection

from ..accounts import AsyncUserSessions, UserSessions
from ..errors import ConfigurationError

#: where the middleware leaves itself in the ASGI scope
SCOPE_KEY = "sessionkeeper.middleware"


def user_sessions(connection: HTTPConnection) -> AsyncUserSessions:
    """The sessions of the users of this request's app (a ``Request`` or ``WebSocket``)."""
    middleware: Any = connection.scope.get(SCOPE_KEY)
    if middleware is None:
        raise ConfigurationError(
            "no sessionkeeper middleware on this request: add "
            "app.add_middleware(SessionMiddleware, secret_key=..., store=...) from "
            "sessionkeeper.starlette")
    if middleware.server is None:
        raise ConfigurationError(
            "a user's sessions can be listed only in a server store: cookie sessions are "
            "in the browsers; pass SessionMiddleware(store=...)")
    return AsyncUserSessions(UserSessions(middleware.server), middleware.threads.run)
