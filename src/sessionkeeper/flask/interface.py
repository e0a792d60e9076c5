"""Flask's ``SessionInterface`` on top of a sessionkeeper backend."""

from __future__ import annotations

import random
import time
from functools import partial
from typing import Any, cast

from flask import Flask, Request, Response, request
from flask.sessions import SessionInterface, SessionMixin

from ..backend import CookieUpdate, SessionBackend, logger
from ..client_side import CookieSessions
from ..cookie_header import cookie_value
from ..cookie_rules import DEFAULT_SAMESITE
from ..errors import StoreUnavailable
from ..model import Session
from ..server_side import ServerSideSessions
from ..settings import Settings
from ..signing import KeyRing
from .live_config import LiveConfig, with_lifetime


class SessionKeeperInterface(SessionInterface):
    """Opens sessions lazily and writes only what the request changed."""

    def __init__(self, app: Flask, backend: SessionBackend, settings: Settings) -> None:
        self.backend = backend
        self.settings = settings
        # Cookie attributes, keys and lifetime are Flask's settings, read as Flask reads
        # them (at request time); resolving them now also checks them at start-up. A
        # cookie session is Flask's own, so it sends no SameSite unless configured.
        self.live = LiveConfig(self, self._use_keys, self._use_lifetime,
                               None if isinstance(backend, CookieSessions) else DEFAULT_SAMESITE)
        self.cookie = self.live.refresh(app)
        #: whether sessions sign with SECRET_KEY (fixed for the backend's life)
        self._signs = self._needs_secret()
        #: SESSION_HEADER_NAME: API clients may carry the token in this header instead
        self.header_name = settings.header_name

    @property
    def cookie_name(self) -> str:
        return self.cookie.name

    def _use_keys(self, ring: KeyRing | None) -> None:
        if ring is not None:
            self.backend.use_keys(ring)  # type: ignore[attr-defined]

    def _use_lifetime(self, lifetime: float, refresh_each_request: bool) -> None:
        backend: Any = self.backend
        backend.policy = with_lifetime(backend.policy, lifetime, refresh_each_request)

    def _needs_secret(self) -> bool:
        """Sessions that sign need SECRET_KEY: without one at request time the request
        gets Flask's null session, as with Flask's own cookie session."""
        backend = self.backend
        return isinstance(backend, CookieSessions) or (
            isinstance(backend, ServerSideSessions) and backend.signer is not None)

    def _header_token(self, request: Request) -> str | None:
        """The token a request sends in SESSION_HEADER_NAME ("" to start a session), or
        None when it uses the cookie. Such a request is answered in the header, never
        with Set-Cookie. Ids are never read from the URL or the body."""
        if self.header_name is None:
            return None
        return request.headers.get(self.header_name)

    def is_null_session(self, obj: object) -> bool:
        # Sessions opened here are never null; an exact class check spares the ABC
        # machinery Flask's isinstance goes through on every request.
        return type(obj) is self.null_session_class

    def open_session(self, app: Flask, request: Request) -> Session | None:
        if self._signs and not app.secret_key:
            return None  # Flask makes its null session: "the session is unavailable"
        # No work here, not even parsing the Cookie header or re-reading the settings:
        # the token is read, checked and looked up only if the view touches the session.
        return self.backend.open(partial(self._request_token, app, request))

    def _request_token(self, app: Flask, request: Request) -> str | None:
        self.cookie = self.live.refresh(app)
        if self.header_name is not None:  # (_header_token, inline: most apps use cookies)
            header = request.headers.get(self.header_name)
            if header is not None:
                return header or None
        # What request.cookies would give, without parsing every other cookie or
        # walking the environ through a Headers view.
        return cookie_value(request.environ.get("HTTP_COOKIE"), self.cookie.name) or None

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if not session.accessed and not session.loaded:  # type: ignore[attr-defined]
            # Untouched: nothing to vary on, save or clean up; only a cookie session
            # refreshed on every request re-signs its cookie, as Flask's does.
            if isinstance(self.backend, CookieSessions) and self.backend.refreshes_untouched:
                token = self._request_token(app, request)
                update = self.backend.refresh_untouched(token) if token else None
                if update is not None:
                    self._set_cookie(app, response, update)
            return
        if session.accessed:
            _vary_on(response, "Cookie")
            if self.header_name is not None:
                _vary_on(response, self.header_name)
        if response.status_code >= 500:
            return  # a failed request must not leave half its changes behind
        # cast, not an isinstance assert: Session is an ABC, whose check costs a call
        core = cast(Session, session)
        try:
            update = self.backend.save(core)
            self._maybe_cleanup(core)
        except StoreUnavailable as exc:
            _answer_unavailable(response, exc)
            return
        if update is None:
            return
        if self.header_name is not None and self._header_token(request) is not None:
            _vary_on(response, "Cookie")
            # An empty value tells the client to forget its token.
            response.headers[self.header_name] = update.value or ""
            return
        # Vary: Cookie was added above when the session was accessed: not checked twice.
        self._set_cookie(app, response, update, varied=bool(session.accessed))

    def _set_cookie(self, app: Flask, response: Response, update: CookieUpdate, *,
                    varied: bool = False) -> None:
        if not varied:
            _vary_on(response, "Cookie")
        cookie = self.cookie
        if update.delete:
            response.delete_cookie(cookie.name, **cookie.options)
        else:
            cookie.set_cookie.add_to(response, update.value or "", update.max_age,
                                     _max_cookie_size(app, response))

    def _maybe_cleanup(self, session: Session) -> None:
        # SESSION_CLEANUP_N_REQUESTS: about one request in N (that used the session)
        # also removes expired records; requests that never touch the session never do,
        # nor do stores that remove expired records themselves.
        n = self.settings.cleanup_n_requests
        backend = self.backend
        if (n and session.loaded and isinstance(backend, ServerSideSessions)
                and not backend.store.sweeps_itself and random.randrange(n) == 0):
            removed = backend.store.delete_expired(time.time())
            logger.info("removed %d expired sessions", removed)


#: Flask's ``Response.max_cookie_size``: MAX_COOKIE_SIZE, read through ``current_app``
_FLASK_MAX_COOKIE_SIZE = Response.__dict__.get("max_cookie_size")


def _max_cookie_size(app: Flask, response: Response) -> int:
    """``response.max_cookie_size``. Flask's own property asks ``current_app`` twice (two
    context-local look-ups, more than the rest of the Set-Cookie header costs); while
    a request of ``app`` is saved, that is ``app.config``. A response class with its
    own limit is asked."""
    if _FLASK_MAX_COOKIE_SIZE is not None and (
            type(response).max_cookie_size is _FLASK_MAX_COOKIE_SIZE):
        return app.config["MAX_COOKIE_SIZE"]  # type: ignore[no-any-return]
    return response.max_cookie_size


def _vary_on(response: Response, header: str) -> None:
    """``response.vary.add(header)`` without building and re-serializing a HeaderSet
    on every request."""
    current = response.headers.getlist("Vary")
    if not current:
        response.headers.add("Vary", header)
    elif header.lower() not in {part.strip().lower() for value in current
                                for part in value.split(",")}:
        response.headers["Vary"] = ", ".join([*current, header])


def _answer_unavailable(response: Response, error: StoreUnavailable) -> None:
    """Turn a response whose session could not be saved into a 503 (nothing was kept)."""
    logger.error("%s; answering 503", error)
    response.status_code = 503
    response.set_data("<h1>Service Unavailable</h1><p>Your changes could not be saved; "
                      "please try again shortly.</p>")
    response.mimetype = "text/html"
    response.headers.remove("Set-Cookie")
