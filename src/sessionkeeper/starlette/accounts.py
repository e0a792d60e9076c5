"""A user's sessions from an ASGI endpoint: list them ("your devices"), revoke one, or
all but the current one. The core's :class:`UserSessions`, its store calls run in the
middleware's own threads so the event loop never waits on the store."""

from __future__ import annotations

from typing import Any

from starlette.requests import HTTPConnection

from ..accounts import SessionInfo, UserSessions
from ..errors import ConfigurationError
from .threads import StoreThreads

#: where the middleware leaves itself in the ASGI scope
SCOPE_KEY = "sessionkeeper.middleware"


class AsyncUserSessions:
    """``await`` forms of :class:`sessionkeeper.accounts.UserSessions`."""

    def __init__(self, sessions: UserSessions, threads: StoreThreads) -> None:
        self._sessions = sessions
        self._threads = threads

    async def list(self, user_id: str | int, current: str | None = None) -> list[SessionInfo]:
        """The user's live sessions, most recently seen first; ``current`` (the asking
        request's ``session.sid``) is marked ``current=True``."""
        return await self._threads.run(self._sessions.list, user_id, current)

    async def revoke(self, user_id: str | int, handle: str) -> bool:
        """End the session ``handle`` names if it is one of the user's; True if it was."""
        return await self._threads.run(self._sessions.revoke, user_id, handle)

    async def revoke_all(self, user_id: str | int, keep: str | None = None) -> int:
        """End every session of the user but ``keep`` (a session id); how many ended."""
        return await self._threads.run(self._sessions.revoke_all, user_id, keep)


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
    return AsyncUserSessions(UserSessions(middleware.server), middleware.threads)
