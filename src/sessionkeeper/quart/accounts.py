"""A user's sessions from a Quart view: list them ("your devices"), revoke one, or all
but the current one, awaited; the store calls run in the extension's store threads."""

from __future__ import annotations

from quart import current_app

from ..accounts import AsyncUserSessions, UserSessions
from ..errors import ConfigurationError
from ..server_side import ServerSideSessions


def user_sessions() -> AsyncUserSessions:
    """The sessions of the users of the current app (inside a request or websocket)."""
    state = current_app.extensions.get("sessionkeeper")
    if state is None:
        raise ConfigurationError("sessionkeeper is not set up on this app: "
                                 "Session(app) from sessionkeeper.quart")
    backend = state.backend
    if not isinstance(backend, ServerSideSessions):
        raise ConfigurationError(
            "a user's sessions can be listed only in a server store: cookie sessions are "
            "in the browsers; set SESSION_TYPE to a server store")
    return AsyncUserSessions(UserSessions(backend), state.interface.threads.run)
