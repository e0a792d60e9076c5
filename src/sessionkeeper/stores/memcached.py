"""The memcached store: one blob per session, changed with compare-and-swap.

Data layout (every key may carry the client's own ``key_prefix`` in front):

- ``<SESSION_KEY_PREFIX><sha256 of the id>``: the whole record as one blob
  (:class:`RecordCodec`), with a server TTL from its ``expires_at``;
- ``<SESSION_KEY_PREFIX>user:<sha256 of the user id>``: the keys of that user's sessions
  (the per-user index), oldest first, kept without TTL. It holds at most
  ``max_sessions_per_user`` keys: a login past that revokes the user's oldest sessions,
  so the index stays far below memcached's item size and a login never reads more
  than a bounded number of records. Entries of sessions that ended are dropped when
  the whole index is checked, which happens once per half its length in additions.

Round trips: a read is one ``gets``; a changing request adds one ``cas`` (the CAS token
of its own read is reused; only a conflicting concurrent write costs a re-read and a
retry); a refresh is one ``cas``; a new session is one ``set`` (plus the index when it
is bound to a user); claiming a key (``add``) is one ``add``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, TypeAlias, TypeVar

import msgspec
from pymemcache.client.base import Client, PooledClient
from pymemcache.client.hash import HashClient
from pymemcache.exceptions import (
    MemcacheClientError,
    MemcacheError,
    MemcacheServerError,
    MemcacheUnexpectedCloseError,
)

from ..errors import ConfigurationError, SessionKeeperError, StoreUnavailable, UndecodableRecord
from ..serialization import ValueCodec
from ..settings import Settings, seconds
from .base import RecordCodec, SessionRecord, SessionStore, SessionUpdate

logger = logging.getLogger("sessionkeeper")

MemcacheClient: TypeAlias = Client | PooledClient | HashClient
Address: TypeAlias = tuple[str, int] | str
T = TypeVar("T")

DEFAULT_ADDRESS = "127.0.0.1:11211"  # Flask-Session's default server
DEFAULT_PORT = 11211
DEFAULT_TIMEOUT = 1.0
#: memcached reads an expiry above 30 days as an absolute unix time, not a duration
MAX_RELATIVE_TTL = 30 * 24 * 3600
MAX_KEY_LENGTH = 250
_HASHED_KEY = "skh:"  # marks keys replaced by their hash (see memcached_key)
HASHED_KEY_LENGTH = len(_HASHED_KEY) + 64
#: optimistic writes give up (503) after this many conflicting concurrent writes
MAX_CAS_TRIES = 20
#: an index is checked in full for sessions that are gone after this many additions,
#: or half its length if more: a login costs a bounded number of reads on average
INDEX_PRUNE_AT = 10
#: the most sessions one user keeps by default; a login past it revokes the oldest
MAX_SESSIONS_PER_USER = 1000
#: whatever the cap, an index stays this small (memcached keeps items up to 1 MB)
INDEX_MAX_BYTES = 256 * 1024
#: a cap up to this many sessions counts live sessions exactly (the index is checked in
#: full when it is reached); a larger one counts index entries, which may include
#: sessions that ended since the last full check
EXACT_CAP_UP_TO = 100

_PLAIN_KEY = re.compile(rb"[\x21-\x7e]+")  # printable ASCII: no spaces, no control chars
# A pooled connection the server closed (it restarted): one retry on a fresh one is safe,
# because every write here is idempotent (a delta applied twice gives the same record).
_STALE_CONNECTION = (MemcacheUnexpectedCloseError, BrokenPipeError, ConnectionResetError,
                     ConnectionAbortedError)
# HashClient's failover bookkeeping can race between threads (KeyError, ValueError) and a
# garbled reply fails to parse (ValueError): to the app these are an unreachable store.
_UNREACHABLE = (MemcacheError, OSError, ValueError, KeyError)


class MemcachedItemTooLarge(SessionKeeperError):
    """A session record is larger than the memcached server accepts as one item."""

    def __init__(self, size: int) -> None:
        self.size = size
        super().__init__(
            f"the session record is {size} bytes, more than the memcached server accepts "
            "as one item (1 MB unless memcached is started with a larger -I, e.g. -I 8m); "
            "store less in the session or raise the server's item size limit"
        )


# -- configuration -------------------------------------------------------------------

_ACCEPTED = (
    "SESSION_MEMCACHED must be a pymemcache Client, PooledClient or HashClient, an address "
    "('host:port', '[ipv6]:port', '/path/to.sock' or a (host, port) tuple) or a list of "
    "addresses"
)


def parse_address(value: object) -> Address:
    """A pymemcache server spec from ``'host:port'``, ``'host'``, ``'[v6]:port'``,
    a unix socket path or a ``(host, port)`` tuple."""
    host: str
    port: object
    if _is_host_port(value):
        host, port = value  # type: ignore[misc]
        return (_host(host, value), _port(port, value))
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{_ACCEPTED}, not {value!r}")
    text = value.strip()
    if text.startswith("unix:"):
        text = text[len("unix:"):]
    if text.startswith("/"):
        return text
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ConfigurationError(f"memcached address {value!r}: expected '[ipv6]:port'")
        port = rest[1:] or DEFAULT_PORT
    elif text.count(":") > 1:
        raise ConfigurationError(
            f"memcached address {value!r}: write IPv6 addresses as '[address]:port'")
    else:
        host, _, port_text = text.partition(":")
        port = port_text or DEFAULT_PORT
    return (_host(host, value), _port(port, value))


def _host(host: str, given: object) -> str:
    if not host or any(c.isspace() for c in host):
        raise ConfigurationError(f"memcached address {given!r} has no valid host")
    return host


def _port(port: object, given: object) -> int:
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ConfigurationError(f"memcached address {given!r}: the port must be 1-65535")
    return port


def _addresses(value: object) -> list[Address]:
    """The addresses in a SESSION_MEMCACHED value that is not a client object."""
    if value is None:
        return [parse_address(DEFAULT_ADDRESS)]
    if isinstance(value, str) and "," in value:  # "host1:11211,host2:11211" (environment)
        value = [part for part in value.split(",") if part.strip()]
    if isinstance(value, str) or _is_host_port(value):
        return [parse_address(value)]
    if isinstance(value, list | tuple):
        if not value:
            raise ConfigurationError("SESSION_MEMCACHED is an empty list: give at least one "
                                     "address, e.g. '127.0.0.1:11211'")
        return [parse_address(item) for item in value]
    raise ConfigurationError(
        f"{_ACCEPTED}, not a {type(value).__module__}.{type(value).__qualname__}"
        " (pylibmc and python-memcached clients cannot do the compare-and-swap writes "
        "sessions need: give the server addresses instead)"
    )


def _is_host_port(value: object) -> bool:
    """True for ("host", 11211) or ("host", "11211"), as opposed to a tuple of addresses."""
    return (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str)
            and (isinstance(value[1], int) or (isinstance(value[1], str)
                                               and value[1].isdigit())))


def build_client(addresses: list[Address], *, timeout: float = DEFAULT_TIMEOUT,
                 key_prefix: str = "") -> PooledClient | HashClient:
    """A thread-safe client with TCP_NODELAY and short timeouts.

    Without TCP_NODELAY every write waits on Nagle's algorithm and the server's delayed
    ACK: tens to hundreds of milliseconds per request.
    """
    options: dict[str, Any] = {"connect_timeout": timeout, "timeout": timeout,
                               "no_delay": True, "key_prefix": key_prefix.encode("ascii")}
    if len(addresses) == 1:
        return PooledClient(addresses[0], **options)
    # retry_timeout=0: a failed server is retried by the next call (not skipped silently
    # for a second), so a restarted server is used again at once; after retry_attempts
    # failures pymemcache takes it out of the ring for dead_timeout seconds.
    return HashClient(addresses, use_pooling=True, retry_attempts=2, retry_timeout=0,
                      dead_timeout=60, **options)


def client_from_setting(value: object, timeout: float = DEFAULT_TIMEOUT) -> MemcacheClient:
    """The client SESSION_MEMCACHED describes (a client object is used as given)."""
    if isinstance(value, Client | PooledClient | HashClient):
        _warn_about(value)
        return value
    return build_client(_addresses(value), timeout=timeout)


def _server_clients(client: MemcacheClient) -> list[Client | PooledClient]:
    if isinstance(client, HashClient):
        return list(client.clients.values())
    return [client]


def _asks_version(server: Client | PooledClient) -> Callable[[Any], bytes]:
    """A call for MemcachedStore._call that asks one server of a client its version."""
    return lambda _client: server.version()


def _warn_about(client: MemcacheClient) -> None:
    """Log the settings of a client the app built that hurt sessions."""
    if isinstance(client, HashClient) and client.ignore_exc:
        logger.warning("SESSION_MEMCACHED HashClient has ignore_exc=True: an outage then "
                       "looks like missing sessions and logs users out instead of "
                       "answering 503")
    for server in _server_clients(client):
        if not server.no_delay:
            logger.warning(
                "SESSION_MEMCACHED client for %s has no_delay=False: each session write "
                "waits on Nagle's algorithm (tens of ms or more); create it with "
                "no_delay=True", server.server)
        if server.timeout is None or server.connect_timeout is None:
            logger.warning(
                "SESSION_MEMCACHED client for %s has no timeout: a hung server blocks "
                "requests for minutes; pass connect_timeout= and timeout=", server.server)
        if server.ignore_exc:
            logger.warning(
                "SESSION_MEMCACHED client for %s has ignore_exc=True: an outage then looks "
                "like missing sessions and logs users out instead of answering 503",
                server.server)


def store_from_settings(settings: Settings, codec: ValueCodec) -> MemcachedStore:
    """SESSION_MEMCACHED (client or addresses) and SESSION_MEMCACHED_TIMEOUT."""
    config = settings.config
    timeout = seconds(config.get("SESSION_MEMCACHED_TIMEOUT", DEFAULT_TIMEOUT),
                      "SESSION_MEMCACHED_TIMEOUT")
    client = client_from_setting(config.get("SESSION_MEMCACHED"), timeout)
    cap = config.get("SESSION_MEMCACHED_MAX_SESSIONS_PER_USER", MAX_SESSIONS_PER_USER)
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
        raise ConfigurationError("SESSION_MEMCACHED_MAX_SESSIONS_PER_USER must be a whole "
                                 f"number of at least 1, not {cap!r}")
    return MemcachedStore(client, codec=codec, key_prefix=settings.key_prefix,
                          keep_expired=settings.keep_expired, max_sessions_per_user=cap)


# -- the store -----------------------------------------------------------------------


class _Index(msgspec.Struct):
    """A user's index: session keys, oldest first, and the additions since it was last
    checked in full. (Older versions stored the bare list; it still reads.)"""

    k: list[str]
    n: int = 0


def memcached_key(key: str, room: int = MAX_KEY_LENGTH) -> str:
    """``key`` if memcached accepts it within ``room`` bytes, else a fixed-length hash.

    The core's keys are a prefix plus a hex digest; a prefix with spaces, control or
    non-ASCII characters, or a very long one, must still give a valid key.
    """
    raw = key.encode("utf-8")
    if len(raw) <= room and _PLAIN_KEY.fullmatch(raw):
        return key
    return _HASHED_KEY + hashlib.sha256(raw).hexdigest()


def _exptime(expires_at: float, now: float) -> int:
    """memcached's expiry for a record: seconds from now, or a unix time past 30 days."""
    ttl = math.ceil(expires_at - now)
    if ttl <= 0:
        return -1  # already expired: the server drops it at once
    if ttl > MAX_RELATIVE_TTL:
        return math.ceil(expires_at)
    return ttl


@dataclass
class _Seen:
    """A record as a request read it, with its CAS token: the ``version`` of what
    ``load`` returns, so that request's write or refresh is one ``cas``, no re-read."""

    key: str
    cas: bytes
    record: SessionRecord


class MemcachedStore(SessionStore):
    """Session records in memcached (one or several servers), written with CAS."""

    name = "memcached"

    def __init__(self, client: MemcacheClient, *, codec: ValueCodec | None = None,
                 key_prefix: str = "session:", keep_expired: float = 0.0,
                 max_sessions_per_user: int = MAX_SESSIONS_PER_USER) -> None:
        if (not isinstance(max_sessions_per_user, int) or isinstance(max_sessions_per_user, bool)
                or max_sessions_per_user < 1):
            raise ConfigurationError("the memcached store's max_sessions_per_user must be a "
                                     f"positive whole number, not {max_sessions_per_user!r}")
        #: a login past this many sessions of one user revokes the oldest (Spring
        #: Session's maximumSessions): the index must fit in one memcached item
        self.max_sessions_per_user = max_sessions_per_user
        self.client = client
        #: seconds memcached keeps a record past its expiry (SESSION_KEEP_EXPIRED), so that
        #: a user coming back meanwhile is told apart from an unknown id (session_expired)
        self.keep_expired = keep_expired
        self.codec = codec or ValueCodec()
        self.records = RecordCodec(self.codec)
        self.key_prefix = key_prefix
        self._index_encode = self.codec.module.Encoder().encode
        self._index_decoder = self.codec.module.Decoder(list[str] | _Index).decode
        # HashClient skips a server it marked as failing and returns a default instead of
        # raising: those answers must be told apart from "not found".
        self._hashed = isinstance(client, HashClient)
        self._room = MAX_KEY_LENGTH - len(client.key_prefix)
        if self._room < HASHED_KEY_LENGTH:
            raise ConfigurationError("the memcached client's key_prefix is too long: keys "
                                     f"are limited to {MAX_KEY_LENGTH} bytes")
        self._shared_connection = isinstance(client, Client) or (
            isinstance(client, HashClient) and not client.use_pooling)
        self._lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        self._pid = -1
        self._fresh_process()

    # -- calls -------------------------------------------------------------------------
    def _fresh_process(self) -> None:
        self._pid = os.getpid()
        # One socket cannot carry two requests at once: serialise calls on it.
        self._lock = threading.Lock() if self._shared_connection else contextlib.nullcontext()

    def _call(self, op: Callable[[Any], T], size: int = 0) -> T:
        if os.getpid() != self._pid:
            # Forked (a pre-fork server): sockets opened by the parent must not be shared.
            with contextlib.suppress(Exception):
                self.client.close()
            self._fresh_process()
        with self._lock:
            for attempt in (1, 2):
                try:
                    return op(self.client)
                except _STALE_CONNECTION as exc:
                    if attempt == 2:
                        raise StoreUnavailable(self.name, exc) from exc
                except MemcacheClientError:
                    raise  # a malformed request is a bug here, not an outage
                except MemcacheServerError as exc:
                    if "too large" in str(exc):
                        raise MemcachedItemTooLarge(size) from exc
                    raise StoreUnavailable(self.name, exc) from exc
                except _UNREACHABLE as exc:
                    raise StoreUnavailable(self.name, exc) from exc
        raise AssertionError("unreachable")

    def _mkey(self, key: str) -> str:
        return memcached_key(key, self._room)

    def _gets(self, mkey: str) -> tuple[bytes | None, bytes | None]:
        """(blob, cas) or (None, None); raises when a HashClient skipped the server."""
        result = self._call(lambda c: c.gets(mkey))
        if result is None:
            raise StoreUnavailable(self.name, "its server is marked as failing")
        blob, cas = result
        return blob, cas

    def _read(self, key: str) -> _Seen | None:
        """The record under ``key`` with its CAS token, None when there is none;
        :class:`UndecodableRecord` when the item is not a record this store can read."""
        blob, cas = self._gets(self._mkey(key))
        if blob is None or cas is None:
            return None
        return _Seen(key, cas, self._decode(blob))

    def _decode(self, blob: Any) -> SessionRecord:
        try:
            return self.records.loads(blob)
        except UndecodableRecord as exc:
            # Damaged, another SESSION_SERIALIZATION_FORMAT, or a client serde's bytes.
            raise UndecodableRecord(self.name, exc.reason) from exc

    def _cas(self, key: str, record: SessionRecord, cas: bytes) -> bool | None:
        """True: written; False: changed since read (or server skipped); None: gone."""
        blob = self.records.dumps(record)
        expire = _exptime(record.expires_at + self.keep_expired, time.time())
        mkey = self._mkey(key)
        result: bool | None = self._call(
            lambda c: c.cas(mkey, blob, cas, expire=expire, noreply=False), len(blob))
        return result

    def _rewrite(self, key: str, change: Callable[[SessionRecord], SessionRecord],
                 live_at: float | None = None, version: Any = None) -> SessionRecord | None:
        """Apply ``change`` with a CAS loop; the record it changed, or None when gone
        (or, given ``live_at``, expired then). ``version``: the record as this request
        loaded it, tried first without a re-read when it is ``key``'s."""
        seen = version if isinstance(version, _Seen) and version.key == key else None
        for attempt in range(MAX_CAS_TRIES):
            if seen is None:
                try:
                    seen = self._read(key)
                except UndecodableRecord:
                    return None  # as good as gone: its next load removes it
                if seen is None:
                    return None
            if live_at is not None and seen.record.expires_at <= live_at:
                return None  # expired, kept for SESSION_KEEP_EXPIRED only: never revived
            written = self._cas(key, change(seen.record), seen.cas)
            if written is None:
                return None
            if written:
                return seen.record
            seen = None
            # Spread out writers of one session that keep colliding.
            time.sleep(random.uniform(0, 0.0005 * attempt))
        raise StoreUnavailable(
            self.name, f"{MAX_CAS_TRIES} conflicting concurrent writes to one session")

    # -- interface -----------------------------------------------------------------------
    def load(self, key: str, now: float) -> SessionRecord | None:
        seen = self._read(key)
        if seen is None or seen.record.expires_at <= now:
            return None
        record = seen.record
        # The core edits the values it is given; the copy in the version stays as read.
        # (Built directly: dataclasses.replace costs several times more per read.)
        return SessionRecord(dict(record.values), record.created_at, record.accessed_at,
                             record.expires_at, record.permanent, record.user_id, seen)

    def create(self, key: str, record: SessionRecord) -> None:
        if record.user_id is not None:
            # Index first: a crash in between leaves a stale entry, never an unlisted session.
            self._index_change(record.user_id, add=key)
        blob = self.records.dumps(record)
        expire = _exptime(record.expires_at + self.keep_expired, time.time())
        mkey = self._mkey(key)
        stored = self._call(lambda c: c.set(mkey, blob, expire=expire, noreply=False),
                            len(blob))
        if not stored:
            raise StoreUnavailable(self.name, "the record was not stored")

    def add(self, key: str, record: SessionRecord) -> bool:
        if record.user_id is not None:
            self._index_change(record.user_id, add=key)  # first, as in create()
        blob = self.records.dumps(record)
        expire = _exptime(record.expires_at + self.keep_expired, time.time())
        mkey = self._mkey(key)
        for _ in range(MAX_CAS_TRIES):
            if self._call(lambda c: c.add(mkey, blob, expire=expire, noreply=False),
                          len(blob)):
                return True
            # Taken; an expired record (kept for SESSION_KEEP_EXPIRED) or a damaged item
            # counts as absent and is replaced, unless it changed meanwhile.
            held, cas = self._gets(mkey)
            if held is None or cas is None:
                continue  # gone meanwhile: add again
            try:
                if self.records.loads(held).expires_at > record.accessed_at:
                    return False
            except UndecodableRecord:
                pass
            if self._cas(key, record, cas):
                return True
        raise StoreUnavailable(
            self.name, f"{MAX_CAS_TRIES} conflicting concurrent writes to one session")

    def update(self, key: str, update: SessionUpdate) -> bool:
        new_user = update.user_id if update.user_id_changed else None
        if new_user is not None:
            self._index_change(new_user, add=key)

        def change(current: SessionRecord) -> SessionRecord:
            return current.updated(update)

        before = self._rewrite(key, change, version=update.version)
        if before is None:
            return False
        old_user = before.user_id
        if update.user_id_changed and old_user is not None and old_user != update.user_id:
            self._index_change(old_user, drop={key})
        return True

    def touch(self, key: str, accessed_at: float, expires_at: float, *,
              version: Any = None) -> bool:
        changed = self._rewrite(key, lambda current: replace(
            current, accessed_at=accessed_at, expires_at=expires_at), live_at=accessed_at,
            version=version)
        return changed is not None

    def delete(self, key: str) -> None:
        mkey = self._mkey(key)
        deleted = self._call(lambda c: c.delete(mkey, noreply=False))
        if not deleted and self._hashed and self._read(key) is not None:
            # HashClient skipped a failing server: a logout must not pass silently.
            raise StoreUnavailable(self.name, "the record could not be deleted")

    def keys_for_user(self, user_id: str, now: float) -> list[str]:
        blob, _cas = self._gets(self._index_key(user_id))
        keys = self._index_decode(blob).k
        records = self._records_of(user_id, keys)
        if len(records) < len(keys):
            # Sessions that ended (or changed hands) leave the index; one try is enough.
            self._index_change(user_id, drop=set(keys) - set(records), best_effort=True)
        return [k for k, record in records.items() if record.expires_at > now]

    def check(self) -> None:
        servers = _server_clients(self.client)
        if not servers:
            raise StoreUnavailable(self.name, "the client has no servers")
        for server in servers:
            try:
                self._call(_asks_version(server))
            except StoreUnavailable as exc:
                raise StoreUnavailable(self.name, f"{server.server}: {exc.reason}") from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()

    # -- the per-user index ----------------------------------------------------------------
    def _index_key(self, user_id: str) -> str:
        digest = hashlib.sha256(user_id.encode("utf-8")).hexdigest()
        return self._mkey(f"{self.key_prefix}user:{digest}")

    def _index_decode(self, blob: bytes | None) -> _Index:
        if blob is None:
            return _Index([])
        try:
            index = self._index_decoder(blob)
        except (msgspec.DecodeError, TypeError):
            return _Index([])
        if isinstance(index, list):  # the bare list of older versions: never checked
            return _Index(index, len(index))
        return index

    def _index_limit(self, key: str) -> int:
        """The most keys an index keeps: the cap, or fewer if its keys are very long."""
        return max(1, min(self.max_sessions_per_user,
                          INDEX_MAX_BYTES // (len(key.encode("utf-8")) + 8)))

    def _index_change(self, user_id: str, *, add: str | None = None,
                      drop: Collection[str] = (), best_effort: bool = False) -> None:
        """Add a key to, or drop keys from, a user's index, with a CAS loop.

        An addition checks the whole index for sessions that are gone once per
        INDEX_PRUNE_AT additions, or half its length if more (a bounded average cost),
        and past ``max_sessions_per_user`` revokes the user's oldest sessions (checking
        first, for a cap up to EXACT_CAP_UP_TO, which entries are still sessions).
        """
        ikey = self._index_key(user_id)
        for _ in range(1 if best_effort else MAX_CAS_TRIES):
            blob, cas = self._gets(ikey)
            old = self._index_decode(blob)
            keys = [k for k in old.k if k not in drop]
            added = old.n
            evicted: list[str] = []
            checked: Collection[str] = ()
            if add is not None and add not in keys:
                limit = self._index_limit(add)
                due = added + 1 >= max(INDEX_PRUNE_AT, len(keys) // 2)
                # A small cap is enforced on live sessions only: checked when reached.
                if due or (len(keys) >= limit and limit <= EXACT_CAP_UP_TO):
                    now = time.time()
                    checked = {k: None for k, record in self._records_of(user_id, keys).items()
                               if record.expires_at > now}.keys()
                    keys, added = list(checked), 0
                keys.append(add)
                added += 1
                excess = len(keys) - limit
                if excess > 0:
                    evicted, keys = keys[:excess], keys[excess:]
            new = _Index(keys, added)
            if new == old:
                return
            # Revoked before the index forgets them: a session never outlives its entry.
            self._revoke(user_id, evicted, checked)
            if self._write_index(ikey, self._index_encode(new), cas):
                return
        if not best_effort:
            raise StoreUnavailable(
                self.name, f"{MAX_CAS_TRIES} conflicting concurrent writes to a user index")

    def _revoke(self, user_id: str, keys: list[str], checked: Collection[str]) -> None:
        """End those of ``keys`` that are still sessions of ``user_id`` (over the cap);
        ``checked`` keys were just found to be."""
        if not keys:
            return
        unsure = [k for k in keys if k not in checked]
        mkeys = [self._mkey(k) for k in keys if k in checked]
        mkeys += [self._mkey(k) for k in self._records_of(user_id, unsure)]
        if mkeys:
            self._call(lambda c: c.delete_many(mkeys, noreply=False))
            logger.info("a user had more than %d sessions: the %d oldest were revoked",
                        self.max_sessions_per_user, len(mkeys))

    def _write_index(self, ikey: str, data: bytes, cas: bytes | None) -> bool:
        """Store an index (no TTL: see the module doc) unless it changed since read."""
        if cas is None:
            added = self._call(lambda c: c.add(ikey, data, expire=0, noreply=False), len(data))
            return bool(added)
        swapped = self._call(lambda c: c.cas(ikey, data, cas, expire=0, noreply=False),
                             len(data))
        return bool(swapped)

    def _records_of(self, user_id: str, keys: Iterable[str]) -> dict[str, SessionRecord]:
        """Those of ``keys`` still stored and bound to ``user_id``, in index order."""
        by_mkey = {self._mkey(k): k for k in keys}
        found: dict[str, SessionRecord] = {}
        for mkey, blob in self._fetch_many(list(by_mkey)):
            try:
                record = self._decode(blob)
            except UndecodableRecord:
                continue  # not listed; its next load removes it
            if record.user_id == user_id:
                found[by_mkey[mkey]] = record
        return {k: found[k] for k in by_mkey.values() if k in found}

    def _fetch_many(self, mkeys: list[str]) -> Iterator[tuple[str, bytes]]:
        if not mkeys:
            return
        if self._hashed:
            # HashClient.get_many leaves out a failing server's keys without raising.
            for mkey in mkeys:
                blob, _cas = self._gets(mkey)
                if blob is not None:
                    yield mkey, blob
            return
        yield from self._call(lambda c: c.get_many(mkeys)).items()
