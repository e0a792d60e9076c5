"""The Redis store on the machine's Redis (127.0.0.1:6379), under a random key prefix.

The server is shared with other test runs, so every key a test writes lives under its
own prefix, and cleanup deletes only keys with that prefix (never FLUSHDB).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from providers._shared import random_prefix
from servers import require

from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.base import SessionRecord, SessionUpdate, chunked
from sessionkeeper.stores.redis import RedisClient, RedisStore

KIND = "redis"
URL = "redis://127.0.0.1:6379/0"


class IsolatedRedisStore(RedisStore):
    """A RedisStore that keeps every key the test names under the test's own prefix.

    Tests pick plain keys ("k1"); other runs on the same server may pick the same ones.
    """

    def load(self, key: str, now: float) -> SessionRecord | None:
        return super().load(self.key_prefix + key, now)

    def create(self, key: str, record: SessionRecord) -> None:
        super().create(self.key_prefix + key, record)

    def update(self, key: str, update: SessionUpdate) -> bool:
        return super().update(self.key_prefix + key, update)

    def add(self, key: str, record: SessionRecord) -> bool:
        return super().add(self.key_prefix + key, record)

    def touch(self, key: str, accessed_at: float, expires_at: float, *,
              version: Any = None) -> bool:
        return super().touch(self.key_prefix + key, accessed_at, expires_at, version=version)

    def delete(self, key: str) -> None:
        super().delete(self.key_prefix + key)

    def keys_for_user(self, user_id: str, now: float) -> list[str]:
        keys = super().keys_for_user(user_id, now)
        return [key.removeprefix(self.key_prefix) for key in keys]


def delete_prefixed(client: RedisClient, prefix: str) -> None:
    """Delete this test's keys only; works on a Cluster too (SCAN visits every master)."""
    for batch in chunked((key.decode() for key in client.scan_iter(match=f"{prefix}*",
                                                                   count=1000)), 500):
        for key in batch:  # one by one: on a Cluster the keys live in different slots
            client.unlink(key)


def machine_client() -> redis.Redis:
    client = redis.Redis.from_url(URL, socket_timeout=5, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        require(False, f"Redis at 127.0.0.1:6379 ({exc})")
    return client


@contextmanager
def store(codec: ValueCodec) -> Iterator[RedisStore]:
    client = machine_client()
    prefix = random_prefix(KIND)
    try:
        yield IsolatedRedisStore(client, key_prefix=prefix)
    finally:
        delete_prefixed(client, prefix)
        client.close()


@contextmanager
def flask_config(tmp_path: Path) -> Iterator[dict[str, Any]]:
    client = machine_client()
    prefix = random_prefix(KIND)
    try:
        # A URL, as most apps configure it: the store builds and owns its client.
        yield {"SESSION_TYPE": KIND, "SESSION_REDIS": URL, "SESSION_KEY_PREFIX": prefix}
    finally:
        delete_prefixed(client, prefix)
        client.close()
