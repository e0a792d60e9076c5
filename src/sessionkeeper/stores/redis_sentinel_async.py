"""A Sentinel-managed client's hot commands on ``redis.asyncio`` (see redis_async.py).

The master is found as redis-py's ``SentinelConnectionPool`` finds it: every new
connection asks the sentinels (``redis.asyncio.sentinel.Sentinel``, with the sync
sentinels' addresses and settings) for the service's current master. A failover is
followed the same way too: a master that became a replica (READONLY, or the reply that
unblocks its clients) drops the connection, and an address that changed drops the
loop's idle connections to the previous master. Errors stay redis-py's: no master
known, or one that refuses connections, is a ``ConnectionError``.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import redis
import redis.asyncio.connection as async_connection
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.exceptions import ReadOnlyError
from redis.sentinel import (
    DEMOTED_MASTER_UNBLOCKED_ERROR,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

from .redis_async import AsyncDirectCommands, at_loop_shutdown, disconnect_all, mirrored_settings

#: the sync classes of master connections -> their asyncio twins (no master lookup of
#: their own: it is done here, once per new connection, as the sync classes do it)
_MASTER_TWINS = {
    SentinelManagedConnection: async_connection.Connection,
    SentinelManagedSSLConnection: async_connection.SSLConnection,
}


class _Lookup:
    """One event loop's sentinels and the master they named last."""

    def __init__(self, sentinel: AsyncSentinel) -> None:
        self.sentinel = sentinel
        self.master: tuple[str, int] | None = None


class AsyncSentinelCommands(AsyncDirectCommands):
    """Sends commands from the running asyncio loop to the master a Sentinel names."""

    def __init__(self, connection_class: type, kwargs: dict[str, Any], *, service_name: str,
                 sentinels: list[tuple[str, int]], sentinel_kwargs: dict[str, Any],
                 min_other_sentinels: int, force_master_ip: str | None) -> None:
        super().__init__(connection_class, kwargs)
        self.service_name = service_name
        self._sentinels = sentinels
        # No retry of a sentinel query: the lookup moves on to the next sentinel.
        self._sentinel_options: dict[str, Any] = {
            "sentinel_kwargs": sentinel_kwargs, "min_other_sentinels": min_other_sentinels,
            "force_master_ip": force_master_ip}
        self._lookups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Lookup] = (
            weakref.WeakKeyDictionary())

    @classmethod
    def mirroring_sentinel(cls, client: redis.Redis) -> AsyncSentinelCommands | None:
        """Commands on the master of ``client`` (``Sentinel(...).master_for(...)``), or None
        when it is not one or its connections or sentinels cannot be mirrored."""
        pool = client.connection_pool
        if not isinstance(pool, SentinelConnectionPool) or not pool.is_master:
            return None
        twin = _MASTER_TWINS.get(pool.connection_class)
        settings = mirrored_settings({key: value for key, value in pool.connection_kwargs.items()
                                      if key != "connection_pool"})
        manager = pool.sentinel_manager
        sentinels: list[tuple[str, int]] = []
        sentinel_kwargs: dict[str, Any] | None = None
        for sentinel in manager.sentinels:
            sentinel_pool = sentinel.connection_pool
            mirrored = mirrored_settings(sentinel_pool.connection_kwargs)
            if mirrored is None or sentinel_pool.connection_class not in (
                    redis.connection.Connection, redis.connection.SSLConnection):
                return None
            sentinels.append((mirrored.pop("host", "localhost"), mirrored.pop("port", 26379)))
            if sentinel_pool.connection_class is redis.connection.SSLConnection:
                mirrored["ssl"] = True
            sentinel_kwargs = mirrored  # one Sentinel's sentinels share their settings
        if twin is None or settings is None or sentinel_kwargs is None:
            return None
        settings.pop("host", None)
        settings.pop("port", None)
        return cls(twin, settings, service_name=pool.service_name, sentinels=sentinels,
                   sentinel_kwargs=sentinel_kwargs,
                   min_other_sentinels=manager.min_other_sentinels,
                   force_master_ip=getattr(manager, "_force_master_ip", None))

    def forget_loops(self) -> None:
        super().forget_loops()
        self._lookups = weakref.WeakKeyDictionary()

    async def _connect(self) -> Any:
        host, port = await self._master()
        connection = self._connection_class(**self._kwargs, host=host, port=port)
        await connection.connect()
        return connection

    async def _master(self) -> tuple[str, int]:
        """The master's address, from the sentinels; a new one closes the loop's idle
        connections, which still go to the previous master."""
        loop = asyncio.get_running_loop()
        lookup = self._lookups.get(loop)
        if lookup is None:
            lookup = self._lookups[loop] = _Lookup(
                AsyncSentinel(self._sentinels, **self._sentinel_options))
            await at_loop_shutdown(lookup.sentinel.aclose)
        found = await lookup.sentinel.discover_master(self.service_name)
        address = (str(found[0]), int(found[1]))
        if address != lookup.master:
            previous, lookup.master = lookup.master, address
            if previous is not None:
                await disconnect_all(await self._free_list())
        return address

    def _server_demoted(self, error: redis.ResponseError) -> bool:
        # As redis-py's SentinelManagedConnection: the master we talk to was demoted.
        return isinstance(error, ReadOnlyError) or str(error).startswith(
            DEMOTED_MASTER_UNBLOCKED_ERROR)
