"""The Redis store on a real 3-master Redis Cluster, started once per test run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from providers._shared import random_prefix
from providers.redis import IsolatedRedisStore, delete_prefixed
from redis.cluster import RedisCluster
from servers import ServerGroup, start_or_skip, start_redis_cluster

from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.redis import RedisStore

KIND = "redis"

_cluster: ServerGroup | None = None  # started on first use, stopped at exit by servers.py


def cluster() -> ServerGroup:
    global _cluster
    if _cluster is None:
        _cluster = start_or_skip(start_redis_cluster, 3)
    return _cluster


def cluster_client() -> RedisCluster:
    host, port = cluster()[0]
    return RedisCluster(host=host, port=port, socket_timeout=5, socket_connect_timeout=5)


@contextmanager
def store(codec: ValueCodec) -> Iterator[RedisStore]:
    client = cluster_client()
    prefix = random_prefix("redis-cluster")
    try:
        yield IsolatedRedisStore(client, key_prefix=prefix)
    finally:
        delete_prefixed(client, prefix)
        client.close()


@contextmanager
def flask_config(tmp_path: Path) -> Iterator[dict[str, Any]]:
    client = cluster_client()
    prefix = random_prefix("redis-cluster")
    try:
        yield {"SESSION_TYPE": KIND, "SESSION_REDIS": client, "SESSION_KEY_PREFIX": prefix}
    finally:
        delete_prefixed(client, prefix)
        client.close()
