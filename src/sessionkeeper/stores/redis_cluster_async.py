"""A Redis Cluster client's hot commands on ``redis.asyncio`` (see redis_async.py).

Each event loop gets a ``redis.asyncio.cluster.RedisCluster`` built from the sync
client's known nodes and settings (credentials, TLS, timeouts, retries, full coverage,
replica reads, address remapping); it routes each command by its key's slot and follows
MOVED, ASK and topology changes as the sync client does. The store's scripts name one
key on a Cluster (the per-user index, in another slot, is written by a call of its
own), so every script runs on the node of its session's slot.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from typing import Any

import redis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError
from redis.retry import Retry
from redis.typing import EncodableT

from .redis_async import at_loop_shutdown, mirrored_settings

#: settings of the sync cluster client's nodes that the asyncio client sets itself
_CLUSTER_OWN = frozenset({"redis_connect_func", "connection_class"})

_ALL: weakref.WeakSet[AsyncClusterCommands] = weakref.WeakSet()


def _forget_inherited_clients() -> None:
    for commands in list(_ALL):
        commands.clients = weakref.WeakKeyDictionary()


os.register_at_fork(after_in_child=_forget_inherited_clients)


class AsyncClusterCommands:
    """Sends commands from the running asyncio loop to the nodes of a Redis Cluster."""

    def __init__(self, nodes: list[tuple[str, int]], options: dict[str, Any]) -> None:
        self._nodes = nodes
        self._options = options
        #: per event loop, its cluster client
        self.clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                                AsyncRedisCluster] = weakref.WeakKeyDictionary()
        _ALL.add(self)

    @classmethod
    def mirroring(cls, client: RedisCluster) -> AsyncClusterCommands | None:
        """Commands on a cluster client made as ``client``, or None when it cannot be."""
        manager = client.nodes_manager
        settings = dict(manager.connection_kwargs)
        connection_class = settings.get("connection_class", redis.connection.Connection)
        if connection_class not in (redis.connection.Connection, redis.connection.SSLConnection):
            return None
        options = mirrored_settings(settings, extra=_CLUSTER_OWN)
        if options is None:
            return None
        for own in _CLUSTER_OWN:
            options.pop(own, None)
        if options.get("db"):  # refused by a cluster client anyway
            return None
        options.pop("db", None)
        options.pop("host", None)
        options.pop("port", None)
        if connection_class is redis.connection.SSLConnection:
            options["ssl"] = True
        # Every node the sync client knows: any of them tells the topology.
        known = {**manager.startup_nodes, **manager.nodes_cache}
        nodes = [(node.host, int(node.port)) for node in known.values()]
        retry = _async_retry(client.retry)
        if not nodes or retry is None:
            return None
        options.update(
            require_full_coverage=getattr(manager, "_require_full_coverage", True),
            load_balancing_strategy=client.load_balancing_strategy,
            reinitialize_steps=client.reinitialize_steps,
            address_remap=manager.address_remap,
            retry=retry,
        )
        if client.read_from_replicas and client.load_balancing_strategy is None:
            options["read_from_replicas"] = True  # (deprecated, but what the client does)
        return cls(nodes, options)

    async def _client(self) -> AsyncRedisCluster:
        loop = asyncio.get_running_loop()
        client = self.clients.get(loop)
        if client is None:
            client = self.clients[loop] = AsyncRedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in self._nodes],
                **self._options)
            await at_loop_shutdown(client.aclose)
        return client

    async def __call__(self, *args: EncodableT) -> Any:
        """The reply to one command, sent to the node of its key (HGETALL: a dict)."""
        return await (await self._client()).execute_command(*args)

    async def run_script(self, sha: str, source: str, keys: list[EncodableT],
                         args: list[EncodableT]) -> Any:
        """EVALSHA on the node of the keys' slot; EVAL (which caches the script there)
        when that node does not have it yet."""
        client = await self._client()
        try:
            return await client.execute_command("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.execute_command("EVAL", source, len(keys), *keys, *args)


def _async_retry(retry: Any) -> AsyncRetry | None:
    """The same retry policy for the asyncio client (as redis-py converts one itself),
    or None for a subclass whose own retrying would be lost."""
    if type(retry) is not Retry:
        return None
    return AsyncRetry(backoff=retry._backoff, retries=retry.get_retries(),
                      supported_errors=retry._supported_errors,
                      is_retryable=getattr(retry, "_is_retryable", None))
