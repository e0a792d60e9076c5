"""quart-session's configuration, read as sessionkeeper's: apps change only the import.

quart-session takes its Redis client as a ``redis.asyncio`` client in SESSION_REDIS.
sessionkeeper's stores are synchronous (they run in the store threads), so such a client
is replaced by its address: the store connects there with a client of its own.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any
from urllib.parse import quote


def adapt_quart_session_config(config: MutableMapping[str, Any]) -> None:
    """Replace a ``redis.asyncio`` client in SESSION_REDIS by the URL of its server."""
    client = config.get("SESSION_REDIS")
    if client is None or isinstance(client, str):
        return
    try:
        from redis.asyncio import Redis as AsyncRedis
    except ImportError:
        return
    if isinstance(client, AsyncRedis):
        config["SESSION_REDIS"] = redis_url_of(client)


def redis_url_of(client: Any) -> str:
    """The ``redis://`` (or ``unix://``) URL a ``redis.asyncio`` client connects to."""
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
