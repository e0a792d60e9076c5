"""Sessions in Redis: standalone, behind Sentinel, or on a Redis Cluster.

Each session is one HASH under ``SESSION_KEY_PREFIX + sha256(id)``: a field ``v:<name>``
per session key holding that value's encoded bytes, plus the metadata fields
``created``, ``accessed``, ``expires``, ``permanent`` and ``user``. Redis expires the hash
by itself (``PEXPIREAT``), so there is nothing to clean up.

Round trips: ``load`` is one ``HGETALL``; ``update`` is one ``EVALSHA`` whose script
writes only the changed fields and never recreates a hash that is gone (a logout wins
over a slow concurrent request); ``create`` is one ``MULTI`` pipeline; ``add`` (create
unless a live session holds the key) and ``touch`` are one ``EVALSHA`` each (on a
Cluster, two for a session bound to a user); ``delete`` is one ``UNLINK``. A hash that
cannot be read as a session (metadata missing or damaged, another type under the key)
makes ``load`` raise :class:`UndecodableRecord`.

A session is a single key, so on a Cluster it always lives in one slot. The per-user
index (a SET ``<prefix>user:<user id>`` of session keys) lives in another slot: on a
Cluster it is written by a separate call right after the session's own write. Every
write that extends a bound session extends its index too, never shortening it, so the
index expires with the last of its sessions.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import (
    ClusterError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    TryAgainError,
)
from redis.retry import Retry
from redis.sentinel import Sentinel
from redis.typing import EncodableT

from ..errors import ConfigurationError, StoreUnavailable, UndecodableRecord
from ..serialization import ValueCodec
from ..settings import Settings, seconds
from .base import SessionRecord, SessionStore, SessionUpdate
from .redis_async import AsyncDirectCommands
from .redis_cluster_async import AsyncClusterCommands
from .redis_direct import DirectCommands
from .redis_sentinel_async import AsyncSentinelCommands

#: Flask-Session's default when SESSION_REDIS is unset.
DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_TIMEOUT = 2.0
URL_SCHEMES = ("redis://", "rediss://", "unix://")

VALUE_PREFIX = b"v:"
CREATED, ACCESSED, EXPIRES, PERMANENT, USER = "created", "accessed", "expires", "permanent", "user"
_CREATED, _ACCESSED, _EXPIRES, _PERMANENT, _USER = (
    name.encode() for name in (CREATED, ACCESSED, EXPIRES, PERMANENT, USER))

# Errors that mean "the server cannot serve us right now" rather than a bug: the
# request gets a 503 and the next one tries again.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,  # also refused/reset connections, failed auth, busy loading
    redis.TimeoutError,
    ClusterError,  # CLUSTERDOWN, MASTERDOWN
    TryAgainError,  # a slot is being migrated
    RedisClusterException,  # no reachable node, slot not covered
    ReadOnlyError,  # writing to a replica during a failover
    OutOfMemoryError,  # maxmemory reached without an eviction policy
)

# Make a user index SET live at least until ``at`` (unix ms) and never shorten it: it
# lists other sessions that may live longer. A new SET has no expiry (PTTL -1), which
# PEXPIREAT ... GT would leave alone, and GT needs Redis 7: compare with TIME instead.
# A script calling TIME before writing needs replicate_commands() on Redis < 5.
_EXTEND_INDEX = """
if redis.replicate_commands then
  redis.replicate_commands()
end
local function extend_index(index, at)
  local ttl = redis.call('PTTL', index)
  if ttl == -2 then
    return
  end
  if ttl >= 0 then
    local now = redis.call('TIME')
    local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    if now_ms + ttl >= tonumber(at) then
      return
    end
  end
  redis.call('PEXPIREAT', index, at)
end
"""

# Apply a delta to a session hash in one step; never recreate a hash that is gone.
# KEYS[1]: the session hash; KEYS[2] (optional): its user's index SET, extended to the
# session's expiry. ARGV[1]: expiry (unix ms); ARGV[2]: '1' drops every stored value
# first (clear()); ARGV[3]: '1' adds the session to KEYS[2] (a login); ARGV[4]: how many
# field names to delete follow; then those names; then the field/value pairs to set
# (changed values and metadata).
# Returns 0 when the hash is gone, else the size of the user index after an add, else 1.
UPDATE_SCRIPT = _EXTEND_INDEX + """
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then
  return 0
end
-- unpack() is limited to a few thousand results: work in batches
local BATCH = 1000
local function hdel(names, first, last)
  for i = first, last, BATCH do
    redis.call('HDEL', key, unpack(names, i, math.min(i + BATCH - 1, last)))
  end
end
if ARGV[2] == '1' then
  local values = {}
  for _, field in ipairs(redis.call('HKEYS', key)) do
    if string.sub(field, 1, 2) == 'v:' then
      values[#values + 1] = field
    end
  end
  hdel(values, 1, #values)
end
local deleted = tonumber(ARGV[4])
hdel(ARGV, 5, 4 + deleted)
for i = 5 + deleted, #ARGV, 2 * BATCH do
  redis.call('HSET', key, unpack(ARGV, i, math.min(i + 2 * BATCH - 1, #ARGV)))
end
redis.call('PEXPIREAT', key, ARGV[1])
if KEYS[2] then
  if ARGV[3] == '1' then
    redis.call('SADD', KEYS[2], key)
  end
  extend_index(KEYS[2], ARGV[1])
  if ARGV[3] == '1' then
    return redis.call('SCARD', KEYS[2])
  end
end
return 1
"""

# Extend a session's life without rewriting its data; nothing happens when it is gone,
# or expired at accessed_at (kept for SESSION_KEEP_EXPIRED only: never revived).
# KEYS[1]: the session hash; KEYS[2] (optional, single server): the index of the user it
# was loaded with. ARGV: expiry (unix ms), accessed_at, expires_at (seconds), and with
# KEYS[2] that user. Returns 0 when the hash is gone; else 1 when no index needs
# extending any more, or the session's user, whose index the caller must extend.
TOUCH_SCRIPT = _EXTEND_INDEX + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local meta = redis.call('HMGET', KEYS[1], 'expires', 'user')
local expires = tonumber(meta[1])
if not expires or expires <= tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], 'accessed', ARGV[2], 'expires', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
local user = meta[2]
if not user then
  return 1
end
if KEYS[2] and user == ARGV[4] then
  extend_index(KEYS[2], ARGV[1])
  return 1
end
return user
"""

# Store a new session hash unless a live one is under the key (claiming a key once).
# An expired hash (kept for SESSION_KEEP_EXPIRED) or a damaged one counts as absent and
# is replaced. KEYS[1]: the session hash; KEYS[2] (optional): its user's index SET.
# ARGV[1]: expiry (unix ms); ARGV[2]: the new record's accessed_at (a live hash expires
# after it); then the field/value pairs. Returns 0 when a live hash is there; else the
# size of the user index after the add, or 1 without one.
ADD_SCRIPT = _EXTEND_INDEX + """
local key = KEYS[1]
local kind = redis.call('TYPE', key)['ok']
if kind == 'hash' then
  local expires = tonumber(redis.call('HGET', key, 'expires'))
  if expires and expires > tonumber(ARGV[2]) then
    return 0
  end
end
if kind ~= 'none' then
  redis.call('DEL', key)
end
local BATCH = 1000
for i = 3, #ARGV, 2 * BATCH do
  redis.call('HSET', key, unpack(ARGV, i, math.min(i + 2 * BATCH - 1, #ARGV)))
end
redis.call('PEXPIREAT', key, ARGV[1])
if KEYS[2] then
  redis.call('SADD', KEYS[2], key)
  extend_index(KEYS[2], ARGV[1])
  return redis.call('SCARD', KEYS[2])
end
return 1
"""

# Add a session to its user's index (or only extend the index when ARGV[2] is absent).
# KEYS[1]: the index SET; ARGV[1]: the session's expiry (unix ms); ARGV[2] (optional):
# the session key. Returns the index size.
INDEX_SCRIPT = _EXTEND_INDEX + """
if ARGV[2] then
  redis.call('SADD', KEYS[1], ARGV[2])
end
extend_index(KEYS[1], ARGV[1])
return redis.call('SCARD', KEYS[1])
"""

RedisClient = redis.Redis | RedisCluster
#: what sends the hot commands from an asyncio loop
AsyncCommands = AsyncDirectCommands | AsyncClusterCommands


def _async_commands(client: RedisClient) -> AsyncCommands | None:
    """What sends the hot calls from an asyncio loop on connections made like
    ``client``'s, or None when they cannot be (every call then runs in threads)."""
    if isinstance(client, RedisCluster):
        return AsyncClusterCommands.mirroring(client)
    return (AsyncSentinelCommands.mirroring_sentinel(client)
            or AsyncDirectCommands.mirroring(client))


def _unix_ms(timestamp: float) -> int:
    return math.ceil(timestamp * 1000)


def _number(value: float) -> str:
    return repr(float(value))  # repr round-trips a float exactly


#: the operations sent from an asyncio loop, and their coroutine methods
_NATIVE = {"load": "_load_async", "update": "_update_async", "touch": "_touch_async"}


class RedisStore(SessionStore):
    """A :class:`SessionStore` on a ``redis.Redis`` or ``redis.cluster.RedisCluster`` client."""

    name = "redis"

    def __init__(
        self,
        client: RedisClient,
        *,
        key_prefix: str = "session:",
        owns_client: bool = False,
        index_prune_from: int = 32,
        keep_expired: float = 0.0,
    ) -> None:
        _require_bytes_responses(client)
        self.client = client
        self.key_prefix = key_prefix
        self.cluster = isinstance(client, RedisCluster)
        #: close the client with the store (it was built from the config, not passed in)
        self.owns_client = owns_client
        #: a user index is swept of dead entries when it reaches this size, then at
        #: every doubling, so logins stay cheap however many stale entries pile up
        self.index_prune_from = index_prune_from
        #: seconds Redis keeps a record past its expiry (SESSION_KEEP_EXPIRED), so that a
        #: user coming back meanwhile is told apart from an unknown id (session_expired)
        self.keep_expired = keep_expired
        self._update = client.register_script(UPDATE_SCRIPT)
        self._add = client.register_script(ADD_SCRIPT)
        self._touch = client.register_script(TOUCH_SCRIPT)
        self._index = client.register_script(INDEX_SCRIPT)
        #: the hot path on a single server (or Sentinel master); a Cluster client routes
        #: each key to its node itself
        self._direct = None if self.cluster else DirectCommands(cast("redis.Redis", client))
        #: the hot calls from an asyncio loop (ASGI), when the client can be mirrored
        self._direct_async = _async_commands(client)
        #: the coroutines async_operation offers, found once (a subclass that changed
        #: a method keeps it in threads)
        self._natives: dict[str, Callable[..., Awaitable[Any]]] = {} if (
            self._direct_async is None) else {
            method: getattr(self, native) for method, native in _NATIVE.items()
            if getattr(type(self), method) is getattr(RedisStore, method)}

    # -- interface -------------------------------------------------------------------
    def load(self, key: str, now: float) -> SessionRecord | None:
        try:  # (inline, not _available(): this runs on every request that reads)
            # The client is known not to decode responses (checked at start-up).
            reply = self._command("HGETALL", key)
        except UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(self.name, exc) from exc
        except redis.ResponseError as exc:
            raise self._load_error(exc) from exc
        return self._loaded(key, reply, now)

    async def _load_async(self, key: str, now: float) -> SessionRecord | None:
        """``load`` from the running asyncio loop (redis_async.py)."""
        assert self._direct_async is not None
        try:
            reply = await self._direct_async("HGETALL", key)
        except UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(self.name, exc) from exc
        except redis.ResponseError as exc:
            raise self._load_error(exc) from exc
        return self._loaded(key, reply, now)

    def _load_error(self, exc: redis.ResponseError) -> Exception:
        if str(exc).startswith("WRONGTYPE"):  # something else took the key
            return UndecodableRecord(self.name, exc)
        return exc

    @staticmethod
    def _loaded(key: str, reply: Any, now: float) -> SessionRecord | None:
        if not reply:
            return None
        record = _record_from_reply(reply)
        if record.expires_at <= now:
            return None
        # What this request's refresh needs: the user to extend the index of (see touch).
        record.version = (key, record.user_id)
        return record

    def async_operation(self, method: str) -> Callable[..., Awaitable[Any]] | None:
        """The read, the delta update and the refresh, natively on an asyncio loop (a
        subclass that changed one of them keeps it in threads); logins, creations and
        deletions run in threads."""
        native = self._natives.get(method)
        if native is None:
            return None
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # trio: redis.asyncio needs asyncio
            return None
        return native

    def create(self, key: str, record: SessionRecord) -> None:
        fields = _fields(record)
        user = record.user_id
        expiry = _unix_ms(record.expires_at + self.keep_expired)
        with self._available():
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(key)  # a create replaces whatever the key held
            pipe.hset(key, mapping=fields)
            pipe.pexpireat(key, expiry)
            if user is not None and not self.cluster:
                # EVAL, not EVALSHA: a NOSCRIPT inside MULTI would not stop the rest.
                pipe.eval(INDEX_SCRIPT, 1, self._index_key(user), expiry, key)
            results = pipe.execute()
            if user is not None:
                size = (self._index_write(user, expiry, key) if self.cluster
                        else int(results[-1]))
                self._maybe_prune(user, size)

    def add(self, key: str, record: SessionRecord) -> bool:
        user = record.user_id
        expiry = _unix_ms(record.expires_at + self.keep_expired)
        keys: list[EncodableT] = [key]
        if user is not None and not self.cluster:
            keys.append(self._index_key(user))
        args: list[EncodableT] = [expiry, _number(record.accessed_at)]
        for field, value in _fields(record).items():
            args += (field, value)
        with self._available():
            outcome = int(self._run(self._add, keys, args))
            if outcome and user is not None:
                size = self._index_write(user, expiry, key) if self.cluster else outcome
                self._maybe_prune(user, size)
        return outcome != 0

    def update(self, key: str, update: SessionUpdate) -> bool:
        keys, args, expiry = self._update_call(key, update)
        user = update.user_id
        added = update.user_id_changed and user is not None
        try:  # (inline, not _available(): this runs on every request that writes)
            outcome = int(self._run(self._update, keys, args))
            if outcome and user is not None:
                if self.cluster:
                    size = self._index_write(user, expiry, key if added else None)
                else:
                    size = outcome
                if added:
                    self._maybe_prune(user, size)
        except UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(self.name, exc) from exc
        return outcome != 0

    async def _update_async(self, key: str, update: SessionUpdate) -> bool:
        """``update`` from the running asyncio loop."""
        keys, args, expiry = self._update_call(key, update)
        outcome = int(await self._script_async(self._update, keys, args))
        user = update.user_id
        added = update.user_id_changed and user is not None
        if outcome and user is not None:
            size = outcome
            if self.cluster:  # the index is in another slot: a call of its own
                index_args: list[EncodableT] = [expiry, key] if added else [expiry]
                size = int(await self._script_async(self._index, [self._index_key(user)],
                                                    index_args))
            if added and self._prune_due(size):
                await asyncio.to_thread(self._maybe_prune_available, user, size)  # rare
        return outcome != 0

    def _update_call(self, key: str,
                     update: SessionUpdate) -> tuple[list[EncodableT], list[EncodableT], int]:
        """The update script's keys and arguments, and the expiry (unix ms) it sets."""
        deleted: list[EncodableT] = [VALUE_PREFIX + name.encode()
                                     for name in update.deleted_keys]
        pairs: list[EncodableT] = []
        for name, data in update.set_values.items():
            pairs += (VALUE_PREFIX + name.encode(), data)
        for field, value in _metadata(update.accessed_at, update.expires_at,
                                      update.permanent).items():
            pairs += (field, value)
        # The session's user after this write: its index must outlive the new expiry.
        user = update.user_id
        added = update.user_id_changed and user is not None
        if update.user_id_changed:
            if user is None:
                deleted.append(USER)  # logged out, session kept
            else:
                pairs += (USER, user)
        keys: list[EncodableT] = [key]
        if user is not None and not self.cluster:
            keys.append(self._index_key(user))
        expiry = _unix_ms(update.expires_at + self.keep_expired)
        args: list[EncodableT] = [expiry, "1" if update.replace else "0", "1" if added else "0",
                                  len(deleted), *deleted, *pairs]
        return keys, args, expiry

    def touch(self, key: str, accessed_at: float, expires_at: float, *,
              version: Any = None) -> bool:
        keys, args, expiry = self._touch_call(key, accessed_at, expires_at, version)
        with self._available():
            outcome = self._run(self._touch, keys, args)
            if isinstance(outcome, bytes):  # bound to a user whose index is not extended yet
                self._index_write(outcome.decode(), expiry)
        return outcome != 0

    async def _touch_async(self, key: str, accessed_at: float, expires_at: float, *,
                           version: Any = None) -> bool:
        """``touch`` from the running asyncio loop."""
        keys, args, expiry = self._touch_call(key, accessed_at, expires_at, version)
        outcome = await self._script_async(self._touch, keys, args)
        if isinstance(outcome, bytes):
            await self._script_async(self._index, [self._index_key(outcome.decode())], [expiry])
        return outcome != 0

    def _touch_call(self, key: str, accessed_at: float, expires_at: float,
                    version: Any) -> tuple[list[EncodableT], list[EncodableT], int]:
        expiry = _unix_ms(expires_at + self.keep_expired)
        keys: list[EncodableT] = [key]
        args: list[EncodableT] = [expiry, _number(accessed_at), _number(expires_at)]
        # Loaded with a user: extend that user's index in the same script (single
        # server; the script checks the hash still names that user).
        loaded_key, user = version if isinstance(version, tuple) else (None, None)
        if loaded_key == key and user is not None and not self.cluster:
            keys.append(self._index_key(user))
            args.append(user)
        return keys, args, expiry

    async def _script_async(self, script: Script, keys: list[EncodableT],
                            args: list[EncodableT]) -> Any:
        assert self._direct_async is not None
        try:
            return await self._direct_async.run_script(script.sha, script.script, keys, args)
        except UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(self.name, exc) from exc

    def delete(self, key: str) -> None:
        with self._available():
            self._command("UNLINK", key)

    def keys_for_user(self, user_id: str, now: float) -> list[str]:
        with self._available():
            return self._live_sessions_of(user_id, now)

    def check(self) -> None:
        with self._available():
            self.client.ping()

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        if self.owns_client:
            self.client.close()

    def _command(self, *args: EncodableT) -> Any:
        """One command: on the store's own connections, or through the Cluster client,
        which routes it by its key (HGETALL then answers a dict, not a flat list)."""
        if self._direct is not None:
            return self._direct(*args)
        return self.client.execute_command(*args)

    def _run(self, script: Script, keys: list[EncodableT], args: list[EncodableT]) -> Any:
        if self._direct is not None:
            return self._direct.run_script(script.sha, script.script, keys, args)
        return script(keys=keys, args=args)

    # -- the per-user index ----------------------------------------------------------
    def _index_key(self, user_id: str) -> str:
        return f"{self.key_prefix}user:{user_id}"

    def _index_write(self, user_id: str, expiry: int, key: str | None = None) -> int:
        """Extend a user's index to a session's expiry (unix ms), adding the session when
        ``key`` is given, in a call of its own (Cluster: another slot); its size."""
        args: list[EncodableT] = [expiry] if key is None else [expiry, key]
        return int(self._run(self._index, [self._index_key(user_id)], args))

    def _prune_due(self, size: int) -> bool:
        return size >= self.index_prune_from and size & (size - 1) == 0  # a power of two

    def _maybe_prune(self, user_id: str, size: int) -> None:
        if self._prune_due(size):
            self._live_sessions_of(user_id, now=0.0)  # run for its sweep; the list is unused

    def _maybe_prune_available(self, user_id: str, size: int) -> None:
        with self._available():
            self._maybe_prune(user_id, size)

    def _live_sessions_of(self, user_id: str, now: float) -> list[str]:
        """The user's live session keys; index entries whose hash is gone are removed.

        An entry whose hash now belongs to another user is skipped but kept: only a
        vanished hash can never come back, so only those go, and no race with a
        concurrent login can drop a live session from the index.
        """
        index = self._index_key(user_id)
        members = sorted(cast("set[bytes]", self.client.smembers(index)))
        if not members:
            return []
        pipe = self.client.pipeline(transaction=False)
        for member in members:
            pipe.hmget(member, USER, EXPIRES)
        owner = user_id.encode()
        live: list[str] = []
        gone: list[bytes] = []
        # raise_on_error=False: a key that now holds another type is skipped, not fatal
        for member, reply in zip(members, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(reply, Exception):
                continue
            user, expires = reply
            if user is None and expires is None:
                gone.append(member)
            elif user == owner and _expires_after(expires, now):
                live.append(member.decode())
        if gone:
            self.client.srem(index, *gone)
        return live

    # -- errors ----------------------------------------------------------------------
    @contextmanager
    def _available(self) -> Iterator[None]:
        try:
            yield
        except UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(self.name, exc) from exc


def _fields(record: SessionRecord) -> dict[EncodableT, EncodableT]:
    """Every field of a new session hash: its values and its metadata."""
    fields: dict[EncodableT, EncodableT] = {
        VALUE_PREFIX + name.encode(): data for name, data in record.values.items()
    }
    fields.update(_metadata(record.accessed_at, record.expires_at, record.permanent))
    fields[CREATED] = _number(record.created_at)
    if record.user_id is not None:
        fields[USER] = record.user_id
    return fields


def _metadata(accessed_at: float, expires_at: float, permanent: bool) -> dict[str, str]:
    return {
        ACCESSED: _number(accessed_at),
        EXPIRES: _number(expires_at),
        PERMANENT: "1" if permanent else "0",
    }


def _record_from_reply(reply: Any) -> SessionRecord:
    """The record an HGETALL reply holds (a RESP2 flat field/value list, a RESP3 map or
    the dict redis-py makes of it); :class:`UndecodableRecord` when it is not one."""
    if isinstance(reply, dict):
        pairs: Iterable[tuple[bytes, bytes]] = reply.items()
    else:
        flat = iter(reply)
        pairs = zip(flat, flat, strict=True)
    values: dict[str, bytes] = {}
    meta: dict[bytes, bytes] = {}
    try:
        for field, data in pairs:
            if field[:2] == VALUE_PREFIX:
                values[field[2:].decode()] = data
            else:
                meta[field] = data
        user = meta.get(_USER)
        return SessionRecord(  # positional: one per load (SessionRecord's docstring)
            values,
            _time_field(meta, _CREATED),
            _time_field(meta, _ACCESSED),
            _time_field(meta, _EXPIRES),
            _PERMANENT_FLAGS[meta[_PERMANENT]],
            user.decode() if user is not None else None,
        )
    except (KeyError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise UndecodableRecord(RedisStore.name, f"damaged session hash: {exc!r}") from exc


_PERMANENT_FLAGS = {b"1": True, b"0": False}


def _expires_after(expires: bytes | None, now: float) -> bool:
    """Whether an ``expires`` field says live at ``now`` (a damaged one: not live, so a
    device list skips the record instead of failing on it)."""
    try:
        return expires is not None and float(expires) > now
    except ValueError:
        return False


def _time_field(meta: Mapping[bytes, bytes], name: bytes) -> float:
    value = float(meta[name])
    if not math.isfinite(value):
        raise ValueError(f"{name.decode()} is {value}")
    return value


# -- configuration ---------------------------------------------------------------------
ACCEPTED = (
    "SESSION_REDIS must be a redis.Redis client (Sentinel(...).master_for(name) returns "
    "one), a redis.cluster.RedisCluster client, or a URL such as "
    f"'{DEFAULT_URL}' (schemes redis://, rediss://, unix://); unset means {DEFAULT_URL}"
)


def store_from_settings(settings: Settings, codec: ValueCodec) -> RedisStore:
    """The store SESSION_TYPE='redis' uses, from Flask-Session's SESSION_REDIS and friends."""
    client, owned = client_from_config(settings.config)
    return RedisStore(client, key_prefix=settings.key_prefix, owns_client=owned,
                      keep_expired=settings.keep_expired)


def client_from_config(config: Mapping[str, Any]) -> tuple[RedisClient, bool]:
    """The configured client, and whether it was built here (so the store closes it)."""
    timeout = seconds(config.get("SESSION_REDIS_TIMEOUT", DEFAULT_TIMEOUT),
                      "SESSION_REDIS_TIMEOUT")
    target = config.get("SESSION_REDIS")
    sentinels = config.get("SESSION_REDIS_SENTINELS")
    if sentinels is not None:
        if target is not None:
            raise ConfigurationError("set SESSION_REDIS or SESSION_REDIS_SENTINELS, not both")
        return _sentinel_master(sentinels, config.get("SESSION_REDIS_MASTER_NAME"),
                                timeout), True
    if target is None:
        target = DEFAULT_URL
    if isinstance(target, str):
        return _client_from_url(target, timeout), True
    if isinstance(target, redis.Redis | RedisCluster):
        return target, False
    if isinstance(target, Sentinel):
        raise ConfigurationError(
            "SESSION_REDIS is a redis.sentinel.Sentinel; pass the master client instead: "
            "Sentinel(...).master_for('mymaster'), or set SESSION_REDIS_SENTINELS and "
            "SESSION_REDIS_MASTER_NAME")
    raise ConfigurationError(f"{ACCEPTED}; got a {type(target).__module__}."
                             f"{type(target).__qualname__}")


def _connection_options(timeout: float) -> dict[str, Any]:
    # One quick retry on a broken connection lets a pooled client reconnect after a
    # server restart without failing a request; a hung server is not waited for twice.
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
    }


def _client_from_url(url: str, timeout: float) -> redis.Redis:
    if not url.startswith(URL_SCHEMES):
        raise ConfigurationError(f"{ACCEPTED}; got {url!r}")
    try:
        return redis.Redis.from_url(url, **_connection_options(timeout))
    except ValueError as exc:
        raise ConfigurationError(f"SESSION_REDIS={url!r} is not a valid Redis URL: {exc}") from exc


def _sentinel_master(sentinels: Any, master_name: Any, timeout: float) -> redis.Redis:
    if not isinstance(master_name, str) or not master_name:
        raise ConfigurationError("SESSION_REDIS_SENTINELS needs SESSION_REDIS_MASTER_NAME, "
                                 "the name the sentinels monitor (e.g. 'mymaster')")
    addresses = [_sentinel_address(item) for item in _as_list(sentinels)]
    if not addresses:
        raise ConfigurationError("SESSION_REDIS_SENTINELS must list at least one sentinel")
    options = _connection_options(timeout)
    sentinel = Sentinel(addresses, socket_timeout=timeout, socket_connect_timeout=timeout)
    return sentinel.master_for(master_name, **options)


def _as_list(value: Any) -> Sequence[Any]:
    if isinstance(value, str):
        return [part for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        return value
    raise ConfigurationError("SESSION_REDIS_SENTINELS must be a list of (host, port) pairs "
                             f"or 'host:port' strings, not {value!r}")


def _sentinel_address(item: Any) -> tuple[str, int]:
    if isinstance(item, str):
        host, _, port = item.strip().rpartition(":")
        item = (host, port)
    try:
        host, port = item
        return str(host), int(port)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"SESSION_REDIS_SENTINELS entry {item!r} is not a (host, port) pair or a "
            "'host:port' string") from None


def _require_bytes_responses(client: RedisClient) -> None:
    if client.get_encoder().decode_responses:
        raise ConfigurationError(
            "SESSION_REDIS must not use decode_responses=True: session values are binary; "
            "pass a client built without it")
