"""The Redis store's hot commands on ``redis.asyncio``, for ASGI apps: no worker thread.

A worker-thread hop costs about as much as a Redis round trip on loopback, so the read a
session request makes before its endpoint runs, and the delta update or refresh of its
save, are sent from the event loop. The
connections are made as the store's ``redis.Redis`` client would make them (address,
database, credentials, TLS, unix socket, timeouts) but with redis-py's asyncio classes;
a Sentinel-managed client's master is looked up through the same sentinels
(redis_sentinel_async.py). A client this cannot mirror (a credential provider, RESP3 ...)
keeps every call in threads. Connections belong to the event loop that made them, so
each running loop has its own free list.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import redis
import redis.asyncio.connection as async_connection
from redis.exceptions import NoScriptError
from redis.typing import EncodableT

from ..deadlines import within

try:  # redis[hiredis], a dependency; the C packer is several times faster
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover - only without hiredis
    _pack = None

#: the sync connection classes mirrored, by name -> their asyncio twins
_TWINS = {
    redis.connection.Connection: async_connection.Connection,
    redis.connection.SSLConnection: async_connection.SSLConnection,
    redis.connection.UnixDomainSocketConnection: async_connection.UnixDomainSocketConnection,
}
#: connection settings passed on as they are
_COPIED = frozenset({
    "host", "port", "path", "db", "username", "password", "client_name",
    "socket_timeout", "socket_connect_timeout", "socket_keepalive",
    "socket_keepalive_options", "ssl_keyfile", "ssl_certfile", "ssl_cert_reqs",
    "ssl_ca_certs", "ssl_ca_data", "ssl_check_hostname", "ssl_min_version", "ssl_ciphers",
})
#: settings of the sync machinery with no bearing on one raw command
_IGNORED = frozenset({
    "retry", "retry_on_timeout", "retry_on_error", "health_check_interval", "lib_name",
    "lib_version", "driver_info", "encoding", "encoding_errors", "decode_responses",
    "legacy_responses",
    "parser_class", "socket_read_size", "event_dispatcher", "encoder_class",
    "socket_type", "himport_registry", "maint_notifications_config",
    "maint_notifications_pool_handler", "maintenance_state",
    "maintenance_notification_hash", "orig_host_address", "orig_socket_timeout",
    "orig_socket_connect_timeout", "oss_cluster_maint_notifications_handler",
})

_ALL: weakref.WeakSet[AsyncDirectCommands] = weakref.WeakSet()
#: per event loop, what runs when it shuts down (kept here: an unreferenced generator
#: would be finalized, and its cleanup run, at once)
_AT_SHUTDOWN: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Any]] = (
    weakref.WeakKeyDictionary())


def _forget_inherited_connections() -> None:
    _AT_SHUTDOWN.clear()
    for commands in list(_ALL):
        commands.forget_loops()


async def _running_until_shutdown(cleanup: Callable[[], Awaitable[None]],
                                  loop: asyncio.AbstractEventLoop) -> AsyncIterator[None]:
    try:
        yield
    finally:
        try:
            await cleanup()
        finally:
            # A finished generator still holds its loop's finalizer hook: kept here, it
            # would keep the closed loop alive. The loop's shutdown holds the others.
            _AT_SHUTDOWN.pop(loop, None)


async def at_loop_shutdown(cleanup: Callable[[], Awaitable[None]]) -> None:
    """Awaits ``cleanup()`` when the running loop shuts down (asyncio.run and the servers
    built on it finalize every async generator first): no socket outlives its loop."""
    loop = asyncio.get_running_loop()
    hook = _running_until_shutdown(cleanup, loop)
    await hook.__anext__()
    _AT_SHUTDOWN.setdefault(loop, []).append(hook)


async def disconnect_all(connections: list[Any]) -> None:
    """Closes every connection in ``connections``, which is left empty."""
    dropped, connections[:] = list(connections), []
    for connection in dropped:
        await connection.disconnect(nowait=True)


def mirrored_settings(settings: Mapping[str, Any], extra: frozenset[str] = frozenset()
                      ) -> dict[str, Any] | None:
    """The settings of a sync connection an asyncio one takes as they are (and those
    named in ``extra``), or None when one would change what a command does (RESP3,
    decoded replies, a credential provider ...)."""
    if settings.get("protocol") not in (None, 2, "2") or settings.get("decode_responses"):
        return None
    unknown = [key for key, value in settings.items()
               if key not in _COPIED and key not in _IGNORED and key not in extra
               and key != "protocol" and value is not None]
    if unknown:
        return None
    return {key: value for key, value in settings.items() if key in _COPIED or key in extra}


os.register_at_fork(after_in_child=_forget_inherited_connections)


class AsyncDirectCommands:
    """Sends commands from the running asyncio loop to the server of a ``redis.Redis``."""

    def __init__(self, connection_class: type, kwargs: dict[str, Any]) -> None:
        self._connection_class = connection_class
        # One deadline for a whole command (send and reply) instead of redis-py's own
        # wait_for around each of the two, which costs a task and a timer apiece.
        self._timeout: float | None = kwargs.get("socket_timeout")
        self._kwargs = {**kwargs, "socket_timeout": None}
        #: per event loop, connections not in use
        self.idle: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Any]] = (
            weakref.WeakKeyDictionary())
        _ALL.add(self)

    def forget_loops(self) -> None:
        """Drops every loop's connections unclosed (a forked child: the parent's)."""
        self.idle = weakref.WeakKeyDictionary()

    @classmethod
    def mirroring(cls, client: redis.Redis) -> AsyncDirectCommands | None:
        """Commands on connections made as ``client``'s, or None when they cannot be."""
        pool = client.connection_pool
        twin = _TWINS.get(pool.connection_class)
        settings = mirrored_settings(pool.connection_kwargs)
        if twin is None or settings is None:
            return None
        return cls(twin, settings)

    async def _free_list(self) -> list[Any]:
        loop = asyncio.get_running_loop()
        found = self.idle.get(loop)
        if found is None:
            found = self.idle[loop] = []
            await at_loop_shutdown(lambda: disconnect_all(found))
        return found

    async def __call__(self, *args: EncodableT) -> Any:
        """The raw reply to one command; redis-py's exceptions for errors. A broken idle
        connection is dropped and the command sent once more on a new one."""
        idle = await self._free_list()
        if idle:
            try:
                return await self._exchange(idle, idle.pop(), args)
            except redis.ConnectionError:
                pass  # the server restarted since: once more, on a new connection
        return await self._exchange(idle, await self._connect(), args)

    async def run_script(self, sha: str, source: str, keys: list[EncodableT],
                         args: list[EncodableT]) -> Any:
        """EVALSHA, loading the script first when the server does not have it."""
        try:
            return await self("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            await self("SCRIPT", "LOAD", source)
            return await self("EVALSHA", sha, len(keys), *keys, *args)

    async def _exchange(self, idle: list[Any], connection: Any,
                        args: tuple[EncodableT, ...]) -> Any:
        try:
            packed = [_pack(args)] if _pack is not None else connection.pack_command(*args)
            if self._timeout is None:
                reply = await _send_and_read(connection, packed)
            else:
                reply = await within(self._timeout, _send_and_read(connection, packed))
        except (TimeoutError, asyncio.TimeoutError) as exc:  # (two classes on 3.10)
            await connection.disconnect(nowait=True)
            raise redis.TimeoutError(f"no reply within {self._timeout}s") from exc
        except redis.ResponseError as exc:
            if self._server_demoted(exc):
                await connection.disconnect(nowait=True)
                raise redis.ConnectionError("the master is now a replica") from exc
            idle.append(connection)  # an error reply leaves the connection in step
            raise
        except BaseException:  # broken, timed out or cancelled: half a reply may be unread
            await connection.disconnect(nowait=True)
            raise
        idle.append(connection)
        return reply

    def _server_demoted(self, error: redis.ResponseError) -> bool:
        """Whether an error reply means the server is no longer the one to talk to."""
        return False

    async def _connect(self) -> Any:
        connection = self._connection_class(**self._kwargs)
        await connection.connect()
        return connection


async def _send_and_read(connection: Any, packed: list[bytes]) -> Any:
    await connection.send_packed_command(packed, check_health=False)
    return await connection.read_response()


def url_of_async_client(client: Any) -> str:
    """The ``redis://`` (``rediss://``, ``unix://``) URL a ``redis.asyncio`` client
    connects to, credentials included: where a client the app built for its own async
    code is given to a store, the store connects there with connections of its own."""
    options = client.connection_pool.connection_kwargs
    user, password = options.get("username"), options.get("password")
    auth = ""
    if password:
        auth = f"{quote(user or '', safe='')}:{quote(password, safe='')}@"
    db = options.get("db") or 0
    if options.get("path"):
        return f"unix://{auth}{options['path']}?db={db}"
    scheme = "rediss" if any(key.startswith("ssl") for key in options) else "redis"
    return f"{scheme}://{auth}{options.get('host', 'localhost')}:{options.get('port', 6379)}/{db}"
