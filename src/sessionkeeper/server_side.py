"""Server-side sessions: the cookie holds only an id; the data lives in a store."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from . import signals
from .backend import DELETE_COOKIE, CookieUpdate, LogIds, TokenSource, logger
from .errors import UndecodableRecord
from .forwarding import forward_key, forward_record, forwarded_sid
from .ids import SessionIds, storage_key
from .model import LoadedState, Session, SessionChanges
from .policy import ExpiryPolicy
from .serialization import ValueCodec
from .signing import IdSigner, KeyRing
from .store_steps import Steps, StoreCall, run_sync
from .stores.base import SessionRecord, SessionStore, SessionUpdate

#: SESSION_ROTATION_GRACE's default: long enough for a slow upload or XHR in flight
DEFAULT_ROTATION_GRACE = 30.0


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
        rotation_grace: float = DEFAULT_ROTATION_GRACE,
    ) -> None:
        self.store = store
        self.policy = policy
        self.codec = codec or ValueCodec()
        self.ids = ids or SessionIds()
        self.signer = signer
        self.key_prefix = key_prefix
        self._last_key = ("", "")
        self.permanent = permanent
        self.log_id = LogIds(log_salt or secrets.token_bytes(16))
        self.session_class = session_class
        self.clock = clock
        #: seconds an id rotated by a login keeps pointing at the new session
        self.rotation_grace = rotation_grace
        #: called with a well-formed id the store does not know, before it is reported
        #: unknown; it may create the record (migrate_on_first_use moves a Flask-Session
        #: one there), which is then loaded. Costs nothing for ids the store knows.
        self.adopt_unknown: Callable[[str], None] | None = None

    def use_keys(self, ring: KeyRing | None) -> None:
        """Sign ids with ``ring`` from now on (SECRET_KEY changed at run time)."""
        if self.signer is not None and ring is not None:
            self.signer = IdSigner(ring)

    # -- ids and cookies -----------------------------------------------------------
    def key(self, sid: str) -> str:
        # A request that writes needs its key at load and again at save: the last one
        # is kept (one tuple, replaced whole, so threads never see half of one).
        last_sid, last_key = self._last_key
        if sid == last_sid:
            return last_key
        key = self.key_prefix + storage_key(sid)
        self._last_key = (sid, key)
        return key

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
        if callable(token):  # (resolve_token, unrolled: one call less per request)
            return self.session_class(lambda: self.load(token()), self.codec)
        return self.session_class(lambda: self.load(token), self.codec)

    def load(self, token: str | None) -> LoadedState:
        """``run_sync(self.load_steps(token), self.store)``, with the common case (a live
        record) settled by one direct store call: no generator to drive per request."""
        now = self.clock()
        sid = self.sid_from_token(token) if token else None
        if sid is None:
            return self._fresh_state(now, token)
        key = self.key(sid)
        try:
            record = self.store.load(key, now - self.policy.window)
        except UndecodableRecord as exc:
            record = run_sync(self._undecodable(sid, key, exc), self.store)
        if record is not None and not self._timed_out(record, now):
            return self._live_state(sid, record)
        return run_sync(self._found_steps(sid, record, token, now), self.store)

    def load_steps(self, token: str | None) -> Steps[LoadedState]:
        """The store work of opening the session ``token`` names (store_steps.py): one
        ``load`` when it is live; more only when it is unknown, expired or undecodable."""
        now = self.clock()
        sid = self.sid_from_token(token) if token else None
        if sid is None:
            return self._fresh_state(now, token)
        # Asking for records up to one window past their expiry lets a timed-out
        # session be reported (session_expired) and removed, not just look unknown;
        # stores that expire records themselves have dropped those already.
        key = self.key(sid)
        try:
            record = yield StoreCall("load", key, now - self.policy.window)
        except UndecodableRecord as exc:
            record = yield from self._undecodable(sid, key, exc)
        return (yield from self._found_steps(sid, record, token, now))

    def _found_steps(self, sid: str, record: SessionRecord | None, token: str | None,
                     now: float) -> Steps[LoadedState]:
        """The session ``sid`` opens as, given the record its first load found."""
        rotated_from = None
        if record is None and self.adopt_unknown is not None:
            yield StoreCall("adopt_unknown", sid, function=self.adopt_unknown)
            record = yield from self._load_record_steps(sid, now - self.policy.window)
        if record is None:
            if (yield from self._forward_target_steps(sid, now)) is not None:
                # Sent before the browser saw its new cookie: answer without a
                # session, and never touch that new cookie (see _save_rotated).
                logger.info("session %s was rotated moments ago; answering without it",
                            self.log_id(sid))
                rotated_from = sid
            else:
                logger.info("session %s unknown or expired; starting a fresh one",
                            self.log_id(sid))
                signals.session_rejected.send(self, reason="unknown or expired",
                                              log_id=self.log_id(sid))
        elif self._timed_out(record, now):
            logger.info("session %s timed out; starting a fresh one", self.log_id(sid))
            yield StoreCall("delete", self.key(sid))
            signals.session_expired.send(self, log_id=self.log_id(sid),
                                         user_id=record.user_id)
        else:
            return self._live_state(sid, record)
        return self._fresh_state(now, token, rotated_from)

    def _timed_out(self, record: SessionRecord, now: float) -> bool:
        return self.policy.is_expired(record.created_at, record.expires_at, now,
                                      accessed_at=record.accessed_at)

    @staticmethod
    def _live_state(sid: str, record: SessionRecord) -> LoadedState:
        # Positional: a class called with keywords costs twice as much (the keywords
        # become a dict), and every request that reads its session builds one.
        return LoadedState(
            sid, False, record.permanent,  # sid, new, permanent
            record.created_at, record.accessed_at, record.expires_at, record.user_id,
            record.values, {}, True,  # raw, values, had_cookie
            None, None, record.version,  # bound_at, handle, version
        )

    def _fresh_state(self, now: float, token: str | None,
                     rotated_from: str | None = None) -> LoadedState:
        return LoadedState(
            sid=None, new=True, permanent=self.permanent, created_at=now,
            accessed_at=now, expires_at=self.policy.expires_at(now, now),
            had_cookie=bool(token), rotated_from=rotated_from,
        )

    def _load_record_steps(self, sid: str, now: float) -> Steps[SessionRecord | None]:
        """The stored record of ``sid``; one that no longer decodes is removed and
        treated like a bad cookie."""
        key = self.key(sid)
        try:
            record: SessionRecord | None = yield StoreCall("load", key, now)
        except UndecodableRecord as exc:
            return (yield from self._undecodable(sid, key, exc))
        return record

    def _undecodable(self, sid: str, key: str, exc: UndecodableRecord) -> Steps[None]:
        logger.info("session %s cannot be decoded (%s); removed, starting a fresh one",
                    self.log_id(sid), exc.reason)
        signals.session_rejected.send(self, reason="undecodable record",
                                      log_id=self.log_id(sid))
        yield StoreCall("delete", key)
        return None

    def _forward_target_steps(self, old_sid: str, now: float) -> Steps[str | None]:
        """The id ``old_sid`` was rotated to less than SESSION_ROTATION_GRACE ago."""
        if not self.rotation_grace:
            return None
        try:
            record = yield StoreCall("load", forward_key(self.key_prefix, old_sid), now)
        except UndecodableRecord:
            return None
        return None if record is None else forwarded_sid(self.codec, old_sid, record)

    # -- save ----------------------------------------------------------------------
    def save(self, session: Session) -> CookieUpdate | None:
        if not session.loaded:
            return None  # the request never touched the session: no store I/O at all
        if self.makes_no_store_call(session):
            return self.save_without_store(session)
        if self._saves_delta(session):
            changes = session.changes()
            if changes or session.meta_changed:
                return self._save_delta(session, changes)
        return run_sync(self.save_steps(session), self.store)

    def _saves_delta(self, session: Session) -> bool:
        """True when ``save_steps`` would get past its special cases (rotation, logout,
        an empty or new session, a login) to the delta update or the refresh."""
        state = session.state
        return (state.rotated_from is None and not state.new and not session.destroyed
                and not session.regenerate_requested and not session.empty)

    def _save_delta(self, session: Session, changes: SessionChanges) -> CookieUpdate | None:
        """``save_steps``' delta update with the store called directly (the common write:
        no generator to drive); only a missed update goes on as steps."""
        state = session.state
        sid: str = state.sid  # type: ignore[assignment]
        now = self.clock()
        expires_at = self.policy.expires_at(state.created_at, now)
        update = self._update(session, changes, now, expires_at)
        if self.store.update(self.key(sid), update):
            session.mark_saved()
            return self._cookie(sid, state.permanent, expires_at, now)
        return run_sync(self._missed_update_steps(session, sid, update, now), self.store)

    def save_without_store(self, session: Session) -> CookieUpdate | None:
        """``save`` of a session ``makes_no_store_call`` cleared (safe on an event loop)."""
        if not session.empty and session.state.rotated_from is None:
            return None  # the common read: settled here, without running the steps
        return run_sync(self.save_steps(session), self.store)  # a cookie to clear, if any

    def makes_no_store_call(self, session: Session) -> bool:
        """True when saving the loaded ``session`` certainly makes no store call: the
        app only read it, and no refresh is due (or there is nothing stored). What
        ``save_steps`` concludes the long way."""
        if session.needs_save:
            return False
        if session.empty:
            return True
        state = session.state
        return not state.new and not self.policy.should_refresh(
            state.created_at, state.accessed_at, self.clock())

    def save_steps(self, session: Session) -> Steps[CookieUpdate | None]:
        """The store work of saving ``session`` (store_steps.py): none when the request
        never touched it; one delta update, create, delete or refresh in the common
        cases; a rotation at login."""
        if not session.loaded:
            return None  # the request never touched the session: no store I/O at all
        state = session.state
        now = self.clock()
        if state.rotated_from is not None:
            return (yield from self._save_rotated(session, state, state.rotated_from, now))
        if session.destroyed or (session.empty and (session.modified or session.cleared)):
            return (yield from self._destroy(session, state, now))
        if session.empty:
            # Nothing to keep. A bad or stale cookie is cleared so it is not sent again.
            return DELETE_COOKIE if state.had_cookie else None
        if state.new:
            return (yield from self._create(session, state, now))
        sid: str = state.sid  # type: ignore[assignment]
        if session.regenerate_requested:
            return (yield from self._rotate(session, state, sid, now))
        changes = session.changes()
        if changes or session.meta_changed:
            expires_at = self.policy.expires_at(state.created_at, now)
            update = self._update(session, changes, now, expires_at)
            if (yield StoreCall("update", self.key(sid), update)):
                session.mark_saved()
                return self._cookie(sid, state.permanent, expires_at, now)
            return (yield from self._missed_update_steps(session, sid, update, now))
        if self.policy.should_refresh(state.created_at, state.accessed_at, now):
            expires_at = self.policy.expires_at(state.created_at, now)
            touched = yield StoreCall("touch", self.key(sid), now, expires_at,
                                      version=state.version)
            if touched is False:
                return None  # rotated or ended meanwhile: never re-send a dead id
            # A browser-session cookie has no expiry to extend: only the record had.
            return self._cookie(sid, True, expires_at, now) if state.permanent else None
        return None

    def _missed_update_steps(self, session: Session, sid: str, update: SessionUpdate,
                             now: float) -> Steps[CookieUpdate | None]:
        """After ``update`` found no record under ``sid``."""
        new_sid = yield from self._forward_target_steps(sid, now)
        if new_sid is not None:
            # A login rotated the id while this request ran: its changes belong to
            # the new session, and the login's response carries the new cookie.
            update.version = None  # the token was the old record's
            if (yield StoreCall("update", self.key(new_sid), update)):
                logger.info("session %s was rotated while a request ran; its changes "
                            "were saved under the new id", self.log_id(sid))
            session.mark_saved()
            return None
        # Destroyed by a concurrent request (a logout): never resurrect it.
        logger.info("session %s was destroyed concurrently; change dropped",
                    self.log_id(sid))
        return DELETE_COOKIE

    def _update(self, session: Session, changes: SessionChanges, now: float,
                expires_at: float) -> SessionUpdate:
        state = session.state
        # Positional, as in _live_state: one per write.
        return SessionUpdate(
            changes.set_values, changes.deleted_keys, changes.replace,
            now, expires_at, state.permanent,  # accessed_at, expires_at, permanent
            state.user_id, session.user_changed,  # user_id, user_id_changed
            {}, state.version,  # extra, version
        )

    def _create(self, session: Session, state: LoadedState, now: float,
                values: dict[str, bytes] | None = None) -> Steps[CookieUpdate]:
        """A new record under a new id: a first save, or a new start after a logout."""
        sid = self.ids.new()
        created_at = now if state.new else state.created_at
        expires_at = self.policy.expires_at(created_at, now)
        yield StoreCall("create", self.key(sid), SessionRecord(
            values=session.encoded_values() if values is None else values,
            created_at=created_at, accessed_at=now, expires_at=expires_at,
            permanent=state.permanent, user_id=state.user_id,
        ))
        if state.sid is None:
            signals.session_created.send(self, log_id=self.log_id(sid), user_id=state.user_id)
        self._saved_as(session, state, sid, created_at, now, expires_at)
        return self._cookie(sid, state.permanent, expires_at, now)

    def _rotate(self, session: Session, state: LoadedState, old_sid: str,
                now: float) -> Steps[CookieUpdate | None]:
        """A login or ``regenerate()``: the data moves to a new id, the old id stops
        working (session fixation), and requests still carrying it are not hurt."""
        fresh = yield from self._load_record_steps(old_sid, now)
        if fresh is None:
            # Rotated (a double-submitted login) or ended by a concurrent request.
            joined = yield from self._join_rotation(session, state, old_sid, now)
            if joined is not None:
                return joined
            state.sid, state.new = None, True
            return (yield from self._create(session, state, now))
        # Start from what is stored now, so a write that landed after this request
        # loaded the session is kept.
        values = self._update(session, session.changes(), now, now).apply_to(fresh.values)
        sid = self.ids.new()
        new_key = self.key(sid)
        expires_at = self.policy.expires_at(state.created_at, now)
        yield StoreCall("create", new_key, SessionRecord(
            values=values, created_at=state.created_at, accessed_at=now,
            expires_at=expires_at, permanent=state.permanent, user_id=state.user_id,
        ))
        if self.rotation_grace and not (yield StoreCall(
                "add", forward_key(self.key_prefix, old_sid),
                forward_record(self.codec, old_sid, sid, now, self.rotation_grace))):
            # A concurrent request rotated this id first: join its new session rather
            # than leave a second one behind in the user's list.
            joined = yield from self._join_rotation(session, state, old_sid, now)
            if joined is not None:
                yield StoreCall("delete", new_key)
                return joined
        yield StoreCall("delete", self.key(old_sid))
        signals.session_regenerated.send(self, log_id=self.log_id(sid),
                                         old_log_id=self.log_id(old_sid),
                                         user_id=state.user_id)
        self._saved_as(session, state, sid, state.created_at, now, expires_at)
        return self._cookie(sid, state.permanent, expires_at, now)

    def _join_rotation(self, session: Session, state: LoadedState, old_sid: str,
                       now: float) -> Steps[CookieUpdate | None]:
        """Save this request's changes into the session ``old_sid`` was rotated to, if
        that one belongs to the same user (None otherwise)."""
        new_sid = yield from self._forward_target_steps(old_sid, now)
        record = None
        if new_sid is not None:
            record = yield from self._load_record_steps(new_sid, now)
        if new_sid is None or record is None or record.user_id != state.user_id:
            return None
        expires_at = self.policy.expires_at(record.created_at, now)
        update = self._update(session, session.changes(), now, expires_at)
        update.user_id_changed, update.version = False, None
        if not (yield StoreCall("update", self.key(new_sid), update)):
            return None
        logger.info("session %s was already rotated by a concurrent request; joined it",
                    self.log_id(old_sid))
        self._saved_as(session, state, new_sid, record.created_at, now, expires_at)
        return self._cookie(new_sid, state.permanent, expires_at, now)

    def _save_rotated(self, session: Session, state: LoadedState, old_sid: str,
                      now: float) -> Steps[CookieUpdate | None]:
        """A request that arrived with an id rotated moments ago. It never clears or
        replaces the browser's new cookie; only a login of the same user joins the new
        session, and a logout ends it."""
        if session.destroyed:
            yield from self._end_forwarded(old_sid, now)
            return None if session.empty else (yield from self._create(session, state, now))
        if session.empty:
            return None
        if session.regenerate_requested and state.user_id is not None:
            joined = yield from self._join_rotation(session, state, old_sid, now)
            return joined if joined is not None else (
                yield from self._create(session, state, now))
        logger.info("session %s was rotated moments ago; this request's changes are "
                    "dropped", self.log_id(old_sid))
        return None

    def _end_forwarded(self, old_sid: str, now: float) -> Steps[None]:
        """A logout sent with an id rotated moments ago ends the session it went to."""
        new_sid = yield from self._forward_target_steps(old_sid, now)
        if new_sid is not None:
            yield StoreCall("delete", self.key(new_sid))
            yield StoreCall("delete", forward_key(self.key_prefix, old_sid))
            signals.session_destroyed.send(self, log_id=self.log_id(new_sid), user_id=None)

    def _saved_as(self, session: Session, state: LoadedState, sid: str, created_at: float,
                  now: float, expires_at: float) -> None:
        state.sid, state.new, state.created_at = sid, False, created_at
        state.accessed_at, state.expires_at = now, expires_at
        session.mark_saved()

    def _destroy(self, session: Session, state: LoadedState,
                 now: float) -> Steps[CookieUpdate | None]:
        if state.sid is not None and not state.new:
            yield StoreCall("delete", self.key(state.sid))
            signals.session_destroyed.send(self, log_id=self.log_id(state.sid),
                                           user_id=session.loaded_user_id)
        if session.empty:
            return DELETE_COOKIE if state.had_cookie else None
        # Written to after logout (a flash message, say): that starts a new session
        # under a new id; nothing of the destroyed one carries over.
        state.sid, state.new = None, True
        return (yield from self._create(session, state, now))

    def log_id_of_key(self, key: str) -> str:
        """The log id of the session stored under ``key`` (same as ``log_id(sid)``)."""
        return self.log_id.of_digest(key.removeprefix(self.key_prefix))

    def _cookie(self, sid: str, permanent: bool, expires_at: float, now: float) -> CookieUpdate:
        max_age = self.policy.cookie_max_age(expires_at, now) if permanent else None
        return CookieUpdate(self.token(sid), max_age)
