"""starsessions' helper functions, so an app switching from starsessions keeps its
endpoints as they are: only the imports and the middleware line change.

starsessions loads a session only when asked (``await load_session(request)`` or its
``SessionAutoloadMiddleware``); sessionkeeper loads it before the endpoint whenever the
request carries a session cookie (and reads nothing when it does not), so these calls
have nothing left to do, and the autoload middleware passes requests through.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ConfigurationError
from .session import Session


def _session(connection: HTTPConnection) -> Session:
    session = connection.scope.get("session")
    if not isinstance(session, Session):
        raise ConfigurationError(
            "no sessionkeeper session on this request: add app.add_middleware("
            "SessionMiddleware, secret_key=..., store=...) from sessionkeeper.starlette")
    return session


async def load_session(connection: HTTPConnection) -> None:
    """Nothing to do: the middleware loaded the session before the endpoint ran."""
    _session(connection)


def is_loaded(connection: HTTPConnection) -> bool:
    """Always True under sessionkeeper's middleware."""
    _session(connection)
    return True


def get_session_id(connection: HTTPConnection) -> str | None:
    """The id the browser's cookie carries, None for a session not yet saved."""
    return _session(connection).sid


def regenerate_session_id(connection: HTTPConnection) -> None:
    """A new id for the session, issued when the response starts (starsessions returns
    the new id at once; nothing outside the store should need it). At login, prefer
    ``request.session.login(user_id)``: a new id and the user bound, in one step."""
    _session(connection).regenerate()


class SessionAutoloadMiddleware:
    """starsessions' autoload middleware, kept so its ``add_middleware`` line may stay:
    every session is already loaded, so it passes requests through."""

    def __init__(self, app: ASGIApp, paths: object = None) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
