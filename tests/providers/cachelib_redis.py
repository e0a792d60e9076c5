"""The cachelib store over a RedisCache on the machine's Redis (127.0.0.1:6379).

The cache's own key prefix is random per test, so every key the store writes (records,
locks, user indexes) is isolated; cleanup deletes only keys with that prefix.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from cachelib import RedisCache
from providers._shared import random_prefix
from providers.redis import delete_prefixed, machine_client

from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.cachelib import CachelibStore

KIND = "cachelib"


def redis_cache(client: redis.Redis, prefix: str) -> RedisCache:
    return RedisCache(host=client, key_prefix=prefix)


@contextmanager
def store(codec: ValueCodec) -> Iterator[CachelibStore]:
    client = machine_client()
    prefix = random_prefix("cachelib")
    try:
        made = CachelibStore(redis_cache(client, prefix), codec=codec)
        made.check()
        yield made
    finally:
        delete_prefixed(client, prefix)
        client.close()


@contextmanager
def flask_config(tmp_path: Path) -> Iterator[dict[str, Any]]:
    client = machine_client()
    prefix = random_prefix("cachelib")
    try:
        yield {"SESSION_TYPE": KIND, "SESSION_CACHELIB": redis_cache(client, prefix)}
    finally:
        delete_prefixed(client, prefix)
        client.close()
