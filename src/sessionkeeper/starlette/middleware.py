"""``SessionMiddleware``: Starlette's session middleware on sessionkeeper's core.

A pure ASGI middleware, as Starlette's own: the request's session is opened before the
app runs (for a server store, one read in a worker thread, and only when the request
carries a session cookie) and put in ``scope["session"]``, where ``request.session``
finds it; it is saved when the response starts, so the cookie goes out with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Literal

from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..backend import CookieUpdate, logger
from ..errors import StoreUnavailable
from ..serialization import ValueCodec
from ..server_side import DEFAULT_ROTATION_GRACE, ServerSideSessions
from ..settings import device_fields
from ..sockets import SocketSessions
from ..store_steps import run_async
from .accounts import SCOPE_KEY
from .cookie import StarletteCookies
from .devices import Device
from .first_use import CheckedOnFirstUse
from .session import Session
from .stores import server_sessions, store_from
from .threads import DEFAULT_STORE_THREADS, StoreThreads

_EXPIRED = "expires=Thu, 01 Jan 1970 00:00:00 GMT; "
# The pages sessionkeeper's Flask extension answers with (load, then save).
_UNAVAILABLE = (b"<h1>Service Unavailable</h1><p>Sessions are temporarily unavailable; "
                b"please try again shortly.</p>")
_NOT_SAVED = (b"<h1>Service Unavailable</h1><p>Your changes could not be saved; "
              b"please try again shortly.</p>")
#: "Try Again Later": a websocket whose session store is down at the handshake
_WS_TRY_AGAIN_LATER = 1013


class SessionMiddleware:
    """Sessions for a Starlette or FastAPI app.

    The first arguments are Starlette's, with the same meaning and defaults. Without
    ``store`` the session is Starlette's own signed cookie (existing cookies keep
    working both ways); with ``store`` (a URL, a store driver's client object or a
    sessionkeeper ``SessionStore``: stores.py) the cookie holds a random id and the data
    lives in the store.
    """

    def __init__(
        self,
        app: ASGIApp,
        secret_key: object,
        session_cookie: str = "session",
        max_age: int | None = 14 * 24 * 60 * 60,  # 14 days, in seconds
        path: str = "/",
        same_site: Literal["lax", "strict", "none"] = "lax",
        https_only: bool = False,
        domain: str | None = None,
        partitioned: bool = False,
        *,
        store: object = None,  # a URL, a client object or a SessionStore: see stores.py
        secret_key_fallbacks: Iterable[object] = (),
        key_prefix: str = "session:",
        rotation_grace: float = DEFAULT_ROTATION_GRACE,
        breaker_seconds: float = 5.0,
        store_threads: int = DEFAULT_STORE_THREADS,
        device_info: Iterable[str] | None = ("user_agent",),
        preload: bool = True,
    ) -> None:
        self.app = app
        #: False: a stored session is read only when the app awaits load_session(request)
        #: (or SessionDep, or SessionAutoloadMiddleware), as with starsessions
        self.preload = preload
        self.session_cookie = session_cookie
        self.max_age = max_age
        self.path = path
        # Starlette's attributes, in Starlette's order and spelling.
        self.security_flags = "httponly; samesite=" + same_site
        if https_only:
            self.security_flags += "; secure"
        if domain is not None:
            self.security_flags += f"; domain={domain}"
        if partitioned:
            self.security_flags += "; partitioned"
        secret = str(secret_key)  # a starlette.datastructures.Secret too
        self.device_info = device_fields(
            device_info if device_info is None or isinstance(device_info, str)
            else tuple(device_info), "device_info")
        self.cookies: StarletteCookies | None = None
        self.server: ServerSideSessions | None = None
        self.unchecked: CheckedOnFirstUse | None = None  # checked when the lifespan starts
        if store is None:
            self.cookies = StarletteCookies(
                secret, fallbacks=[str(key) for key in secret_key_fallbacks],
                max_age=max_age, cookie_name=session_cookie)
        else:
            codec = ValueCodec()
            backend = store_from(store, codec=codec, key_prefix=key_prefix)
            if isinstance(backend, CheckedOnFirstUse):
                self.unchecked = backend
            self.server = server_sessions(
                backend, secret_key=secret,
                max_age=max_age, codec=codec, key_prefix=key_prefix,
                rotation_grace=rotation_grace, breaker_seconds=breaker_seconds)
        self.threads = StoreThreads(store_threads)
        self.sockets = SocketSessions(self.server, self.threads.run)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self.unchecked is not None:
            await self.app(scope, receive, self._checking_at_startup(send))
            return
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self.cookies is not None:
            # Not even the Cookie header is read until the app uses its session. (The
            # headers, not the scope: the scope holds the session, and a cycle would
            # leave every request's objects to the garbage collector.)
            session = self.cookies.open(
                partial(_cookie, scope["headers"], self.session_cookie))
        else:
            try:
                session = await self._open(_cookie(scope["headers"], self.session_cookie),
                                           self.preload or scope["type"] == "websocket")
            except StoreUnavailable as exc:
                logger.error("%s; answering 503", exc)
                await _refuse(scope, send)
                return
        session._device = Device(scope, self.device_info)
        scope["session"] = session
        scope[SCOPE_KEY] = self  # for user_sessions(request)
        if scope["type"] == "websocket":
            session._sockets = self.sockets  # no response to save on: the endpoint saves
            await self.app(scope, receive, send)
            return
        replaced = False  # a 503 went out in place of the app's response
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal replaced, started
            if replaced:
                return  # the rest of the app's response: already answered
            if message["type"] == "http.response.start":
                started = True
                if session.accessed and session.loaded:
                    try:
                        await self._commit(session, message)
                    except StoreUnavailable as exc:
                        logger.error("%s; answering 503", exc)
                        replaced = True
                        await _refuse(scope, send, _NOT_SAVED)
                        return
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except StoreUnavailable as exc:
            if started:
                raise
            # A load on demand (load_session) met the outage inside the app.
            logger.error("%s; answering 503", exc)
            await _refuse(scope, send)

    def _checking_at_startup(self, send: Send) -> Send:
        """``send`` that checks the store before the app reports it started: a
        misconfiguration raises ConfigurationError there, which the router reports as a
        failed start-up (the server prints it and exits); an unreachable store does not
        stop the start (first_use.py)."""
        unchecked = self.unchecked
        assert unchecked is not None

        async def send_checked(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                await self.threads.run(unchecked.check_at_startup)
            await send(message)

        return send_checked

    # -- open --------------------------------------------------------------------------
    async def _open(self, token: str | None, preload: bool) -> Session:
        """A server-side session: read from the store now when ``preload``, else when
        the app loads it."""
        server = self.server
        assert server is not None
        if token is None or not server.ids.is_well_formed(token):
            # No store I/O for these: a new session, or a cookie this app never issued.
            return Session.preloaded(server.load(token), server.codec)
        session = Session.on_demand(token, server.codec)
        if preload:
            await self.load_on_demand(session)
        return session

    async def load_on_demand(self, session: Session) -> None:
        """Read a session that waits for its store read: before the app runs, or when
        the app awaits load_session under ``preload=False``."""
        token = session.pending_token
        if token is None:
            return  # loaded already, or nothing to load
        server = self.server
        assert server is not None
        if server.store.async_operation("load") is None:
            # Read and decoded in the thread, so a large session costs the loop nothing.
            await self.threads.run(self._fill_from_store, session, token)
            return
        # The store reads natively on this loop: no thread hop (store_steps.py).
        session.fill(await run_async(server.load_steps(token), server.store,
                                     self.threads.run))

    def _fill_from_store(self, session: Session, token: str) -> None:
        server = self.server
        assert server is not None
        session.fill(server.load(token))

    # -- save --------------------------------------------------------------------------
    async def _commit(self, session: Session, message: Message) -> None:
        """Vary, save and Set-Cookie on the start message of a response whose app used
        its session (one that never did has nothing to vary on or save)."""
        headers = _vary_on_cookie(message)
        if message["status"] >= 500:
            return  # a failed request leaves none of its changes behind
        if self.cookies is not None:
            update = self.cookies.save(session)
        else:
            update = await self._save(session)
        if update is not None:
            headers.append((b"set-cookie", self._set_cookie(update).encode("latin-1")))

    async def _save(self, session: Session) -> CookieUpdate | None:
        server = self.server
        assert server is not None
        if server.makes_no_store_call(session):
            return server.save_without_store(session)  # no store I/O: no thread either
        if server.store.async_operation("update") is None:
            return await self.threads.run(server.save, session)  # all of it in one hop
        # The store writes natively on this loop; what it cannot do goes to the threads.
        return await run_async(server.save_steps(session), server.store, self.threads.run)

    def _set_cookie(self, update: CookieUpdate) -> str:
        """The Set-Cookie value exactly as Starlette's middleware writes it."""
        if update.delete:
            return (f"{self.session_cookie}=null; path={self.path}; {_EXPIRED}"
                    f"{self.security_flags}")
        max_age = "" if update.max_age is None else f"Max-Age={update.max_age}; "
        return (f"{self.session_cookie}={update.value}; path={self.path}; {max_age}"
                f"{self.security_flags}")


def _cookie(headers: Iterable[tuple[bytes, bytes]], name: str) -> str | None:
    """The session cookie as ``request.cookies[name]`` reads it (the first Cookie
    header, Starlette's parser)."""
    for key, value in headers:
        if key == b"cookie":
            return cookie_parser(value.decode("latin-1")).get(name)
    return None


def _vary_on_cookie(message: Message) -> list[tuple[bytes, bytes]]:
    """``MutableHeaders(scope=message).add_vary_header("Cookie")`` as Starlette does it
    (every Vary value joined into the first, then ", Cookie"), without building the
    headers object; returns the message's header list."""
    headers: list[tuple[bytes, bytes]] = list(message.get("headers", ()))
    message["headers"] = headers
    found = [index for index, (key, _) in enumerate(headers) if key == b"vary"]
    if not found:
        headers.append((b"vary", b"Cookie"))
        return headers
    joined = b", ".join([*(headers[index][1] for index in found), b"Cookie"])
    for index in reversed(found[1:]):
        del headers[index]
    headers[found[0]] = (b"vary", joined)
    return headers


async def _refuse(scope: Scope, send: Send, page: bytes = _UNAVAILABLE) -> None:
    """Answer that sessions are unavailable: 503, nothing of the app's response."""
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": _WS_TRY_AGAIN_LATER})
        return
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(page)).encode("ascii")),
    ]})
    await send({"type": "http.response.body", "body": page})
