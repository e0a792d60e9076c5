"""``store=``: a URL or a store instance, made into the core's server-side backend.

Nothing here talks to the store: a URL builds a client that connects on first use, so
an app starts (and serves requests that carry no session) while its store is down.
"""

from __future__ import annotations

import hashlib
from urllib.parse import unquote, urlsplit

from ..breaker import CircuitBreaker, GuardedStore
from ..errors import ConfigurationError
from ..ids import SessionIds
from ..policy import ExpiryPolicy
from ..serialization import ValueCodec
from ..server_side import DEFAULT_ROTATION_GRACE, ServerSideSessions
from ..stores.base import SessionStore
from .session import Session

#: the record's lifetime when ``max_age=None`` (a browser-session cookie): Starlette's default
BROWSER_SESSION_LIFETIME = 14 * 24 * 60 * 60
ACCEPTED = ("store= takes 'memory://', 'sqlite:///relative/path.db', "
            "'sqlite:////absolute/path.db', 'redis://host:port/db' (rediss://, unix:// too) "
            "or a sessionkeeper SessionStore instance")


def store_from(spec: str | SessionStore, *, codec: ValueCodec, key_prefix: str) -> SessionStore:
    """The store ``spec`` names (a store instance is used as it is)."""
    if isinstance(spec, SessionStore):
        return spec
    if not isinstance(spec, str):
        raise ConfigurationError(f"{ACCEPTED}; got a {type(spec).__qualname__}")
    scheme, sep, _ = spec.partition("://")
    scheme = scheme.lower() if sep else ""
    if scheme == "memory":
        from ..stores.memory import MemoryStore

        return MemoryStore()
    if scheme == "sqlite":
        return _sqlite(spec, codec, key_prefix)
    if scheme in ("redis", "rediss", "unix"):
        return _redis(spec, key_prefix)
    raise ConfigurationError(f"{ACCEPTED}; got {spec!r}")


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
