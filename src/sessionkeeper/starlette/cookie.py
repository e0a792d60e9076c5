"""Sessions in Starlette's own signed cookie: base64 of JSON under itsdangerous'
``TimestampSigner`` with the secret key (Starlette's defaults: salt
``itsdangerous.Signer``, django-concat key derivation, HMAC-SHA1), made and checked by
timestamp_signer.py.

Cookies written by Starlette's ``SessionMiddleware`` read here and the other way
round, so switching (or switching back) keeps every user logged in. A login binds the
user in one reserved entry of the JSON (``_sk.meta``), which apps never see.
"""

from __future__ import annotations

import binascii
import json
import secrets
import time
from base64 import b64encode
from collections.abc import Callable, Iterable
from typing import Any

from .. import signals
from ..backend import DELETE_COOKIE, CookieUpdate, logger
from ..client_side import BROWSER_COOKIE_LIMIT, issue_cookie
from ..cookie_meta import META_KEY, CookieMeta
from ..errors import UnserializableValue
from ..model import LoadedState
from ..serialization import ValueCodec
from .session import Session
from .timestamp_signer import BadTimestampSignature, TimestampSigner

_FOREVER = float("inf")


class StarletteJSONCodec(ValueCodec):
    """Values as Starlette's cookie keeps them: the standard library's JSON.

    Used for change detection of nested values; the cookie itself is one JSON object.
    A value JSON cannot hold raises :class:`UnserializableValue` (a ``TypeError``, as
    ``json.dumps`` raises in Starlette's own middleware).
    """

    def __init__(self) -> None:
        super().__init__("json")

    def encode(self, value: Any) -> bytes:
        try:
            return json.dumps(value).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as exc:
            raise UnserializableValue(
                f"a session in Starlette's cookie holds JSON values only "
                f"(str, int, float, bool, None, list, dict): {exc}") from exc

    def decode(self, data: bytes) -> Any:
        return json.loads(data)


class StarletteCookies:
    """Opens and saves sessions kept in Starlette's session cookie."""

    def __init__(
        self,
        secret_key: str,
        *,
        fallbacks: Iterable[str] = (),
        max_age: int | None = 14 * 24 * 60 * 60,
        cookie_name: str = "session",
        max_size: int = BROWSER_COOKIE_LIMIT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Signs with the last key and accepts any of them, as itsdangerous' signer.
        self.signer = TimestampSigner([*fallbacks, secret_key])
        self.max_age = max_age
        self.cookie_name = cookie_name
        self.max_size = max_size
        self.clock = clock
        self.codec = StarletteJSONCodec()

    # -- open ----------------------------------------------------------------------
    def open(self, token: Callable[[], str | None]) -> Session:
        """The request's session, read (``token()`` asked for the cookie, its signature
        checked, its JSON decoded) only when the app first uses it: a request that never
        does costs nothing (no I/O either way)."""
        return Session.lazy(lambda: self.load(token()), self.codec)

    def load(self, token: str | None) -> LoadedState:
        now = self.clock()
        found = self._read(token) if token else None
        if found is not None:
            data, issued_at = found
            try:
                meta = CookieMeta.take_from(data)
            except ValueError as exc:
                self._reject(str(exc))
            else:
                created_at = meta.created_at if meta.created_at is not None else issued_at
                # Positional (LoadedState's docstring): one per request reading its cookie.
                return LoadedState(
                    None, False, self.max_age is not None,  # sid, new, permanent
                    created_at, issued_at, self._expiry(issued_at),
                    meta.user_id, {}, data, True,  # user_id, raw, values, had_cookie
                    meta.bound_at, meta.handle,
                )
        # had_cookie only for a cookie that was read: as Starlette, an unreadable
        # cookie is left alone (not deleted) when the session ends up empty.
        return LoadedState(sid=None, new=True, permanent=self.max_age is not None,
                           created_at=now, accessed_at=now, expires_at=self._expiry(now))

    def _expiry(self, issued_at: float) -> float:
        return _FOREVER if self.max_age is None else issued_at + self.max_age

    def _read(self, token: str) -> tuple[dict[str, Any], float] | None:
        try:
            signed, stamp = self.signer.unsign(token.encode("utf-8"), max_age=self.max_age)
        except BadTimestampSignature as exc:  # expired included, as in Starlette
            return self._reject(str(exc))
        except UnicodeError:
            return self._reject("not ASCII")
        try:
            data = json.loads(binascii.a2b_base64(signed))  # = b64decode(signed)
        except (ValueError, binascii.Error, RecursionError) as exc:
            # Signed with the key but not base64 JSON: Starlette answers 500.
            return self._reject(f"undecodable payload ({type(exc).__name__})")
        if not isinstance(data, dict):
            return self._reject("payload is not a mapping")
        return data, float(stamp)

    def _reject(self, why: str) -> None:
        logger.info("session cookie rejected (%s); starting a fresh session", why)
        signals.session_rejected.send(self, reason=why)
        return None

    # -- save ----------------------------------------------------------------------
    def save(self, session: Session) -> CookieUpdate | None:
        if not session.loaded:
            return None
        # Starlette's rule: a Set-Cookie only when the session changed (a login sets
        # meta_changed, so it counts as modified). Asked once: it encodes every value.
        modified = session.modified
        if not (modified or session.destroyed or session.regenerate_requested):
            return None
        state = session.state
        now = self.clock()
        if session.destroyed and not state.new:
            signals.session_destroyed.send(self, log_id="-", user_id=session.loaded_user_id)
        if session.user_changed or session.regenerate_requested:
            self._rebind(state, now)
        if session.empty:
            emptied = session.destroyed or modified
            return DELETE_COOKIE if state.had_cookie and emptied else None
        if session.destroyed:
            state.new, state.created_at = True, now  # written to after logout: a new session
        value = self.dumps(self._payload(session, state))
        issue_cookie(self, session, f"{self.cookie_name}={value}", self.max_size)
        return CookieUpdate(value, self.max_age)

    def _payload(self, session: Session, state: LoadedState) -> dict[str, Any]:
        payload = session.ordered_values()
        meta = CookieMeta(user_id=state.user_id, bound_at=state.bound_at, handle=state.handle,
                          created_at=state.created_at if state.user_id is not None else None)
        entry = meta.as_payload()
        if entry is not None:
            payload[META_KEY] = entry
        return payload

    @staticmethod
    def _rebind(state: LoadedState, now: float) -> None:
        """A login or regeneration gets a new handle; a logout drops the binding."""
        if state.user_id is None:
            state.bound_at, state.handle = None, None
        else:
            state.bound_at, state.handle = now, secrets.token_urlsafe(16)

    def dumps(self, payload: dict[str, Any]) -> str:
        """Exactly what Starlette's middleware writes for ``payload``."""
        try:
            data = b64encode(json.dumps(payload).encode("utf-8"))
        except (TypeError, ValueError) as exc:
            raise UnserializableValue(f"the session cannot be stored in Starlette's "
                                      f"cookie: {exc}") from exc
        return self.signer.sign(data).decode("utf-8")
