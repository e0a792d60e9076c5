"""The cachelib store (``SESSION_TYPE="cachelib"``): sessions in any cachelib cache the
app passes as ``SESSION_CACHELIB`` (FileSystemCache, RedisCache, MemcachedCache,
SimpleCache, ...), as Flask-Session 0.8 does.

Data layout (the cache may put its own ``key_prefix`` in front of every key):

- ``<SESSION_KEY_PREFIX><sha256 of the id>``: the whole record as one ``bytes`` blob
  (:class:`RecordCodec`), with the cache timeout running to its ``expires_at`` (plus
  ``SESSION_KEEP_EXPIRED``);
- ``<record key>:lock``: held for the few milliseconds a change takes (caches other
  than FileSystemCache, which is locked with ``flock``; see cachelib_lock);
- ``<SESSION_KEY_PREFIX>user:<sha256 of the user id>``: the keys of that user's sessions
  (the per-user index), oldest first, at most ``max_sessions_per_user`` of them.

cachelib has no compare-and-swap, so every change of a stored record (a delta, a
refresh, a delete, a claim) holds that record's lock while it reads and writes: two
requests of one session that change different keys both survive, and a change that
finds the record gone (a logout) writes nothing. A read takes no lock.

cachelib pickles whatever it stores. This store hands it ``bytes`` only, so what it
writes unpickles to ``bytes`` and nothing else; what it reads back is checked to be
``bytes`` before it is decoded, with the same no-pickle codec as every store. Whoever
can write to the cache itself can still make cachelib unpickle anything: see
docs/stores/cachelib.md.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import secrets
import time
from collections.abc import Callable, Collection, Iterable
from contextlib import suppress
from dataclasses import replace
from typing import Any, TypeVar

import msgspec
from cachelib.base import BaseCache
from cachelib.file import FileSystemCache
from cachelib.simple import SimpleCache

from ..errors import ConfigurationError, StoreUnavailable, UndecodableRecord
from ..serialization import ValueCodec
from ..settings import Settings
from .base import RecordCodec, SessionRecord, SessionStore, SessionUpdate
from .cachelib_files import CacheDir, Sweeper, cache_dir, sweep_all
from .cachelib_lock import LOCK_SUFFIX, LOCK_WAIT, AddLocks, FileLocks, Locks

logger = logging.getLogger("sessionkeeper")
T = TypeVar("T")

#: where Flask-Session 0.8 puts its FileSystemCache when SESSION_CACHELIB is unset
DEFAULT_DIRECTORY = "flask_session"
#: memcached's key limit, the strictest of cachelib's backends
MAX_KEY_LENGTH = 250
_HASHED_KEY = "skh:"
_PLAIN_KEY = re.compile(rb"[\x21-\x7e]+")  # printable ASCII: valid on every backend
#: an index is checked in full for sessions that are gone after this many additions,
#: or half its length if more: a login costs a bounded number of reads on average
INDEX_PRUNE_AT = 10
#: the most sessions one user keeps by default; a login past it revokes the oldest
MAX_SESSIONS_PER_USER = 1000
#: how many index expiries a process remembers (it forgets them all past this)
_REMEMBERED_INDEXES = 10_000
#: packages whose exceptions mean the cache's server could not be used
_DRIVERS = frozenset({"redis", "valkey", "pymemcache", "pylibmc", "memcache", "libmc",
                      "bmemcached", "pymongo", "botocore", "boto3", "uwsgi"})


def _is_outage(exc: BaseException) -> bool:
    return isinstance(exc, OSError) or type(exc).__module__.partition(".")[0] in _DRIVERS


def cache_key(key: str, room: int = MAX_KEY_LENGTH) -> str:
    """``key`` if every cachelib backend accepts it within ``room`` bytes, else a
    fixed-length hash (memcached refuses spaces, control characters and long keys, and
    cachelib's MemcachedCache then answers "not found" instead of failing)."""
    raw = key.encode("utf-8")
    if len(raw) <= room and _PLAIN_KEY.fullmatch(raw):
        return key
    return _HASHED_KEY + hashlib.sha256(raw).hexdigest()


def default_cache() -> FileSystemCache:
    """Flask-Session's cache when SESSION_CACHELIB is unset, in the same directory, but
    with ``threshold=0``: its 500-entry threshold deletes live sessions (the store
    removes expired files itself)."""
    directory = os.path.join(os.getcwd(), DEFAULT_DIRECTORY)
    try:
        return FileSystemCache(directory, threshold=0)
    except OSError as exc:
        raise ConfigurationError(f"SESSION_CACHELIB is unset, and its default "
                                 f"FileSystemCache cannot use {directory} ({exc}): pass "
                                 "a cachelib cache in SESSION_CACHELIB") from exc


def cache_from_setting(value: object) -> Any:
    if value is None:
        logger.info("SESSION_CACHELIB is unset: sessions go to a FileSystemCache in "
                    "./%s, as on Flask-Session", DEFAULT_DIRECTORY)
        return default_cache()
    if isinstance(value, BaseCache) or all(
            callable(getattr(value, name, None)) for name in ("get", "set", "add", "delete")):
        return value
    raise ConfigurationError(
        "SESSION_CACHELIB must be a cachelib cache, e.g. "
        "cachelib.FileSystemCache('flask_session', threshold=0) or "
        f"cachelib.RedisCache(...), not a {type(value).__module__}.{type(value).__qualname__}")


def store_from_settings(settings: Settings, codec: ValueCodec) -> CachelibStore:
    """SESSION_CACHELIB (any cachelib cache; unset: a FileSystemCache in ./flask_session)."""
    cache = cache_from_setting(settings.config.get("SESSION_CACHELIB"))
    return CachelibStore(cache, codec=codec, key_prefix=settings.key_prefix,
                         keep_expired=settings.keep_expired)


def _warn_about(cache: Any, folder: CacheDir | None) -> None:
    """Log what a cache the app passed cannot guarantee for sessions."""
    kind = type(cache).__name__
    if isinstance(cache, FileSystemCache) and folder is None:
        logger.warning("SESSION_CACHELIB %s: this cachelib's FileSystemCache is not one "
                       "sessionkeeper knows; its add() is not atomic, so concurrent "
                       "requests of one session may lose updates", kind)
    if folder is not None and folder.threshold:
        logger.warning(
            "SESSION_CACHELIB FileSystemCache(threshold=%d) deletes live sessions once it "
            "holds more than %d entries, logging those users out; create it with "
            "threshold=0 (sessionkeeper removes expired files itself)",
            folder.threshold, folder.threshold)
    if isinstance(cache, SimpleCache):
        logger.warning(
            "SESSION_CACHELIB SimpleCache keeps sessions in this process only (each "
            "worker of a multi-process server has its own) and deletes live ones past "
            "its threshold of %s entries", getattr(cache, "_threshold", "?"))
    if type(cache).__name__ == "MongoDbCache":
        logger.warning("SESSION_CACHELIB MongoDbCache: its add() is not atomic, so "
                       "concurrent requests of one session may lose updates; "
                       "SESSION_TYPE='mongodb' does not")
    memcache_client = type(getattr(cache, "_client", None))
    if (memcache_client.__module__.startswith("pymemcache")
            and memcache_client.__qualname__ == "Client"):
        logger.warning("SESSION_CACHELIB %s: a single-connection client cannot serve "
                       "concurrent requests; pass a pooled one (pymemcache PooledClient)",
                       kind)
    client = getattr(cache, "_write_client", None)
    pool = getattr(client, "connection_pool", None)
    options = getattr(pool, "connection_kwargs", None)
    if isinstance(options, dict) and options.get("socket_timeout") is None:
        logger.warning("SESSION_CACHELIB %s: its Redis client has no socket_timeout, so a "
                       "hung server blocks requests for minutes; create the client with "
                       "socket_timeout= and socket_connect_timeout=", kind)


class _Index(msgspec.Struct, omit_defaults=True):
    """A user's sessions, oldest first; the additions since it was last checked in full;
    and the time it is kept until (past the expiry of every session it lists)."""

    k: list[str]
    n: int = 0
    e: float = 0.0


class CachelibStore(SessionStore):
    """Session records in a cachelib cache, changed under a short per-record lock."""

    name = "cachelib"
    sweeps_itself = True  # caches expire entries; FileSystemCache folders get a pass

    def __init__(self, cache: Any, *, codec: ValueCodec | None = None,
                 key_prefix: str = "session:", keep_expired: float = 0.0,
                 max_sessions_per_user: int = MAX_SESSIONS_PER_USER,
                 lock_wait: float = LOCK_WAIT) -> None:
        if (not isinstance(max_sessions_per_user, int) or isinstance(max_sessions_per_user, bool)
                or max_sessions_per_user < 1):
            raise ConfigurationError("the cachelib store's max_sessions_per_user must be a "
                                     f"positive whole number, not {max_sessions_per_user!r}")
        self.cache = cache
        self.codec = codec or ValueCodec()
        self.records = RecordCodec(self.codec)
        self.key_prefix = key_prefix
        #: seconds the cache keeps a record past its expiry (SESSION_KEEP_EXPIRED)
        self.keep_expired = keep_expired
        #: a login past this many sessions of one user revokes the oldest
        self.max_sessions_per_user = max_sessions_per_user
        prefix = getattr(cache, "key_prefix", None)
        self._room = MAX_KEY_LENGTH - len(LOCK_SUFFIX) - (
            len(prefix.encode("utf-8")) if isinstance(prefix, str) else 0)
        if self._room < len(_HASHED_KEY) + 64:
            raise ConfigurationError("the cachelib cache's key_prefix is too long: keys are "
                                     f"limited to {MAX_KEY_LENGTH} bytes on memcached")
        self._index_encode = self.codec.module.Encoder().encode
        self._index_decode = self.codec.module.Decoder(_Index).decode
        self.folder = cache_dir(cache)
        self.locks: Locks
        if self.folder is not None:
            self.locks = FileLocks(self.folder.path, self.folder.suffix, self.name,
                                   wait=lock_wait)
        else:
            self.locks = AddLocks(cache, self._call, self.name, wait=lock_wait)
        self._sweeper = Sweeper(self.folder) if self.folder is not None else None
        #: index key -> the time this process knows that index is kept until
        self._index_until: dict[str, float] = {}
        _warn_about(cache, self.folder)

    # -- calls -------------------------------------------------------------------------
    def _call(self, op: Callable[..., T], *args: Any) -> T:
        try:
            return op(*args)
        except Exception as exc:
            if _is_outage(exc):
                raise StoreUnavailable(self.name, exc) from exc
            raise

    def _ckey(self, key: str) -> str:
        return cache_key(key, self._room)

    def _fetch(self, ckey: str) -> object:
        """The value under ``ckey`` as the cache gives it back (None: absent)."""
        try:
            return self.cache.get(ckey)
        except Exception as exc:
            if _is_outage(exc):
                raise StoreUnavailable(self.name, exc) from exc
            # cachelib passes on what unpickling a damaged entry raised.
            raise UndecodableRecord(self.name, exc) from exc

    def _decode(self, value: object) -> SessionRecord:
        if not isinstance(value, bytes):
            raise UndecodableRecord(self.name, f"the cache holds a {type(value).__name__}, "
                                               "not a record")
        try:
            return self.records.loads(value)
        except UndecodableRecord as exc:
            raise UndecodableRecord(self.name, exc.reason) from exc
        except RecursionError as exc:  # nested deeper than any session value may be
            raise UndecodableRecord(self.name, exc) from exc

    def _record(self, ckey: str) -> SessionRecord | None:
        value = self._fetch(ckey)
        return None if value is None else self._decode(value)

    def _ttl(self, until: float) -> int:
        """The cache timeout that keeps an entry until ``until`` (+ SESSION_KEEP_EXPIRED);
        at least 1, because 0 means "forever" to cachelib."""
        return max(1, math.ceil(until + self.keep_expired - time.time()))

    def _write(self, ckey: str, blob: bytes, until: float) -> None:
        if not self._call(self.cache.set, ckey, blob, self._ttl(until)):
            # FileSystemCache and memcached clients report a failed write as False.
            raise StoreUnavailable(self.name, "the cache did not store the record")

    def _rewrite(self, key: str, change: Callable[[SessionRecord], SessionRecord],
                 live_at: float | None = None) -> SessionRecord | None:
        """Apply ``change`` under the record's lock; the record it changed, or None when
        gone (or, given ``live_at``, expired then: kept for SESSION_KEEP_EXPIRED only)."""
        ckey = self._ckey(key)
        with self.locks.hold(ckey, "r"):
            try:
                current = self._record(ckey)
            except UndecodableRecord:
                return None  # as good as gone: its next load removes it
            if current is None or (live_at is not None and current.expires_at <= live_at):
                return None
            changed = change(current)
            self._write(ckey, self.records.dumps(changed), changed.expires_at)
        return current

    # -- interface -----------------------------------------------------------------------
    def load(self, key: str, now: float) -> SessionRecord | None:
        record = self._record(self._ckey(key))
        if record is None or record.expires_at <= now:
            return None
        return record

    def create(self, key: str, record: SessionRecord) -> None:
        if record.user_id is not None:
            # Index first: a crash in between leaves a stale entry, never an unlisted session.
            self._index_change(record.user_id, add=key, until=record.expires_at)
        self._write(self._ckey(key), self.records.dumps(record), record.expires_at)
        if self._sweeper is not None:
            self._sweeper.step(time.time())

    def add(self, key: str, record: SessionRecord) -> bool:
        if record.user_id is not None:
            self._index_change(record.user_id, add=key, until=record.expires_at)
        ckey = self._ckey(key)
        with self.locks.hold(ckey, "r"):
            try:
                current = self._record(ckey)
            except UndecodableRecord:
                current = None  # damaged: counts as absent
            if current is not None and current.expires_at > record.accessed_at:
                return False
            self._write(ckey, self.records.dumps(record), record.expires_at)
        return True

    def update(self, key: str, update: SessionUpdate) -> bool:
        new_user = update.user_id if update.user_id_changed else None
        if new_user is not None:
            self._index_change(new_user, add=key, until=update.expires_at)

        def change(current: SessionRecord) -> SessionRecord:
            return current.updated(update)

        before = self._rewrite(key, change)
        if before is None:
            return False
        old_user = before.user_id
        if update.user_id_changed:
            if old_user is not None and old_user != update.user_id:
                self._index_change(old_user, drop={key}, best_effort=True)
        elif old_user is not None:
            self._index_outlives(old_user, key, update.expires_at)
        return True

    def touch(self, key: str, accessed_at: float, expires_at: float, *,
              version: Any = None) -> bool:
        before = self._rewrite(key, lambda current: replace(
            current, accessed_at=accessed_at, expires_at=expires_at), live_at=accessed_at)
        if before is None:
            return False
        if before.user_id is not None:
            self._index_outlives(before.user_id, key, expires_at)
        return True

    def delete(self, key: str) -> None:
        ckey = self._ckey(key)
        with self.locks.hold(ckey, "r"):
            if not self._call(self.cache.delete, ckey) and self._present(ckey):
                # A logout must not pass silently.
                raise StoreUnavailable(self.name, "the record could not be deleted")

    def delete_expired(self, now: float) -> int:
        """Expired FileSystemCache files (other caches expire entries themselves)."""
        return sweep_all(self.folder, now) if self.folder is not None else 0

    def keys_for_user(self, user_id: str, now: float) -> list[str]:
        keys = self._read_index(self._index_key(user_id)).k
        records = self._records_of(user_id, keys)
        if len(records) < len(keys):
            # Sessions that ended (or changed hands) leave the index; one try is enough.
            self._index_change(user_id, drop=set(keys) - set(records), best_effort=True)
        return [k for k, record in records.items() if record.expires_at > now]

    def check(self) -> None:
        """Reachable, keeps what it is given as given, and ``add`` refuses a taken key
        (the locks rely on it)."""
        kind = type(self.cache).__name__
        probe = self._ckey(f"{self.key_prefix}probe:{secrets.token_hex(8)}")
        if not self._call(self.cache.set, probe, b"1", 30):
            raise StoreUnavailable(self.name, f"{kind} did not store a value")
        try:
            held = self._fetch(probe)
            if held != b"1":
                raise ConfigurationError(
                    f"SESSION_CACHELIB {kind} gave back {type(held).__name__} "
                    f"{held!r:.40} for the bytes it was given: "
                    + ("it keeps nothing (a NullCache?)" if held is None else
                       "its serializer must return bytes as they were stored"))
            if self.folder is None and self._call(self.cache.add, probe, b"2", 30):
                raise ConfigurationError(
                    f"SESSION_CACHELIB {kind}: add() overwrote a key that exists (a memcached "
                    "client created with default_noreply=True answers before the server "
                    "does), so concurrent requests of one session would lose updates")
        finally:
            with suppress(StoreUnavailable):
                self._call(self.cache.delete, probe)

    def close(self) -> None:
        client = getattr(self.cache, "_write_client", None)
        close = getattr(client, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # closing is best effort
                logger.debug("closing the cachelib cache's client failed", exc_info=True)

    # -- the per-user index ----------------------------------------------------------------
    def _present(self, ckey: str) -> bool:
        try:
            return self._fetch(ckey) is not None
        except UndecodableRecord:
            return True

    def _index_key(self, user_id: str) -> str:
        digest = hashlib.sha256(user_id.encode("utf-8")).hexdigest()
        return self._ckey(f"{self.key_prefix}user:{digest}")

    def _read_index(self, ikey: str) -> _Index:
        try:
            value = self._fetch(ikey)
        except UndecodableRecord:
            return _Index([])
        if not isinstance(value, bytes):
            return _Index([])
        try:
            return self._index_decode(value)
        except (msgspec.DecodeError, ValueError, TypeError):
            return _Index([])  # damaged: rebuilt from the sessions that add themselves

    def _index_outlives(self, user_id: str, key: str, expires_at: float) -> None:
        """Keep the user's index (and ``key`` in it) at least until ``expires_at``: a
        refreshed session must never outlive its entry. Costs nothing while this
        process knows the index is kept long enough."""
        if self._index_until.get(self._index_key(user_id), 0.0) >= expires_at:
            return
        self._index_change(user_id, add=key, until=expires_at, best_effort=True)

    def _index_change(self, user_id: str, *, add: str | None = None,
                      drop: Collection[str] = (), until: float = 0.0,
                      best_effort: bool = False) -> None:
        """Add a key to, or drop keys from, a user's index, under the index's lock.

        An addition checks the whole index for sessions that are gone once per
        INDEX_PRUNE_AT additions, or half its length if more (a bounded average cost),
        and past ``max_sessions_per_user`` revokes the user's oldest sessions. The index
        is kept until twice the remaining life of the latest session it lists, so most
        refreshes need not extend it.
        """
        ikey = self._index_key(user_id)
        try:
            with self.locks.hold(ikey, "i"):
                self._change_index(ikey, user_id, add, drop, until)
        except StoreUnavailable as exc:
            if not best_effort:
                raise
            logger.warning("a user's session index was not updated: %s", exc.reason)

    def _change_index(self, ikey: str, user_id: str, add: str | None,
                      drop: Collection[str], until: float) -> None:
        old = self._read_index(ikey)
        keys = [k for k in old.k if k not in drop]
        added = old.n
        if add is not None and add not in keys:
            due = added + 1 >= max(INDEX_PRUNE_AT, len(keys) // 2)
            if due or len(keys) >= self.max_sessions_per_user:
                now = time.time()
                keys = [k for k, record in self._records_of(user_id, keys).items()
                        if record.expires_at > now]
                added = 0
            keys.append(add)
            added += 1
            excess = len(keys) - self.max_sessions_per_user
            if excess > 0:
                # Revoked before the index forgets them: a session never outlives its entry.
                self._revoke(user_id, keys[:excess])
                keys = keys[excess:]
        kept_until = old.e
        if until:
            kept_until = max(kept_until, until + max(0.0, until - time.time()))
        new = _Index(keys, added, kept_until)
        if new != old:
            if keys:
                self._write(ikey, self._index_encode(new), kept_until)
            elif old.k:
                self._call(self.cache.delete, ikey)
        if len(self._index_until) >= _REMEMBERED_INDEXES:
            self._index_until.clear()
        self._index_until[ikey] = kept_until if keys else 0.0

    def _revoke(self, user_id: str, keys: list[str]) -> None:
        """End those of ``keys`` that are still sessions of ``user_id`` (over the cap)."""
        ended = list(self._records_of(user_id, keys))
        for key in ended:
            self.delete(key)
        if ended:
            logger.info("a user had more than %d sessions: the %d oldest were revoked",
                        self.max_sessions_per_user, len(ended))

    def _records_of(self, user_id: str, keys: Iterable[str]) -> dict[str, SessionRecord]:
        """Those of ``keys`` still stored and bound to ``user_id``, in index order."""
        keys = list(keys)
        if not keys:
            return {}
        ckeys = [self._ckey(k) for k in keys]
        try:
            values: list[object] = list(self.cache.get_many(*ckeys))
        except Exception as exc:
            if _is_outage(exc):
                raise StoreUnavailable(self.name, exc) from exc
            values = [self._fetch_or_none(ckey) for ckey in ckeys]  # one is damaged
        found: dict[str, SessionRecord] = {}
        for key, value in zip(keys, values, strict=True):
            if value is None:
                continue
            try:
                record = self._decode(value)
            except UndecodableRecord:
                continue  # not listed; its next load removes it
            if record.user_id == user_id:
                found[key] = record
        return found

    def _fetch_or_none(self, ckey: str) -> object:
        try:
            return self._fetch(ckey)
        except UndecodableRecord:
            return None
