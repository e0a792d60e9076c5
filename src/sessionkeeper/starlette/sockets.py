"""What a websocket endpoint can do with its session while the socket is open.

An HTTP response saves the session as it starts; a websocket has no response to carry a
cookie, and lives long. So its endpoint saves explicitly (``await session.save()``) and,
on a long-lived socket, re-checks that the session was not ended meanwhile
(``await session.revalidate()``): a logout or a "sign out everywhere" from another
device then reaches open sockets too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import UndecodableRecord
from ..server_side import ServerSideSessions
from .threads import StoreThreads

if TYPE_CHECKING:
    from .session import Session


class SocketSessions:
    """The store work of a websocket's session, run in the middleware's store threads."""

    def __init__(self, server: ServerSideSessions | None, threads: StoreThreads) -> None:
        self.server = server  # None: cookie sessions
        self.threads = threads

    async def save(self, session: Session) -> None:
        server = self.server
        if server is None:
            raise RuntimeError(
                "a cookie session cannot be saved on an open websocket: only an HTTP "
                "response can set the cookie (save it in an HTTP request, or use a "
                "server store: SessionMiddleware(store=...))")
        if session.regenerate_requested or (session.loaded and session.state.new
                                            and not session.empty):
            raise RuntimeError(
                "a websocket cannot give the browser a new session id: log in, "
                "regenerate() or start a session in an HTTP request")
        await self.threads.run(server.save, session)

    async def revalidate(self, session: Session) -> bool:
        server = self.server
        if server is None:
            # Nothing on the server to ask: the signed cookie stays valid until it expires.
            return True
        sid = session.sid
        if sid is None:
            return not session.destroyed  # a new, unsaved session: nothing to have ended
        try:
            record = await self.threads.run(server.store.load, server.key(sid),
                                            server.clock())
        except UndecodableRecord:
            return False  # a request reading it would start a fresh session too
        return record is not None
