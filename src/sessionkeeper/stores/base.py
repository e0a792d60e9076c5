"""The interface every server-side store implements.

Stores are thin: they keep records under keys the core derives from session ids, and
apply deltas atomically. Expiry policy, ids, signing and serialization live in the core.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from ..errors import UndecodableRecord
from ..serialization import ValueCodec

T = TypeVar("T")


@dataclass
class SessionRecord:
    """A stored session: encoded values plus the metadata the core needs.

    Stores build one per load with positional arguments (half the cost of keywords):
    the field order is part of the store interface."""

    values: dict[str, bytes]
    created_at: float
    accessed_at: float
    expires_at: float
    permanent: bool
    user_id: str | None = None
    #: store-specific concurrency token (row version, CAS id); opaque to the core
    version: Any = None

    def updated(self, update: SessionUpdate) -> SessionRecord:
        """A new record: this one with ``update`` applied (no version), for stores that
        read, merge and write back while the record as read stays as it was."""
        return SessionRecord(  # positional: one per write
            update.apply_to(self.values), self.created_at, update.accessed_at,
            update.expires_at, update.permanent,
            update.user_id if update.user_id_changed else self.user_id,
        )

    def apply(self, update: SessionUpdate) -> None:
        """Apply a delta in place, for stores that read, merge and write back."""
        self.values = update.apply_to(self.values)
        self.accessed_at = update.accessed_at
        self.expires_at = update.expires_at
        self.permanent = update.permanent
        if update.user_id_changed:
            self.user_id = update.user_id


@dataclass
class SessionUpdate:
    """A delta to apply to an existing record, atomically (one per write, built with
    positional arguments: the field order is part of the store interface)."""

    set_values: dict[str, bytes]
    deleted_keys: set[str]
    replace: bool  # drop every stored value first (the app called clear())
    accessed_at: float
    expires_at: float
    permanent: bool
    user_id: str | None = None
    #: set when the user id changed (None may mean "logged out")
    user_id_changed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    #: the ``version`` of the record this request loaded (a CAS token, a row version,
    #: what it held): it travels with the session, never in per-thread state, so load
    #: and save may run on different threads or tasks
    version: Any = None

    def apply_to(self, values: dict[str, bytes]) -> dict[str, bytes]:
        """The values after this delta; for stores that read-modify-write."""
        merged = {} if self.replace else dict(values)
        for key in self.deleted_keys:
            merged.pop(key, None)
        merged.update(self.set_values)
        return merged


class SessionStore(ABC):
    """Keeps session records. Every method may raise :class:`StoreUnavailable`."""

    #: short name used in messages and logs ("redis", "sqlite", ...)
    name: str = "store"
    #: True when the store removes expired records on its own (TTLs, or a sweep a batch
    #: at a time as sessions are written), so SESSION_CLEANUP_N_REQUESTS is not needed:
    #: a request never runs a whole ``delete_expired`` pass (a directory walk, a scan)
    sweeps_itself: bool = False

    @abstractmethod
    def load(self, key: str, now: float) -> SessionRecord | None:
        """The live record under ``key``, or None when absent or expired at ``now``.

        Raises :class:`UndecodableRecord` when the stored record cannot be decoded.
        """

    @abstractmethod
    def create(self, key: str, record: SessionRecord) -> None:
        """Store a new record (a freshly generated key)."""

    @abstractmethod
    def update(self, key: str, update: SessionUpdate) -> bool:
        """Apply a delta atomically; False when the record is gone (it is not recreated)."""

    def add(self, key: str, record: SessionRecord) -> bool:
        """Store ``record`` only if no live record is under ``key``; False when one is.

        Used to claim an id rotation exactly once. Stores override this with an atomic
        operation; this fallback (a load, then a create) is not atomic.
        """
        if self.load(key, record.accessed_at) is not None:
            return False
        self.create(key, record)
        return True

    @abstractmethod
    def touch(self, key: str, accessed_at: float, expires_at: float, *,
              version: Any = None) -> bool:
        """Extend a record's life without rewriting its data; False (and nothing
        written) when the record is gone.

        ``version`` is the ``version`` of the record this request loaded (None when it
        loaded none, or another key's), for stores that save a round trip with it.
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove a record; no-op when it is gone."""

    def delete_expired(self, now: float) -> int:
        """Remove records expired at ``now``; returns how many (stores with TTLs return 0)."""
        return 0

    def keys_for_user(self, user_id: str, now: float) -> list[str]:
        """Keys of the live sessions bound to ``user_id`` (the per-user index)."""
        raise NotImplementedError(f"the {self.name} store has no per-user index yet")

    def async_operation(self, method: str) -> Callable[..., Awaitable[Any]] | None:
        """A coroutine function doing ``method`` natively on the running event loop
        (same arguments, result and errors), or None: the caller then runs the blocking
        method in a worker thread. Asked per call, so the answer may depend on the loop."""
        return None

    def check(self) -> None:
        """Raise StoreUnavailable when the store cannot be reached (used at start-up)."""
        return None

    def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        return None


class _RecordDocument(msgspec.Struct, omit_defaults=True):
    v: dict[str, msgspec.Raw]
    c: float
    a: float
    e: float
    p: bool
    u: str | None = None


class RecordCodec:
    """One-blob encoding of a whole record, for stores that keep a record as one value.

    The values stay as the encoded bytes the core produced (embedded raw), so packing
    and unpacking never re-encodes session values.
    """

    def __init__(self, codec: ValueCodec) -> None:
        self._encode = codec.module.Encoder().encode
        self._decode = codec.module.Decoder(_RecordDocument).decode

    def dumps(self, record: SessionRecord) -> bytes:
        return self._encode(
            _RecordDocument(
                v={k: msgspec.Raw(v) for k, v in record.values.items()},
                c=record.created_at,
                a=record.accessed_at,
                e=record.expires_at,
                p=record.permanent,
                u=record.user_id,
            )
        )

    def loads(self, blob: bytes) -> SessionRecord:
        """The record in ``blob``; :class:`UndecodableRecord` when it is not one."""
        try:
            doc = self._decode(blob)
        except (msgspec.DecodeError, ValueError, TypeError, RecursionError) as exc:
            raise UndecodableRecord("record", exc) from exc
        return SessionRecord(
            values={k: bytes(v) for k, v in doc.v.items()},
            created_at=doc.c,
            accessed_at=doc.a,
            expires_at=doc.e,
            permanent=doc.p,
            user_id=doc.u,
        )


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Yield lists of at most ``size`` items (for batched deletes and migrations)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
