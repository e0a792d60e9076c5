"""``store=``: a URL or a client object, made into the core's server-side backend.

``memory://``, ``sqlite:///`` and ``redis://`` URLs build a client that connects on first
use, so an app starts (and serves requests that carry no session) while its store is
down. The other stores are built as the Flask extension builds them from its
``SESSION_*`` settings (one code path for both), and checked at start-up as there: that
is when their tables, indexes or directory are created, and a store that cannot be
reached stops the app with a message saying so.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..breaker import CircuitBreaker, GuardedStore
from ..errors import ConfigurationError
from ..factory import build_store
from ..ids import SessionIds
from ..policy import ExpiryPolicy
from ..serialization import ValueCodec
from ..server_side import DEFAULT_ROTATION_GRACE, ServerSideSessions
from ..settings import Settings
from ..stores.base import SessionStore
from .session import Session

#: the record's lifetime when ``max_age=None`` (a browser-session cookie): Starlette's default
BROWSER_SESSION_LIFETIME = 14 * 24 * 60 * 60
ACCEPTED = (
    "store= takes a URL: 'memory://', 'sqlite:///relative/path.db', "
    "'sqlite:////absolute/path.db', 'redis://host:port/db' (rediss://, unix:// too), "
    "'memcached://host:port[,host:port...]', 'file:///absolute/directory', "
    "'mongodb://...' (mongodb+srv://), 'dynamodb://host:port[?table=Name&region=r]' "
    "(a local DynamoDB-compatible server), an SQLAlchemy URL ('postgresql+psycopg2://...', "
    "'mysql+pymysql://...', 'sqlite+pysqlite:///...'); or a client object: redis.Redis or "
    "RedisCluster, a pymemcache client, an SQLAlchemy Engine, a pymongo MongoClient, a boto3 "
    "DynamoDB client or resource, a cachelib cache; or a sessionkeeper SessionStore")
#: schemes SQLAlchemy URLs start with when they name no driver
_SQL_SCHEMES = ("postgresql", "mysql", "mariadb", "oracle", "mssql")


def store_from(spec: Any, *, codec: ValueCodec, key_prefix: str) -> SessionStore:
    """The store ``spec`` names (a store instance is used as it is)."""
    if isinstance(spec, SessionStore):
        return spec
    if not isinstance(spec, str):
        session_type, setting = _client_kind(spec)
        return _configured(session_type, {setting: spec}, codec, key_prefix)
    scheme, sep, _ = spec.partition("://")
    scheme = scheme.lower() if sep else ""
    if scheme == "memory":
        from ..stores.memory import MemoryStore

        return MemoryStore()
    if scheme == "sqlite":
        return _sqlite(spec, codec, key_prefix)
    if scheme in ("redis", "rediss", "unix"):
        return _redis(spec, key_prefix)
    if scheme == "memcached":
        servers = [part for part in urlsplit(spec).netloc.split(",") if part]
        if not servers:
            raise ConfigurationError(f"{spec!r}: name the servers, memcached://host:port")
        return _configured("memcached", {"SESSION_MEMCACHED": servers}, codec, key_prefix)
    if scheme == "file":
        parts = urlsplit(spec)
        directory = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not directory.startswith("/"):
            raise ConfigurationError(f"{spec!r}: give an absolute directory, file:///path")
        return _configured("filesystem", {"SESSION_FILE_DIR": directory}, codec, key_prefix)
    if scheme in ("mongodb", "mongodb+srv"):
        return _configured("mongodb", {"SESSION_MONGODB": spec}, codec, key_prefix)
    if scheme == "dynamodb":
        return _dynamodb(spec, codec, key_prefix)
    if "+" in scheme or scheme in _SQL_SCHEMES:
        return _configured("sqlalchemy", {"SESSION_SQLALCHEMY": spec}, codec, key_prefix)
    raise ConfigurationError(f"{ACCEPTED}; got {spec!r}")


def _client_kind(client: object) -> tuple[str, str]:
    """The SESSION_TYPE and setting a client object of a store's driver goes in."""
    module = type(client).__module__.split(".")[0]
    if module == "redis":
        return "redis", "SESSION_REDIS"
    if module == "pymemcache":
        return "memcached", "SESSION_MEMCACHED"
    if module == "sqlalchemy":
        return "sqlalchemy", "SESSION_SQLALCHEMY"
    if module == "pymongo":
        return "mongodb", "SESSION_MONGODB"
    if module in ("botocore", "boto3"):
        return "dynamodb", "SESSION_DYNAMODB"
    if module == "cachelib":
        return "cachelib", "SESSION_CACHELIB"
    raise ConfigurationError(f"{ACCEPTED}; got a {type(client).__qualname__}")


def _configured(session_type: str, config: dict[str, Any], codec: ValueCodec,
                key_prefix: str) -> SessionStore:
    """The store the Flask extension builds for these settings, checked as there."""
    settings = Settings.from_mapping(
        {"SESSION_TYPE": session_type, "SESSION_KEY_PREFIX": key_prefix, **config})
    return build_store(settings, codec)


def _dynamodb(url: str, codec: ValueCodec, key_prefix: str) -> SessionStore:
    parts = urlsplit(url)
    if not parts.netloc:
        raise ConfigurationError(
            f"{url!r}: name the server, dynamodb://host:port; for AWS pass a boto3 "
            "DynamoDB client as store=")
    try:
        import boto3

        from ..stores.dynamodb_client import DEFAULT_TIMEOUT, client_config
    except ImportError as exc:
        raise ConfigurationError(f"store={url!r} needs boto3 ({exc}): "
                                 "pip install 'sessionkeeper[dynamodb]'") from exc
    query = parse_qs(parts.query)
    # A local server takes any region; credentials come from the environment, as boto3's.
    region = (query.get("region") or [None])[0] or os.environ.get(
        "AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    client = boto3.client("dynamodb", endpoint_url=f"http://{parts.netloc}",
                          region_name=region, config=client_config(DEFAULT_TIMEOUT))
    config: dict[str, Any] = {"SESSION_DYNAMODB": client}
    if query.get("table"):
        config["SESSION_DYNAMODB_TABLE"] = query["table"][0]
    return _configured("dynamodb", config, codec, key_prefix)


def _sqlite(url: str, codec: ValueCodec, key_prefix: str) -> SessionStore:
    from ..stores.sqlite import SQLiteStore

    # SQLAlchemy's spelling: sqlite:///relative.db, sqlite:////absolute.db
    path = unquote(urlsplit(url).path)[1:]
    if not path or path == ":memory:":
        raise ConfigurationError(
            f"{url!r}: name a database file (an in-memory SQLite database would be a "
            "different one on every thread); for tests use store='memory://'")
    return SQLiteStore(path, codec=codec, key_prefix=key_prefix)


def _redis(url: str, key_prefix: str) -> SessionStore:
    try:
        from ..stores.redis import RedisStore, client_from_config
    except ImportError as exc:
        raise ConfigurationError(f"store={url!r} needs the Redis driver ({exc}): "
                                 "pip install 'sessionkeeper[redis]'") from exc
    client, owned = client_from_config({"SESSION_REDIS": url})
    return RedisStore(client, key_prefix=key_prefix, owns_client=owned)


def server_sessions(
    store: SessionStore,
    *,
    secret_key: str,
    max_age: int | None,
    codec: ValueCodec,
    key_prefix: str,
    rotation_grace: float = DEFAULT_ROTATION_GRACE,
    breaker_seconds: float = 5.0,
) -> ServerSideSessions:
    """The core's backend for ``store``, as sessionkeeper's Flask extension builds it:
    the lifetime is ``max_age``, a read refreshes at most once per tenth of it, and a
    store that times out trips a circuit breaker."""
    if breaker_seconds:
        store = GuardedStore(store, CircuitBreaker(store.name, breaker_seconds))
    lifetime = BROWSER_SESSION_LIFETIME if max_age is None else max_age
    return ServerSideSessions(
        store,
        policy=ExpiryPolicy(lifetime=lifetime, refresh_fraction=0.1),
        codec=codec, ids=SessionIds(), key_prefix=key_prefix,
        permanent=max_age is not None,
        log_salt=hashlib.sha256(b"sessionkeeper-log:" + secret_key.encode()).digest(),
        session_class=Session, rotation_grace=rotation_grace,
    )
