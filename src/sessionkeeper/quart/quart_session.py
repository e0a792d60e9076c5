"""quart-session's configuration, read as sessionkeeper's: apps change only the import.

quart-session takes its Redis client as a ``redis.asyncio`` client in SESSION_REDIS.
sessionkeeper's stores are synchronous (they run in the store threads), so such a client
is replaced by its address: the store connects there with a client of its own.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any


def adapt_quart_session_config(config: MutableMapping[str, Any]) -> None:
    """Replace a ``redis.asyncio`` client in SESSION_REDIS by the URL of its server."""
    client = config.get("SESSION_REDIS")
    if client is None or isinstance(client, str):
        return
    try:
        from redis.asyncio import Redis as AsyncRedis

        from ..stores.redis_async import url_of_async_client
    except ImportError:
        return
    if isinstance(client, AsyncRedis):
        config["SESSION_REDIS"] = url_of_async_client(client)
