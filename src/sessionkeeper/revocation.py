"""Revocation of sessions the server cannot enumerate: cookie sessions.

A cookie session bound to a user carries the user id, when it was bound and a random
handle (signed, so none can be forged). The server cannot delete such a cookie, so it
remembers, per user, what no longer counts:

- a "not before" stamp: every session of the user bound before it is refused
  (sign out everywhere, or everywhere else once the current cookie is re-stamped);
- revoked handles: one session each (a logout, a re-login, "revoke this device").

Both live in one small record per user in a :class:`SessionStore` (any SESSION_TYPE),
under ``<SESSION_KEY_PREFIX>revoked:<sha256 of the user id>``. Every entry is its own
key of the record, so concurrent revocations merge instead of overwriting each other.
A record expires one session window after its last write: by then every cookie it
could refuse has expired on its own.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from .serialization import ValueCodec
from .stores.base import SessionRecord, SessionStore, SessionUpdate

_NOT_BEFORE = "not_before"
_HANDLE = "handle:"


class RevocationList:
    """Per-user revocation entries in a store; one read per check, one write per change."""

    def __init__(self, store: SessionStore, *, codec: ValueCodec, key_prefix: str,
                 window: float, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.codec = codec
        self.key_prefix = key_prefix
        #: how long a cookie can live after it was last issued (the session window)
        self.window = window
        self.clock = clock

    def key(self, user_id: str) -> str:
        digest = hashlib.sha256(user_id.encode("utf-8")).hexdigest()
        return f"{self.key_prefix}revoked:{digest}"

    # -- checks --------------------------------------------------------------------
    def is_revoked(self, user_id: str, bound_at: float | None, handle: str | None,
                   now: float) -> bool:
        """True when the session of ``user_id`` bound at ``bound_at`` with ``handle``
        was revoked (one store read)."""
        record = self.store.load(self.key(user_id), now)
        if record is None:
            return False
        if handle is not None and _HANDLE + handle in record.values:
            return True
        not_before = self._float(record.values.get(_NOT_BEFORE))
        # A session bound at the very instant of the revocation is refused too; the one
        # kept by "revoke the others" is re-stamped just after it.
        return not_before is not None and (bound_at is None or bound_at <= not_before)

    def _float(self, raw: bytes | None) -> float | None:
        if raw is None:
            return None
        try:
            value = self.codec.decode(raw)
        except ValueError:
            return None  # a damaged entry refuses nothing rather than everything
        return float(value) if isinstance(value, int | float) else None

    # -- changes -------------------------------------------------------------------
    def revoke_user(self, user_id: str, not_before: float) -> None:
        """Refuse every session of ``user_id`` bound at or before ``not_before``."""
        self._write(user_id, {_NOT_BEFORE: self.codec.encode(not_before)})

    def revoke_handle(self, user_id: str, handle: str) -> None:
        """Refuse the one session of ``user_id`` with ``handle``."""
        self._write(user_id, {_HANDLE + handle: self.codec.encode(self.clock())})

    def _write(self, user_id: str, entries: dict[str, bytes]) -> None:
        now = self.clock()
        key = self.key(user_id)
        # now + window covers every entry written so far, so a later write never
        # shortens what an earlier one needs.
        expires_at = now + self.window
        stale = self._stale_handles(key, now)
        update = SessionUpdate(set_values=entries, deleted_keys=stale, replace=False,
                               accessed_at=now, expires_at=expires_at, permanent=True)
        if self.store.update(key, update):
            return
        record = SessionRecord(values=dict(entries), created_at=now, accessed_at=now,
                               expires_at=expires_at, permanent=True)
        try:
            self.store.create(key, record)
        except Exception:
            # Another process created the record first (a unique-key error): merge into it.
            if not self.store.update(key, update):
                raise

    def _stale_handles(self, key: str, now: float) -> set[str]:
        """Handle entries older than a window: their cookies have expired anyway."""
        record = self.store.load(key, now)
        if record is None:
            return set()
        return {name for name, raw in record.values.items()
                if name.startswith(_HANDLE) and (self._float(raw) or 0.0) + self.window < now}
