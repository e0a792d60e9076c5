"""Where a rotated session id went: the grace window after a login or ``regenerate()``.

When a session gets a new id, requests the browser sent before it saw the new cookie
still carry the old one. A *forward record* kept for ``SESSION_ROTATION_GRACE`` seconds
under a key derived from the old id lets the core tell such a request from a stale or
forged cookie: it must not delete or replace the new cookie, and a write it started
before the rotation lands in the new session.

The forward names the new id sealed under the old one (a keystream derived from the
old id), so the store, which only ever sees hashes of ids, cannot read a live id from it.
"""

from __future__ import annotations

import hashlib

from .ids import storage_key
from .serialization import ValueCodec
from .stores.base import SessionRecord

#: the one value of a forward record
FORWARD_VALUE = "_sk.forward"
_KEY_LABEL = "sessionkeeper-forward:"
_SEAL_LABEL = b"sessionkeeper-forward-seal:"


def forward_key(key_prefix: str, old_sid: str) -> str:
    """The store key of ``old_sid``'s forward; shaped like any session key."""
    return key_prefix + storage_key(_KEY_LABEL + old_sid)


def _keystream(old_sid: str, size: int) -> bytes:
    return hashlib.shake_256(_SEAL_LABEL + old_sid.encode("ascii")).digest(size)


def seal(old_sid: str, new_sid: str) -> str:
    data = new_sid.encode("ascii")
    return bytes(a ^ b for a, b in zip(data, _keystream(old_sid, len(data)), strict=True)).hex()


def unseal(old_sid: str, sealed: str) -> str | None:
    try:
        data = bytes.fromhex(sealed)
        new_sid = bytes(a ^ b for a, b in zip(data, _keystream(old_sid, len(data)), strict=True))
        return new_sid.decode("ascii")
    except (ValueError, UnicodeError):
        return None


def forward_record(codec: ValueCodec, old_sid: str, new_sid: str, now: float,
                   grace: float) -> SessionRecord:
    """A short-lived record bound to no user (it never shows in a device list)."""
    return SessionRecord(values={FORWARD_VALUE: codec.encode(seal(old_sid, new_sid))},
                         created_at=now, accessed_at=now, expires_at=now + grace,
                         permanent=False)


def forwarded_sid(codec: ValueCodec, old_sid: str, record: SessionRecord) -> str | None:
    """The new id a forward record names, or None when it is not a forward record."""
    raw = record.values.get(FORWARD_VALUE)
    if raw is None:
        return None
    try:
        sealed = codec.decode(raw)
    except (ValueError, TypeError):
        return None
    return unseal(old_sid, sealed) if isinstance(sealed, str) else None
