"""Quart's async ``SessionInterface`` on top of a sessionkeeper backend.

As ``sessionkeeper.starlette``'s middleware, and unlike the Flask extension (whose
session loads lazily on first use): Quart's ``session`` proxy is synchronous, so a
request that carries a token has its session read in ``open_session``, in a store
thread, before the view runs; a request without one costs the store nothing. Saving
runs in a store thread too, and only when the request left something to write.
"""

from __future__ import annotations

import random
import time
from functools import partial
from typing import Any

from quart import Quart, request
from quart.sessions import SessionInterface, SessionMixin
from quart.wrappers import BaseRequestWebsocket, Response, Websocket
from werkzeug.wrappers import Response as WerkzeugResponse

from ..backend import CookieUpdate, SessionBackend, logger
from ..client_side import CookieSessions
from ..cookie_header import cookie_value
from ..cookie_rules import DEFAULT_SAMESITE
from ..errors import StoreUnavailable
from ..flask.live_config import LiveConfig, with_lifetime
from ..model import LoadedState
from ..server_side import ServerSideSessions
from ..settings import Settings
from ..signing import KeyRing
from ..sockets import SocketSessions
from ..store_steps import run_async
from .session import QuartSession, device_of
from .threads import StoreThreads

NOT_SAVED_PAGE = ("<h1>Service Unavailable</h1><p>Your changes could not be saved; "
                  "please try again shortly.</p>")


def _failed_load(error: StoreUnavailable) -> LoadedState:
    raise error


class QuartSessionInterface(SessionInterface):
    """Opens a request's session before its view runs; writes only what it changed."""

    session_class = QuartSession

    def __init__(self, app: Quart, backend: SessionBackend, settings: Settings,
                 threads: StoreThreads) -> None:
        self.backend = backend
        self.settings = settings
        self.threads = threads
        self.sockets = SocketSessions(
            backend if isinstance(backend, ServerSideSessions) else None, threads.run,
            store_hint="a SESSION_TYPE that keeps sessions on the server")
        # Cookie attributes, keys and lifetime read from app.config at request time, as
        # Quart reads them; a cookie session is Quart's own, so no SameSite unless set.
        self.live = LiveConfig(self, self._use_keys, self._use_lifetime,
                               None if isinstance(backend, CookieSessions) else DEFAULT_SAMESITE)
        self.cookie = self.live.refresh(app)
        self._signs = isinstance(backend, CookieSessions) or (
            isinstance(backend, ServerSideSessions) and backend.signer is not None)

    def _use_keys(self, ring: KeyRing | None) -> None:
        if ring is not None:
            self.backend.use_keys(ring)  # type: ignore[attr-defined]

    def _use_lifetime(self, lifetime: float, refresh_each_request: bool) -> None:
        backend: Any = self.backend
        backend.policy = with_lifetime(backend.policy, lifetime, refresh_each_request)

    def get_cookie_partitioned(self, app: Quart) -> bool:
        # Quart before 0.20 has neither the setting nor this method.
        return bool(app.config.get("SESSION_COOKIE_PARTITIONED", False))

    # -- open --------------------------------------------------------------------------
    def _token(self, request: BaseRequestWebsocket) -> str | None:
        """The token in SESSION_HEADER_NAME ("" starts a session) or in the cookie."""
        header_name = self.settings.header_name
        if header_name is not None:
            header = request.headers.get(header_name)
            if header is not None:
                return header or None
        return cookie_value(request.headers.get("Cookie"), self.cookie.name) or None

    async def open_session(self, app: Quart,
                           request: BaseRequestWebsocket) -> QuartSession | None:
        if self._signs and not app.secret_key:
            return None  # Quart's null session: "the session is unavailable"
        self.cookie = self.live.refresh(app)
        token = self._token(request)
        try:
            session = await self._open(token)
        except StoreUnavailable as error:
            # Raised where the view first uses the session, so the app's StoreUnavailable
            # handler answers (503 by default); a view that never uses it still works.
            session = QuartSession(partial(_failed_load, error), self._codec())
        fields = self.settings.device_info
        if fields:
            session._describe_device = device_of(request, fields)
        if isinstance(request, Websocket):
            session._sockets = self.sockets  # no response to save on: the handler may
        return session

    def _codec(self) -> Any:
        return self.backend.codec  # type: ignore[attr-defined]

    async def _open(self, token: str | None) -> QuartSession:
        backend = self.backend
        if token is None:
            # A new session: nothing to read (a cookie backend does no I/O either).
            return QuartSession.preloaded(backend.load(None), self._codec())  # type: ignore[attr-defined]
        if isinstance(backend, ServerSideSessions):
            if not backend.ids.is_well_formed(token) and backend.signer is None:
                # A cookie this app never issued: a fresh session, no store I/O.
                return QuartSession.preloaded(backend.load(token), backend.codec)
            if backend.store.async_operation("load") is not None:
                # The store reads natively on this loop (store_steps.py).
                state = await run_async(backend.load_steps(token), backend.store,
                                        self.threads.run)
                return QuartSession.preloaded(state, backend.codec)
        # Load and decode in a store thread: a cookie session may ask its revocations.
        return await self.threads.run(self._open_blocking, token)

    def _open_blocking(self, token: str) -> QuartSession:
        return QuartSession.preloaded(self.backend.load(token),  # type: ignore[attr-defined]
                                      self._codec())

    # -- save --------------------------------------------------------------------------
    async def save_session(self, app: Quart, session: SessionMixin,
                           response: Response | WerkzeugResponse | None) -> None:
        assert isinstance(session, QuartSession)
        if response is None:
            await self._save_after_websocket(session)
            return
        if not session.accessed:
            # Untouched: nothing to vary on or save; only a cookie session refreshed on
            # every request re-signs its cookie, as Quart's own does.
            self._refresh_untouched(response)
            return
        response.vary.add("Cookie")
        header_name = self.settings.header_name
        if header_name is not None:
            response.vary.add(header_name)
        if response.status_code >= 500:
            return  # a failed request must not leave half its changes behind
        try:
            update = await self._save(session)
        except StoreUnavailable as error:
            _answer_unavailable(response, error)
            return
        if update is not None:
            self._send_token(response, update)

    async def _save(self, session: QuartSession) -> CookieUpdate | None:
        backend = self.backend
        if not _writes_to_store(backend, session):
            return backend.save(session)  # no store I/O: no thread either
        if (isinstance(backend, ServerSideSessions)
                and backend.store.async_operation("update") is not None):
            update = await run_async(backend.save_steps(session), backend.store,
                                     self.threads.run)
        else:
            update = await self.threads.run(backend.save, session)
        await self._maybe_cleanup(session)
        return update

    async def _maybe_cleanup(self, session: QuartSession) -> None:
        # SESSION_CLEANUP_N_REQUESTS: about one request in N that wrote to the store
        # also removes expired records (in the same thread's turn), unless the store
        # expires them itself.
        n = self.settings.cleanup_n_requests
        backend = self.backend
        if (n and isinstance(backend, ServerSideSessions)
                and not backend.store.sweeps_itself and random.randrange(n) == 0):
            removed = await self.threads.run(backend.store.delete_expired, time.time())
            logger.info("removed %d expired sessions", removed)

    async def _save_after_websocket(self, session: QuartSession) -> None:
        """A websocket has no response to carry a cookie: changes that need none (an
        existing server session's values) are saved; the rest is dropped, logged."""
        backend = self.backend
        if not session.accessed or not session.modified:
            return
        if (not isinstance(backend, ServerSideSessions) or session.regenerate_requested
                or session.state.new):
            logger.error("session changed in a websocket handler needs a new cookie, "
                         "which only an HTTP response can set; the changes are dropped")
            return
        try:
            await self.threads.run(backend.save, session)
        except StoreUnavailable as error:
            logger.error("%s; the websocket's session changes are dropped", error)

    def _refresh_untouched(self, response: Response | WerkzeugResponse) -> None:
        backend = self.backend
        if not (isinstance(backend, CookieSessions) and backend.refreshes_untouched):
            return
        token = self._token(request)
        update = backend.refresh_untouched(token) if token else None
        if update is not None:
            self._send_token(response, update)

    def _send_token(self, response: Response | WerkzeugResponse,
                    update: CookieUpdate) -> None:
        header_name = self.settings.header_name
        if header_name is not None and request.headers.get(header_name) is not None:
            # Asked in the header, answered in the header ("" to forget the token).
            response.headers[header_name] = update.value or ""
            return
        cookie = self.cookie
        if update.delete:
            response.delete_cookie(cookie.name, **cookie.options)
        else:
            cookie.set_cookie.add_to(response, update.value or "", update.max_age)


def _writes_to_store(backend: SessionBackend, session: QuartSession) -> bool:
    """False when saving ``session`` certainly does no store I/O, so it can run on the
    event loop: the request only read it and no refresh is due (a server session), or
    no user is or was bound to it (a cookie session, whose revocations are stored)."""
    if not session.loaded:
        return False
    state = session.state
    if isinstance(backend, CookieSessions):
        return state.user_id is not None or session.loaded_user_id is not None
    if not isinstance(backend, ServerSideSessions):
        return True
    if session.destroyed or session.regenerate_requested or session.modified:
        # An emptied session never stored has nothing to delete (unless it was rotated
        # moments ago: that logout ends the session it went to).
        return not (session.empty and state.new and state.rotated_from is None)
    if session.empty:
        return False
    return not state.new and backend.policy.should_refresh(
        state.created_at, state.accessed_at, backend.clock())


def _answer_unavailable(response: Response | WerkzeugResponse,
                              error: StoreUnavailable) -> None:
    """Turn a response whose session could not be saved into a 503 (nothing was kept)."""
    logger.error("%s; answering 503", error)
    response.status_code = 503
    response.set_data(NOT_SAVED_PAGE)  # type: ignore[union-attr]
    response.mimetype = "text/html"
    response.headers.remove("Set-Cookie")
