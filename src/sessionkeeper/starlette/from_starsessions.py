"""starsessions' helper functions, so an app switching from starsessions keeps its
endpoints as they are: only the imports and the middleware line change.

starsessions loads a session only when asked (``await load_session(request)`` or its
``SessionAutoloadMiddleware``). sessionkeeper by default loads it before the endpoint
whenever the request carries a session cookie (and reads nothing when it does not), so
these calls have nothing left to do. With ``SessionMiddleware(preload=False)`` it loads
as starsessions does: only when asked, here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ConfigurationError
from .accounts import SCOPE_KEY
from .session import Session


def _session(connection: HTTPConnection) -> Session:
    session = connection.scope.get("session")
    if not isinstance(session, Session):
        raise ConfigurationError(
            "no sessionkeeper session on this request: add app.add_middleware("
            "SessionMiddleware, secret_key=..., store=...) from sessionkeeper.starlette")
    return session


async def load_session(connection: HTTPConnection) -> None:
    """Read the request's session if it waits to be (``preload=False``); otherwise
    nothing to do: the middleware loaded it before the endpoint ran."""
    session = _session(connection)  # first: it says what to add when there is no middleware
    await connection.scope[SCOPE_KEY].load_on_demand(session)


def is_loaded(connection: HTTPConnection) -> bool:
    """False only for a session that waits for ``load_session`` (``preload=False``)."""
    return _session(connection).pending_token is None


def get_session_id(connection: HTTPConnection) -> str | None:
    """The id the browser's cookie carries, None for a session not yet saved."""
    return _session(connection).sid


def regenerate_session_id(connection: HTTPConnection) -> None:
    """A new id for the session, issued when the response starts (starsessions returns
    the new id at once; nothing outside the store should need it). At login, prefer
    ``request.session.login(user_id)``: a new id and the user bound, in one step."""
    _session(connection).regenerate()


class SessionAutoloadMiddleware:
    """starsessions' autoload middleware: loads the session before the endpoint for
    every path (``paths=None``) or for paths matching one of ``paths`` (prefixes or
    regular expressions, matched with ``re.match`` as starsessions does). Add it after
    ``SessionMiddleware`` (so it runs inside it). Sessions preloaded by the middleware
    (its default) pass through untouched."""

    def __init__(self, app: ASGIApp,
                 paths: Sequence[str | re.Pattern[str]] | None = None) -> None:
        self.app = app
        self.paths = [re.compile(path) for path in paths or []]  # (a Pattern stays one)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = scope.get("session")
        if (isinstance(session, Session) and session.pending_token is not None
                and self._autoloads(scope["path"])):
            await scope[SCOPE_KEY].load_on_demand(session)
        await self.app(scope, receive, send)

    def _autoloads(self, path: str) -> bool:
        return not self.paths or any(pattern.match(path) for pattern in self.paths)
