"""FastAPI: the session as a dependency, a login-required user, and the session cookie
declared in the OpenAPI document.

    from sessionkeeper.starlette.fastapi import CurrentUser, SessionDep

    @app.get("/cart")
    def cart(session: SessionDep) -> list[str]:
        return session.get("cart", [])

    @app.get("/me")
    def me(user: CurrentUser) -> dict[str, str]:   # 401 until session.login(...)
        return {"user": user}

The session is the one ``SessionMiddleware`` opened: already loaded (no I/O here), or,
under ``SessionMiddleware(preload=False)``, read now, so only routes that depend on it
read the store. With another cookie name than "session", build the pair with
:func:`session_dependencies`.
"""

# No "from __future__ import annotations": FastAPI reads these signatures at run time,
# and they name a scheme local to session_dependencies.

from collections.abc import Callable
from typing import Annotated

try:
    from fastapi import Depends, HTTPException, Request, Security, status
    from fastapi.security import APIKeyCookie
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        f"sessionkeeper.starlette.fastapi needs FastAPI ({exc}): pip install fastapi") from exc

from ..errors import ConfigurationError
from .from_starsessions import load_session
from .session import Session

__all__ = ["CurrentUser", "SessionDep", "current_user", "session_dependencies",
           "session_dependency"]

NOT_LOGGED_IN = "Not authenticated"


async def _session_of(request: Request) -> Session:
    found = request.scope.get("session")
    if found is None:
        raise ConfigurationError(
            "no session on this request: add sessionkeeper's middleware, "
            "app.add_middleware(SessionMiddleware, secret_key=...) from sessionkeeper.starlette")
    if not isinstance(found, Session):
        raise ConfigurationError(
            "request.session comes from another middleware (Starlette's own?): use "
            "SessionMiddleware from sessionkeeper.starlette")
    await load_session(request)  # read now under SessionMiddleware(preload=False)
    session = request.session  # Starlette's accessor: the response then varies on Cookie
    assert session is found
    return session


def session_dependencies(
    cookie_name: str = "session",
) -> tuple[Callable[..., Session], Callable[..., str]]:
    """``(session_dependency, current_user)`` for a middleware whose ``session_cookie`` is
    ``cookie_name``: the cookie is declared as an API-key security scheme, so the OpenAPI
    document (and /docs) shows which routes use the session. The scheme never refuses a
    request itself (``auto_error=False``): a route without a session gets a new one."""
    scheme = APIKeyCookie(
        name=cookie_name, scheme_name=f"{cookie_name} cookie", auto_error=False,
        description="The session cookie sessionkeeper's SessionMiddleware sets.")

    async def session_dependency(
        request: Request, _cookie: Annotated[str | None, Security(scheme)] = None,
    ) -> Session:
        return await _session_of(request)

    def current_user(session: Annotated[Session, Depends(session_dependency)]) -> str:
        user_id = session.user_id
        if user_id is None:
            raise HTTPException(status_code=status.HTTP_401_UNAUTHORIZED,
                                detail=NOT_LOGGED_IN)
        return user_id

    return session_dependency, current_user


session_dependency, current_user = session_dependencies()

#: the request's session, for a middleware with the default cookie name
SessionDep = Annotated[Session, Depends(session_dependency)]
#: the user bound to the session by ``session.login(user_id)``; 401 when there is none
CurrentUser = Annotated[str, Depends(current_user)]

