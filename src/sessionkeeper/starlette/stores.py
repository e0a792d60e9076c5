"""``store=``: a URL or a client object, made into the core's server-side backend.

Building a store talks to no server, so an app starts (and serves requests that carry
no session) while its store is down. ``memory://``, ``sqlite:///`` and ``redis://`` build
a client that connects on first use. The other stores are built as the Flask extension
builds them from its ``SESSION_*`` settings (one code path for both), and the check the
extension makes at start-up (the server answers; its table, indexes or TTL are created)
runs before the store's first operation instead (first_use.py). Two constructors do
touch something: the filesystem store creates its directory and an SQLAlchemy URL on
SQLite its database file (local disk, no server); a ``RedisCluster`` client connects in
its own constructor, before it is passed here.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ..breaker import CircuitBreaker, GuardedStore
from ..errors import ConfigurationError, StoreUnavailable
from ..factory import store_factory
from ..ids import SessionIds
from ..policy import ExpiryPolicy
from ..serialization import ValueCodec
from ..server_side import DEFAULT_ROTATION_GRACE, ServerSideSessions
from ..settings import Settings
from ..stores.base import SessionStore
from .async_clients import sync_driver_url, url_of_async_client
from .first_use import CheckedOnFirstUse
from .session import Session

#: the record's lifetime when ``max_age=None`` (a browser-session cookie): Starlette's default
BROWSER_SESSION_LIFETIME = 14 * 24 * 60 * 60
ACCEPTED = (
    "store= takes a URL: 'memory://', 'sqlite:///relative/path.db', "
    "'sqlite:////absolute/path.db', 'redis://host:port/db' (rediss://, unix:// too), "
    "'redis+sentinel://host:port[,host:port...]/service', "
    "'memcached://host:port[,host:port...]', 'file:///absolute/directory', "
    "an SQLAlchemy URL ('postgresql+psycopg2://...', 'mysql+pymysql://...', "
    "'sqlite+pysqlite:///...'; ?table=Name), 'mongodb://...' (mongodb+srv://), "
    "'dynamodb://' (AWS) or 'dynamodb://host:port' (a local server; ?table=Name&region=r); "
    "or a client object: redis.Redis or RedisCluster (or a redis.asyncio client), a "
    "pymemcache client, an SQLAlchemy Engine (or AsyncEngine), a pymongo MongoClient, a "
    "boto3 DynamoDB client or resource, a cachelib cache; or a sessionkeeper SessionStore")
#: schemes SQLAlchemy URLs start with when they name no driver
_SQL_SCHEMES = ("postgresql", "mysql", "mariadb", "oracle", "mssql")
#: the top-level module of a driver's classes -> SESSION_TYPE, and the setting that
#: takes that driver's client objects on the Flask side
_CLIENT_SETTINGS = {
    "redis": ("redis", "SESSION_REDIS"),
    "pymemcache": ("memcached", "SESSION_MEMCACHED"),
    "sqlalchemy": ("sqlalchemy", "SESSION_SQLALCHEMY"),
    "pymongo": ("mongodb", "SESSION_MONGODB"),
    "botocore": ("dynamodb", "SESSION_DYNAMODB"),
    "boto3": ("dynamodb", "SESSION_DYNAMODB"),
    "cachelib": ("cachelib", "SESSION_CACHELIB"),
}


def store_from(spec: Any, *, codec: ValueCodec, key_prefix: str) -> SessionStore:
    """The store ``spec`` names (a store instance is used as it is)."""
    if isinstance(spec, SessionStore):
        return spec
    if not isinstance(spec, str):
        async_client_url = url_of_async_client(spec)
        if async_client_url is not None:
            return store_from(async_client_url, codec=codec, key_prefix=key_prefix)
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
    build = _BUILDERS.get(scheme)
    if build is None and ("+" in scheme or scheme in _SQL_SCHEMES):
        build = _sqlalchemy
    if build is None:
        raise ConfigurationError(f"{ACCEPTED}; got {spec!r}")
    return build(spec, codec, key_prefix)


def _client_kind(client: object) -> tuple[str, str]:
    """The SESSION_TYPE and setting a client object of a store's driver goes in (by
    the module of its class or a base class: no driver is imported to tell)."""
    for cls in type(client).__mro__:
        found = _CLIENT_SETTINGS.get(cls.__module__.split(".")[0])
        if found is not None:
            return found
    raise ConfigurationError(f"{ACCEPTED}; got a {type(client).__qualname__}")


def _configured(session_type: str, config: dict[str, Any], codec: ValueCodec,
                key_prefix: str) -> SessionStore:
    """The store the Flask extension builds from these settings, checked before its
    first operation as the extension checks it at start-up."""
    # A relative SQLite path stays relative to the working directory, as sqlite:/// does
    # (the Flask extension takes it in the app's instance folder).
    settings = Settings.from_mapping(
        {"SESSION_TYPE": session_type, "SESSION_KEY_PREFIX": key_prefix, **config},
        instance_path=os.curdir)
    try:
        factory = store_factory(session_type)
    except ConfigurationError as exc:  # the store's module or its driver did not import
        raise ConfigurationError(
            f"this store= needs a driver that is not installed ({exc.__cause__}): "
            f"pip install 'sessionkeeper[{session_type}]'") from exc
    try:
        return CheckedOnFirstUse(factory(settings, codec))
    except StoreUnavailable as exc:  # the filesystem store's directory cannot be made
        raise ConfigurationError(f"store=: {exc}") from exc


def _sentinel(url: str, codec: ValueCodec, key_prefix: str) -> SessionStore:
    """redis+sentinel://host:port[,host:port]/service: SESSION_REDIS_SENTINELS and
    SESSION_REDIS_MASTER_NAME of the Flask extension."""
    parts = urlsplit(url)
    service = unquote(parts.path).strip("/")
    if "@" in parts.netloc:  # (the URL is not echoed: it holds a password)
        raise ConfigurationError(
            "a redis+sentinel:// URL takes no password; for a password or a database "
            "other than 0 pass redis.sentinel.Sentinel([...]).master_for(service, "
            "password=..., db=...) as store=")
    if not parts.netloc or not service or "/" in service or parts.query:
        raise ConfigurationError(
            f"{url!r}: name the sentinels and the service they monitor, "
            "redis+sentinel://host:port[,host:port...]/service (for a password or a "
            "database other than 0 pass Sentinel([...]).master_for(service, ...) as store=)")
    return _configured("redis", {"SESSION_REDIS_SENTINELS": parts.netloc,
                                 "SESSION_REDIS_MASTER_NAME": service}, codec, key_prefix)


def _memcached(url: str, codec: ValueCodec, key_prefix: str) -> SessionStore:
    servers = [part for part in urlsplit(url).netloc.split(",") if part]
    if not servers:
        raise ConfigurationError(f"{url!r}: name the servers, memcached://host:port")
    return _configured("memcached", {"SESSION_MEMCACHED": servers}, codec, key_prefix)


def _file(url: str, codec: ValueCodec, key_prefix: str) -> SessionStore:
    parts = urlsplit(url)
    directory = unquote(parts.path)
    if parts.netloc not in ("", "localhost") or not directory.startswith("/"):
        raise ConfigurationError(f"{url!r}: give an absolute directory, file:///path")
    return _configured("filesystem", {"SESSION_FILE_DIR": directory}, codec, key_prefix)


def _sqlalchemy(url: str, codec: ValueCodec, key_prefix: str) -> SessionStore:
    """Any SQLAlchemy URL; ``?table=Name`` is the store's (SESSION_SQLALCHEMY_TABLE),
    taken out of the URL before the driver sees it."""
    try:
        import sqlalchemy as sa
    except ImportError as exc:
        raise ConfigurationError(f"an SQLAlchemy URL needs SQLAlchemy ({exc}): "
                                 "pip install 'sessionkeeper[sqlalchemy]'") from exc
    config: dict[str, Any] = {"SESSION_SQLALCHEMY": url}
    try:
        parsed = sync_driver_url(sa.make_url(url))
    except sa.exc.ArgumentError:
        return _configured("sqlalchemy", config, codec, key_prefix)  # which says why
    config["SESSION_SQLALCHEMY"] = parsed
    if "table" in parsed.query:
        config = {"SESSION_SQLALCHEMY": parsed.difference_update_query(["table"]),
                  "SESSION_SQLALCHEMY_TABLE": parsed.query["table"]}
    given = sa.make_url(url)
    if given.drivername != parsed.drivername:
        # An async driver: the store's own blocking twin of it, and its hot statements
        # natively on it (stores/sqlalchemy.py store_from_settings)
        config["SESSION_SQLALCHEMY"] = given.difference_update_query(["table"])
    return _configured("sqlalchemy", config, codec, key_prefix)


def _mongodb(url: str, codec: ValueCodec, key_prefix: str) -> SessionStore:
    config: dict[str, Any] = {"SESSION_MONGODB": url}
    # The database the URL names, else the Flask extension's (flask_session).
    database = unquote(urlsplit(url).path).strip("/")
    if database:
        config["SESSION_MONGODB_DB"] = database
    return _configured("mongodb", config, codec, key_prefix)


def _dynamodb(url: str, codec: ValueCodec, key_prefix: str) -> SessionStore:
    """dynamodb:// (AWS's endpoint, or AWS_ENDPOINT_URL_DYNAMODB) or dynamodb://host:port
    (a local server on http), ?table=Name&region=r; credentials as boto3 finds them."""
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"table", "region"})
    if unknown or parts.path.strip("/"):
        raise ConfigurationError(
            f"{url!r}: dynamodb:// takes a host:port and ?table=Name&region=r, "
            f"nothing else ({', '.join(unknown) or parts.path})")
    try:
        import boto3
        from botocore.exceptions import BotoCoreError

        from ..stores.dynamodb_client import DEFAULT_TIMEOUT, client_config
    except ImportError as exc:
        raise ConfigurationError(f"store={url!r} needs boto3 ({exc}): "
                                 "pip install 'sessionkeeper[dynamodb]'") from exc
    endpoint = f"http://{parts.netloc}" if parts.netloc else None
    region = query["region"][-1] if query.get("region") else None
    if region is None and endpoint is not None and boto3.session.Session().region_name is None:
        region = "us-east-1"  # a local server takes any region
    try:
        client = boto3.client("dynamodb", endpoint_url=endpoint, region_name=region,
                              config=client_config(DEFAULT_TIMEOUT))
    except BotoCoreError as exc:  # no region configured, say
        raise ConfigurationError(
            f"{url!r}: {exc} (set AWS_DEFAULT_REGION, or add ?region=)") from exc
    config: dict[str, Any] = {"SESSION_DYNAMODB": client}
    if query.get("table"):
        config["SESSION_DYNAMODB_TABLE"] = query["table"][-1]
    return _configured("dynamodb", config, codec, key_prefix)


_BUILDERS: dict[str, Callable[[str, ValueCodec, str], SessionStore]] = {
    "redis+sentinel": _sentinel,
    "memcached": _memcached,
    "file": _file,
    "mongodb": _mongodb,
    "mongodb+srv": _mongodb,
    "dynamodb": _dynamodb,
}


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
