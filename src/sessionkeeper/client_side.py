"""Client-side sessions: the data itself lives in a signed (optionally encrypted) cookie.

The signed format is exactly Flask's own session cookie (itsdangerous
``URLSafeTimedSerializer``, salt ``cookie-session``, HMAC-SHA1, tagged JSON), so an app
moving from Flask's default session keeps its users logged in, and back.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Callable
from typing import Any

from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from . import signals
from .backend import DELETE_COOKIE, CookieUpdate, TokenSource, logger, resolve_token
from .cookie_meta import META_KEY, CookieMeta
from .encryption import PREFIX as ENCRYPTED_PREFIX
from .encryption import CookieCipher
from .errors import SessionTooLarge
from .model import LoadedState, Session
from .policy import ExpiryPolicy
from .revocation import RevocationList
from .serialization import CookieValueCodec, FlaskCookieSerializer
from .signing import KeyRing, TimedCookieReader

BROWSER_COOKIE_LIMIT = 4093  # bytes of "name=value" browsers keep (RFC 6265 says >= 4096)
PERMANENT_KEY = "_permanent"  # where Flask keeps the permanent flag inside the cookie


def issue_cookie(sender: object, session: Session, cookie: str, max_size: int) -> None:
    """The last step of saving a cookie session as ``cookie`` (``name=value``): refuse a
    cookie browsers would drop, announce the new or re-bound session, mark it saved."""
    if len(cookie) > max_size:
        logger.error("session cookie of %d bytes not sent: over the %d-byte limit",
                     len(cookie), max_size)
        raise SessionTooLarge(len(cookie), max_size)
    state = session.state
    if state.new:
        signals.session_created.send(sender, log_id="-", user_id=state.user_id)
    elif session.regenerate_requested:
        # A login or regenerate() re-bound this cookie (the old one is revoked when it
        # had a user): the same event server-side sessions send for a new id.
        signals.session_regenerated.send(sender, log_id="-", old_log_id="-",
                                         user_id=state.user_id)
    session.mark_saved()
    state.new = False


class _TextSerializer:
    """Adapts the tagged-JSON serializer to itsdangerous, which wants text."""

    def __init__(self) -> None:
        self._inner = FlaskCookieSerializer()

    def dumps(self, value: Any) -> str:
        return self._inner.dumps(value).decode("utf-8")

    def loads(self, data: str | bytes) -> Any:
        return self._inner.loads(data)


class _ClockedSigner(TimestampSigner):
    """Stamps and checks ages with the backend's clock, so signed and encrypted cookies
    agree on the time (itsdangerous alone would always read ``time.time``)."""

    def __init__(self, *args: Any, clock: Callable[[], float], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clock = clock

    def get_timestamp(self) -> int:
        return int(self._clock())


class CookieSessions:
    """Opens and saves sessions kept entirely in the cookie."""

    def __init__(
        self,
        ring: KeyRing,
        *,
        policy: ExpiryPolicy,
        cookie_name: str = "session",
        permanent: bool = True,
        encrypt: bool = False,
        max_size: int = BROWSER_COOKIE_LIMIT,
        session_class: type[Session] = Session,
        clock: Callable[[], float] = time.time,
        revocations: RevocationList | None = None,
    ) -> None:
        self.policy = policy
        self.cookie_name = cookie_name
        #: per-user revocations of bound sessions (read only for cookies with a user)
        self.revocations = revocations
        if revocations is not None:
            revocations.clock = lambda: self.clock()  # one notion of time for both
        self.permanent = permanent
        self.max_size = max_size
        self.session_class = session_class
        self.clock = clock
        self.codec = CookieValueCodec()  # only for change detection of nested values
        self._payload = _TextSerializer()
        self._encrypt = encrypt
        self.use_keys(ring)

    def use_keys(self, ring: KeyRing) -> None:
        """Sign (or encrypt) with ``ring`` from now on (SECRET_KEY changed at run time)."""
        self._signed = URLSafeTimedSerializer(
            ring.oldest_first, salt="cookie-session", serializer=self._payload,
            signer=_ClockedSigner,
            signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha1,
                           "clock": lambda: self.clock()},
        )
        # Reads skip itsdangerous' per-request signer objects and key derivation.
        self._reader = TimedCookieReader(ring, salt="cookie-session")
        self._cipher = CookieCipher(ring) if self._encrypt else None

    def open(self, token: TokenSource) -> Session:
        """A lazy session; ``token`` may be a callable, so even reading the cookie waits
        until the app touches the session."""
        return self.session_class(lambda: self.load(resolve_token(token)), self.codec)

    def load(self, token: str | None) -> LoadedState:
        now = self.clock()
        found = self._read(token) if token else None
        if found is not None:
            data, issued_at = found
            permanent = bool(data.pop(PERMANENT_KEY, False))
            state = self._state_of(data, issued_at, permanent, now)
            if state is not None:
                return state
        return LoadedState(
            sid=None, new=True, permanent=self.permanent, created_at=now, accessed_at=now,
            expires_at=now + self.policy.window, had_cookie=bool(token),
        )

    def _state_of(self, data: dict[str, Any], issued_at: float, permanent: bool,
                  now: float) -> LoadedState | None:
        """The state of a verified cookie, or None when timed out or revoked."""
        try:
            meta = CookieMeta.take_from(data)
        except ValueError as exc:
            return self._reject(str(exc))
        created_at = meta.created_at if meta.created_at is not None else issued_at
        if self.policy.is_expired(created_at, issued_at + self.policy.window, now):
            return self._expire("absolute timeout", meta.user_id)
        if meta.user_id is not None and self.revocations is not None and (
                self.revocations.is_revoked(meta.user_id, meta.bound_at, meta.handle, now)):
            logger.info("session cookie rejected (revoked); starting a fresh session")
            signals.session_rejected.send(self, reason="revoked", user_id=meta.user_id)
            return None
        # Positional (LoadedState's docstring): every request reading its cookie builds one.
        return LoadedState(
            None, False, permanent,  # sid, new, permanent
            created_at, issued_at, self.policy.expires_at(created_at, issued_at),
            meta.user_id, {}, data, True,  # user_id, raw, values, had_cookie
            meta.bound_at, meta.handle,
        )

    def _read(self, token: str, report: bool = True) -> tuple[dict[str, Any], float] | None:
        """The verified payload and signing time; ``report`` logs and signals a refusal
        (not for a request that never used its session)."""
        opened = self._open(token, report)
        return None if opened is None else (opened[0], opened[1])

    def _open(self, token: str, report: bool, serialized: bytes | None = None,
              ) -> tuple[dict[str, Any], float, bytes] | None:
        """``_read``, plus the payload as it came: the signed part of a signed cookie,
        the serialized data of an encrypted one (what ``refresh_untouched`` re-issues).
        ``serialized``: a signed cookie's data already decoded from the same token (by
        ``_unverified_data``), used once the signature holds instead of decoding again."""
        max_age = self.policy.window
        try:
            if token.startswith(ENCRYPTED_PREFIX) and self._cipher is not None:
                opened = self._cipher.decrypt(token)
                if opened is None:
                    return self._reject("cannot be decrypted") if report else None
                payload, issued_at = opened
                if self.clock() - issued_at > max_age:
                    return self._expire("idle or lifetime timeout", None) if report else None
                data = self._payload.loads(payload)
            else:
                verified = self._reader.unsign(token)
                if verified is None:
                    return self._reject("BadTimeSignature") if report else None
                payload, issued_at = verified
                age = int(self.clock()) - issued_at
                if age > max_age or age < 0:  # the checks itsdangerous makes
                    return self._expire("idle or lifetime timeout", None) if report else None
                if serialized is None:
                    serialized = TimedCookieReader.payload_bytes(payload)
                data = self._payload.loads(serialized)
        except (ValueError, TypeError, KeyError, UnicodeError) as exc:
            return self._reject(f"undecodable payload ({type(exc).__name__})") if report else None
        if not isinstance(data, dict):
            return self._reject("payload is not a mapping") if report else None
        return data, float(issued_at), payload

    def _reject(self, why: str) -> None:
        logger.info("session cookie rejected (%s); starting a fresh session", why)
        signals.session_rejected.send(self, reason=why)
        return None

    def _expire(self, why: str, user_id: str | None) -> None:
        logger.info("session cookie timed out (%s); starting a fresh session", why)
        signals.session_expired.send(self, log_id="-", user_id=user_id, reason=why)
        return None

    def save(self, session: Session) -> CookieUpdate | None:
        if not session.loaded:
            return None
        state = session.state
        now = self.clock()
        if session.destroyed and not state.new:
            signals.session_destroyed.send(self, log_id="-", user_id=session.loaded_user_id)
        if session.user_changed or session.regenerate_requested:
            self._rebind(session, state, now)
        if session.empty:
            # As Flask's cookie session: a cookie is deleted when the request emptied the
            # session, not because it could not be read (a key rotated back reads again).
            emptied = session.destroyed or session.cleared or session.modified
            return DELETE_COOKIE if state.had_cookie and emptied else None
        if session.destroyed:
            state.new, state.created_at = True, now  # written to after logout: a new session
        changed = (session.destroyed or session.meta_changed or bool(session.changes())
                   or session.regenerate_requested)
        # A read refreshes a permanent cookie's signed time, as Flask's does; with an idle
        # timeout a browser-session cookie too, since the timeout counts from that time.
        if not changed and not (
                (state.permanent or self.policy.idle_timeout is not None)
                and self.policy.should_refresh(state.created_at, state.accessed_at, now)):
            return None
        if self._revoked_meanwhile(session, state, now):
            return None
        payload = session.plain_values()
        if state.permanent:
            payload[PERMANENT_KEY] = True
        meta = CookieMeta(
            user_id=state.user_id, bound_at=state.bound_at, handle=state.handle,
            # For the absolute timeout and the user's list of sessions only: anonymous
            # cookies without an absolute timeout stay exactly Flask's.
            created_at=(state.created_at if self.policy.absolute_timeout is not None
                        or state.user_id is not None else None),
        ).as_payload()
        if meta is not None:
            payload[META_KEY] = meta
        value = self.dumps(payload, int(now))
        issue_cookie(self, session, f"{self.cookie_name}={value}", self.max_size)
        max_age = self.policy.cookie_max_age(self.policy.expires_at(state.created_at, now), now)
        return CookieUpdate(value, max_age if state.permanent else None)

    @property
    def refreshes_untouched(self) -> bool:
        """Flask's cookie session re-signs a permanent session's cookie on every
        request, used or not (SESSION_REFRESH_EACH_REQUEST, SESSION_REFRESH_FRACTION 0)."""
        return self.policy.refresh_each_request and self.policy.refresh_fraction == 0

    def refresh_untouched(self, token: str) -> CookieUpdate | None:
        """The re-signed cookie of a permanent session the request never used.

        Its content is sent back as it came, so nothing else is checked: a revoked
        binding re-signed stays revoked, and no store is asked.
        """
        serialized = None
        if not token.startswith(ENCRYPTED_PREFIX):
            serialized = _unverified_data(token)
            if serialized is None or _PERMANENT_FIELD not in serialized:
                # A browser-session cookie is not re-sent: no signature to check.
                return None
        found = self._open(token, report=False, serialized=serialized)
        if found is None or not found[0].get(PERMANENT_KEY):
            return None
        data, issued_at, payload = found
        try:
            meta = CookieMeta.take_from(data)
        except ValueError:
            return None
        now = self.clock()
        created_at = meta.created_at if meta.created_at is not None else issued_at
        if self.policy.is_expired(created_at, issued_at + self.policy.window, now):
            return None
        max_age = self.policy.cookie_max_age(self.policy.expires_at(created_at, now), now)
        # The data as it came, stamped anew: nothing serialized again.
        if self._cipher is not None:  # encrypted from now on, whichever format came
            if not token.startswith(ENCRYPTED_PREFIX):
                payload = TimedCookieReader.payload_bytes(payload)
            return CookieUpdate(self._cipher.encrypt(payload, int(now)), max_age)
        return CookieUpdate(self._reader.restamp(payload, int(now)), max_age)

    def _revoked_meanwhile(self, session: Session, state: LoadedState, now: float) -> bool:
        """True when the binding this request would re-issue was revoked while it ran
        ("sign out the other devices" from this very device, say): re-issuing it would
        replace the cookie that revocation just sent, and sign this device out."""
        if (state.user_id is None or state.new or session.user_changed
                or session.regenerate_requested or self.revocations is None):
            return False
        if not self.revocations.is_revoked(state.user_id, state.bound_at, state.handle, now):
            return False
        logger.info("session cookie revoked while the request ran; not re-issued")
        return True

    def _rebind(self, session: Session, state: LoadedState, now: float) -> None:
        """A login, logout or regeneration: the cookie of the old binding stops working
        (the server cannot delete it, so it is revoked) and a new one gets a new handle."""
        old_user = session.loaded_user_id
        if old_user is not None and state.handle is not None and self.revocations is not None:
            self.revocations.revoke_handle(old_user, state.handle)
        if state.user_id is None:
            state.bound_at, state.handle = None, None
        else:
            state.bound_at, state.handle = now, secrets.token_urlsafe(16)

    def restamp(self, session: Session, after: float) -> None:
        """Bind the session anew just after ``after`` (a "not before" revocation it must
        survive) and make sure the request re-issues its cookie."""
        state = session.state
        state.bound_at = max(self.clock(), math.nextafter(after, math.inf))
        session.modified = True

    def dumps(self, payload: dict[str, Any], issued_at: int) -> str:
        if self._cipher is not None:
            return self._cipher.encrypt(self._payload.dumps(payload).encode(), issued_at)
        return self._signed.dumps(payload)


_PERMANENT_FIELD = f'"{PERMANENT_KEY}"'.encode()


def _unverified_data(token: str) -> bytes | None:
    """A signed cookie's serialized data, decoded but not verified (None when it cannot
    be decoded, which reading it in full would refuse too). Seeing no permanent flag in
    it (most cookies of Flask's default, browser-session ones) settles that nothing is
    re-issued without checking the signature; otherwise the verified read uses it."""
    signed = token.encode("utf-8").rpartition(b".")[0]
    try:
        return TimedCookieReader.payload_bytes(signed.rpartition(b".")[0])
    except ValueError:
        return None
