"""Server-side sessions: the cookie holds only an id; the data lives in a store."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from . import signals
from .backend import DELETE_COOKIE, CookieUpdate, LogIds, TokenSource, logger, resolve_token
from .ids import SessionIds, storage_key
from .model import LoadedState, Session
from .policy import ExpiryPolicy
from .serialization import ValueCodec
from .signing import IdSigner
from .stores.base import SessionRecord, SessionStore, SessionUpdate


class ServerSideSessions:
    """Opens and saves sessions kept in a :class:`SessionStore`.

    Costs per request: none when the app does not touch the session; one store read
    when it only reads (plus a throttled refresh); one read and one write when it
    changes something.
    """

    def __init__(
        self,
        store: SessionStore,
        *,
        policy: ExpiryPolicy,
        codec: ValueCodec | None = None,
        ids: SessionIds | None = None,
        signer: IdSigner | None = None,
        key_prefix: str = "",
        permanent: bool = True,
        log_salt: bytes | None = None,
        session_class: type[Session] = Session,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.policy = policy
        self.codec = codec or ValueCodec()
        self.ids = ids or SessionIds()
        self.signer = signer
        self.key_prefix = key_prefix
        self.permanent = permanent
        self.log_id = LogIds(log_salt or secrets.token_bytes(16))
        self.session_class = session_class
        self.clock = clock
        #: called with a well-formed id the store does not know, before it is reported
        #: unknown; it may create the record (migrate_on_first_use moves a Flask-Session
        #: one there), which is then loaded. Costs nothing for ids the store knows.
        self.adopt_unknown: Callable[[str], None] | None = None

    # -- ids and cookies -----------------------------------------------------------
    def key(self, sid: str) -> str:
        return self.key_prefix + storage_key(sid)

    def token(self, sid: str) -> str:
        return self.signer.sign(sid) if self.signer else sid

    def sid_from_token(self, token: str) -> str | None:
        """The id in a cookie value, or None when it is not one this app could have issued."""
        sid: str | None = token
        if self.signer is not None:
            sid = self.signer.unsign(token)
            if sid is None:
                self._reject("bad signature")
                return None
        if not self.ids.is_well_formed(sid):  # type: ignore[arg-type]
            self._reject("malformed id")
            return None
        return sid

    def _reject(self, why: str) -> None:
        logger.info("session cookie rejected (%s); starting a fresh session", why)
        signals.session_rejected.send(self, reason=why)

    # -- open ----------------------------------------------------------------------
    def open(self, token: TokenSource) -> Session:
        """A lazy session; ``token`` may be a callable, so even reading the cookie waits
        until the app touches the session."""
        return self.session_class(lambda: self.load(resolve_token(token)), self.codec)

    def load(self, token: str | None) -> LoadedState:
        now = self.clock()
        sid = self.sid_from_token(token) if token else None
        if sid is not None:
            # Asking for records up to one window past their expiry lets a timed-out
            # session be reported (session_expired) and removed, not just look unknown;
            # stores that expire records themselves have dropped those already.
            record = self.store.load(self.key(sid), now - self.policy.window)
            if record is None and self.adopt_unknown is not None:
                self.adopt_unknown(sid)
                record = self.store.load(self.key(sid), now - self.policy.window)
            if record is None:
                logger.info("session %s unknown or expired; starting a fresh one", self.log_id(sid))
                signals.session_rejected.send(self, reason="unknown or expired",
                                              log_id=self.log_id(sid))
            elif self.policy.is_expired(record.created_at, record.expires_at, now,
                                        accessed_at=record.accessed_at):
                logger.info("session %s timed out; starting a fresh one", self.log_id(sid))
                self.store.delete(self.key(sid))
                signals.session_expired.send(self, log_id=self.log_id(sid),
                                             user_id=record.user_id)
            else:
                return LoadedState(
                    sid=sid, new=False, permanent=record.permanent,
                    created_at=record.created_at, accessed_at=record.accessed_at,
                    expires_at=record.expires_at, user_id=record.user_id,
                    raw=record.values, had_cookie=True,
                )
        return LoadedState(
            sid=None, new=True, permanent=self.permanent, created_at=now,
            accessed_at=now, expires_at=self.policy.expires_at(now, now),
            had_cookie=bool(token),
        )

    # -- save ----------------------------------------------------------------------
    def save(self, session: Session) -> CookieUpdate | None:
        if not session.loaded:
            return None  # the request never touched the session: no store I/O at all
        state = session.state
        now = self.clock()
        if session.destroyed or (session.empty and (session.modified or session.cleared)):
            return self._destroy(session, state, now)
        if session.empty:
            # Nothing to keep. A bad or stale cookie is cleared so it is not sent again.
            return DELETE_COOKIE if state.had_cookie else None
        if state.new or session.regenerate_requested:
            return self._create(session, state, now)
        changes = session.changes()
        if changes or session.meta_changed:
            expires_at = self.policy.expires_at(state.created_at, now)
            applied = self.store.update(self.key(state.sid), SessionUpdate(  # type: ignore[arg-type]
                set_values=changes.set_values, deleted_keys=changes.deleted_keys,
                replace=changes.replace, accessed_at=now, expires_at=expires_at,
                permanent=state.permanent, user_id=state.user_id,
                user_id_changed=session.user_changed,
            ))
            if not applied:
                # Destroyed by a concurrent request (a logout): never resurrect it.
                logger.info("session %s was destroyed concurrently; change dropped",
                            self.log_id(state.sid))
                return DELETE_COOKIE
            session.mark_saved()
            return self._cookie(state.sid, state.permanent, expires_at, now)  # type: ignore[arg-type]
        if self.policy.should_refresh(state.created_at, state.accessed_at, now):
            expires_at = self.policy.expires_at(state.created_at, now)
            self.store.touch(self.key(state.sid), now, expires_at)  # type: ignore[arg-type]
            return self._cookie(state.sid, state.permanent, expires_at, now)  # type: ignore[arg-type]
        return None

    def _create(self, session: Session, state: LoadedState, now: float) -> CookieUpdate:
        old_sid = state.sid
        sid = self.ids.new()
        created_at = now if state.new else state.created_at
        expires_at = self.policy.expires_at(created_at, now)
        self.store.create(self.key(sid), SessionRecord(
            values=session.encoded_values(), created_at=created_at, accessed_at=now,
            expires_at=expires_at, permanent=state.permanent, user_id=state.user_id,
        ))
        if old_sid is not None:
            # Regeneration: the old id must stop working at once (session fixation).
            self.store.delete(self.key(old_sid))
            signals.session_regenerated.send(self, log_id=self.log_id(sid),
                                             old_log_id=self.log_id(old_sid),
                                             user_id=state.user_id)
        else:
            signals.session_created.send(self, log_id=self.log_id(sid), user_id=state.user_id)
        state.sid, state.new, state.created_at = sid, False, created_at
        state.accessed_at, state.expires_at = now, expires_at
        session.mark_saved()
        return self._cookie(sid, state.permanent, expires_at, now)

    def _destroy(self, session: Session, state: LoadedState, now: float) -> CookieUpdate | None:
        if state.sid is not None and not state.new:
            self.store.delete(self.key(state.sid))
            signals.session_destroyed.send(self, log_id=self.log_id(state.sid),
                                           user_id=session.loaded_user_id)
        if session.empty:
            return DELETE_COOKIE if state.had_cookie else None
        # Written to after logout (a flash message, say): that starts a new session
        # under a new id; nothing of the destroyed one carries over.
        state.sid, state.new = None, True
        return self._create(session, state, now)

    def log_id_of_key(self, key: str) -> str:
        """The log id of the session stored under ``key`` (same as ``log_id(sid)``)."""
        return self.log_id.of_digest(key.removeprefix(self.key_prefix))

    def _cookie(self, sid: str, permanent: bool, expires_at: float, now: float) -> CookieUpdate:
        max_age = self.policy.cookie_max_age(expires_at, now) if permanent else None
        return CookieUpdate(self.token(sid), max_age)
