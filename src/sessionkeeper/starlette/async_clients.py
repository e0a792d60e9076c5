"""Async clients and async driver URLs given to ``store=``, served by the same server's
blocking driver in the middleware's store threads.

An ASGI app often has a ``redis.asyncio`` client or an SQLAlchemy ``AsyncEngine`` (or
its ``postgresql+asyncpg://`` URL) already. The stores are written once, in blocking
form (docs/architecture.md), so such a client stands for its server: the store connects
there with the blocking driver. The hot calls then run natively again: Redis's on
redis.asyncio (stores/redis_async.py), SQL's on the async driver named, asyncpg,
psycopg 3, aiomysql or asyncmy (stores/sql_async.py, set up by stores.py).
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigurationError

#: async SQLAlchemy drivers -> the blocking drivers of the same databases, in preference
_SYNC_DRIVERS = {
    "asyncpg": ("psycopg2", "psycopg"),
    "psycopg_async": ("psycopg",),
    "psycopg": ("psycopg",),  # psycopg 3 is both; SQLAlchemy picks by the engine kind
    "aiomysql": ("pymysql", "mysqldb"),
    "asyncmy": ("pymysql", "mysqldb"),
    "aiosqlite": ("pysqlite",),
}


def url_of_async_client(client: object) -> str | None:
    """The URL to build the store from when ``client`` is an async client that stands
    for its server (a ``redis.asyncio`` client, an SQLAlchemy ``AsyncEngine``); None for
    anything else. A Motor client is refused with what to pass instead."""
    module = type(client).__module__
    if module.startswith("redis.asyncio"):
        from ..stores.redis_async import url_of_async_client as redis_url

        return redis_url(client)
    if module.startswith("sqlalchemy.ext.asyncio") and getattr(client, "url", None):
        from ..stores.sql_async import async_engine_url

        return str(async_engine_url(client).render_as_string(hide_password=False))
    if module.startswith("motor"):
        raise ConfigurationError(
            "store= takes a pymongo MongoClient or AsyncMongoClient, or a mongodb:// URL, "
            "not a Motor client (Motor is deprecated in favour of pymongo's async API)")
    return None


def sync_driver_url(url: Any) -> Any:
    """``url`` (an SQLAlchemy URL) with an async driver replaced by a blocking driver of
    the same database that is installed; other URLs as they are."""
    from ..stores.sql_async import blocking_url

    _, _, driver = url.drivername.partition("+")
    candidates = _SYNC_DRIVERS.get(driver)
    return url if candidates is None else blocking_url(url, candidates)
