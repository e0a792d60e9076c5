"""The memcached store over two real throwaway servers (a HashClient), random prefix.

The servers start once per test run and allow 8 MB items (``-I 8m``): the shared
suites store values over memcached's default 1 MB item limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from providers._shared import random_prefix
from servers import ServerGroup, start_memcached, start_or_skip

from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.memcached import MemcachedStore, build_client

KIND = "memcached"
ITEM_SIZE = "8m"
# Generous: the whole suite may run beside other work on a small machine.
TIMEOUT = 5.0

_servers: ServerGroup | None = None


def servers() -> ServerGroup:
    """The two shared servers, started on first use (skips when memcached is missing)."""
    global _servers
    if _servers is None:
        _servers = start_or_skip(start_memcached, 2, item_size=ITEM_SIZE)
    return _servers


@contextmanager
def store(codec: ValueCodec) -> Iterator[MemcachedStore]:
    # The client's own key prefix isolates every key, the per-user index included.
    client = build_client(list(servers()), timeout=TIMEOUT, key_prefix=random_prefix(KIND))
    made = MemcachedStore(client, codec=codec)
    made.check()
    try:
        yield made
    finally:
        made.close()


@contextmanager
def flask_config(tmp_path: Path) -> Iterator[dict[str, Any]]:
    yield {
        "SESSION_TYPE": KIND,
        "SESSION_MEMCACHED": [f"{host}:{port}" for host, port in servers()],
        "SESSION_MEMCACHED_TIMEOUT": TIMEOUT,
        "SESSION_KEY_PREFIX": random_prefix(KIND),
    }
