"""Flask's ``SessionInterface`` on top of a sessionkeeper backend."""

from __future__ import annotations

import random
import time
from functools import partial

from flask import Flask, Request, Response, request
from flask.sessions import SessionInterface, SessionMixin

from ..backend import SessionBackend, logger
from ..cookie_header import cookie_value
from ..cookie_rules import check_cookie_attributes, samesite_or_default
from ..errors import StoreUnavailable
from ..model import Session
from ..server_side import ServerSideSessions
from ..settings import Settings


class SessionKeeperInterface(SessionInterface):
    """Opens sessions lazily and writes only what the request changed."""

    def __init__(self, app: Flask, backend: SessionBackend, settings: Settings) -> None:
        self.backend = backend
        self.settings = settings
        # Cookie attributes are read once: they are fixed for the app's life.
        self.cookie_name = self.get_cookie_name(app)
        domain, path = self.get_cookie_domain(app), self.get_cookie_path(app)
        secure = self.get_cookie_secure(app)
        samesite = samesite_or_default(self.get_cookie_samesite(app))
        check_cookie_attributes(self.cookie_name, domain=domain, path=path, secure=secure,
                                samesite=samesite)
        self.cookie_options = {
            "domain": domain,
            "path": path,
            "secure": secure,
            "httponly": self.get_cookie_httponly(app),
            "samesite": samesite,
            "partitioned": self.get_cookie_partitioned(app),
        }
        #: SESSION_HEADER_NAME: API clients may carry the token in this header instead
        self.header_name = settings.header_name

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

    def open_session(self, app: Flask, request: Request) -> Session:
        # No work here, not even parsing the Cookie header: the token is read, checked
        # and looked up only if the view touches the session.
        return self.backend.open(partial(self._request_token, request))

    def _request_token(self, request: Request) -> str | None:
        header = self._header_token(request)
        if header is not None:
            return header or None
        # What request.cookies would give, without parsing every other cookie or
        # walking the environ through a Headers view.
        return cookie_value(request.environ.get("HTTP_COOKIE"), self.cookie_name) or None

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if not session.accessed and not session.loaded:  # type: ignore[attr-defined]
            return  # untouched: nothing to vary on, save or clean up
        if session.accessed:
            _vary_on(response, "Cookie")
            if self.header_name is not None:
                _vary_on(response, self.header_name)
        if response.status_code >= 500:
            return  # a failed request must not leave half its changes behind
        assert isinstance(session, Session)
        try:
            update = self.backend.save(session)
            self._maybe_cleanup(session)
        except StoreUnavailable as exc:
            _answer_unavailable(response, exc)
            return
        if update is None:
            return
        _vary_on(response, "Cookie")
        if self.header_name is not None and self._header_token(request) is not None:
            # An empty value tells the client to forget its token.
            response.headers[self.header_name] = update.value or ""
            return
        if update.delete:
            response.delete_cookie(self.cookie_name, **self.cookie_options)
        else:
            response.set_cookie(self.cookie_name, update.value or "", max_age=update.max_age,
                                **self.cookie_options)

    def _maybe_cleanup(self, session: Session) -> None:
        # SESSION_CLEANUP_N_REQUESTS: about one request in N (that used the session)
        # also removes expired records; requests that never touch the session never do.
        n = self.settings.cleanup_n_requests
        backend = self.backend
        if (n and session.loaded and isinstance(backend, ServerSideSessions)
                and random.randrange(n) == 0):
            removed = backend.store.delete_expired(time.time())
            logger.info("removed %d expired sessions", removed)


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
