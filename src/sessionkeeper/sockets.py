"""What a websocket endpoint can do with its session while the socket is open (Starlette,
FastAPI and Quart alike).

An HTTP response saves the session as it starts; a websocket has no response to carry a
cookie, and lives long. So its endpoint saves explicitly (``await session.save()``) and,
on a long-lived socket, re-checks that the session was not ended meanwhile
(``await session.revalidate()``): a logout or a "sign out everywhere" from another
device then reaches open sockets too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .errors import UndecodableRecord
from .model import Session
from .server_side import ServerSideSessions

#: runs a blocking function in a worker thread: ``await run_in_thread(fn, *args)``
ThreadRunner = Callable[..., Awaitable[Any]]


class SocketSessions:
    """The store work of a websocket's session, run in the integration's store threads."""

    def __init__(self, server: ServerSideSessions | None, run_in_thread: ThreadRunner,
                 *, store_hint: str = "SessionMiddleware(store=...)") -> None:
        self.server = server  # None: cookie sessions
        self.run_in_thread = run_in_thread
        #: how this integration is given a server store, for messages
        self.store_hint = store_hint

    async def save(self, session: Session) -> None:
        server = self.server
        if server is None:
            raise RuntimeError(
                "a cookie session cannot be saved on an open websocket: only an HTTP "
                "response can set the cookie (save it in an HTTP request, or use a "
                f"server store: {self.store_hint})")
        if session.regenerate_requested or (session.loaded and session.state.new
                                            and not session.empty):
            raise RuntimeError(
                "a websocket cannot give the browser a new session id: log in, "
                "regenerate() or start a session in an HTTP request")
        await self.run_in_thread(server.save, session)

    async def revalidate(self, session: Session) -> bool:
        server = self.server
        if server is None:
            # Nothing on the server to ask: the signed cookie stays valid until it expires.
            return True
        sid = session.sid
        if sid is None:
            return not session.destroyed  # a new, unsaved session: nothing to have ended
        try:
            record = await self.run_in_thread(server.store.load, server.key(sid),
                                            server.clock())
        except UndecodableRecord:
            return False  # a request reading it would start a fresh session too
        return record is not None


class SavedBySocket(Session):
    """``await session.save()`` and ``await session.revalidate()`` for a session class
    whose integration sets ``_sockets`` on a websocket's session."""

    #: set by the integration on a websocket's session: its store work
    _sockets: SocketSessions | None = None

    async def save(self) -> None:
        """Save the changes now, from a websocket endpoint (an HTTP response saves the
        session itself). A session ended meanwhile (a logout elsewhere) is not
        recreated. Raises ``StoreUnavailable`` when the store is down, and
        ``RuntimeError`` for what a socket cannot do: save a cookie session, or give the
        browser a new session id (``login()``, ``regenerate()``, a first save)."""
        if self._sockets is None:
            raise RuntimeError("session.save() is for websocket endpoints: an HTTP "
                               "response saves the session as it starts")
        await self._sockets.save(self)

    async def revalidate(self) -> bool:
        """False when the session was ended since the socket opened (a logout, a
        revocation, expiry); True while it lives. For a long-lived websocket, which no
        later request re-checks. Cookie sessions have nothing on the server to ask:
        True."""
        if self._sockets is None:
            raise RuntimeError("session.revalidate() is for websocket endpoints: every "
                               "HTTP request already reads the session afresh")
        return await self._sockets.revalidate(self)
