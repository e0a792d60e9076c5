"""Builds the backend a :class:`Settings` describes: store, ids, signer, policy."""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from dataclasses import replace

from .backend import SessionBackend
from .breaker import CircuitBreaker, GuardedStore
from .client_side import CookieSessions
from .errors import ConfigurationError, StoreUnavailable
from .ids import SessionIds
from .model import Session
from .policy import ExpiryPolicy
from .revocation import RevocationList
from .serialization import ValueCodec
from .server_side import ServerSideSessions
from .settings import Settings
from .signing import IdSigner, KeyRing
from .stores.base import SessionStore

StoreFactory = Callable[[Settings, ValueCodec], SessionStore]

#: SESSION_TYPE -> "module:function" building the store; imported only when used, so
#: a store's driver is needed only by apps that use that store.
STORE_FACTORIES: dict[str, str] = {
    "sqlite": "sessionkeeper.factory:sqlite_store",
    "filesystem": "sessionkeeper.stores.filesystem:store_from_settings",
    "memory": "sessionkeeper.factory:memory_store",
    "redis": "sessionkeeper.stores.redis:store_from_settings",
    "memcached": "sessionkeeper.stores.memcached:store_from_settings",
    "mongodb": "sessionkeeper.stores.mongodb:store_from_settings",
    "sqlalchemy": "sessionkeeper.stores.sqlalchemy:store_from_settings",
    "cachelib": "sessionkeeper.stores.cachelib:store_from_settings",
    "dynamodb": "sessionkeeper.stores.dynamodb:store_from_settings",
}


def sqlite_store(settings: Settings, codec: ValueCodec) -> SessionStore:
    from .stores.sqlite import SQLiteStore

    path = settings.path_setting("SESSION_SQLITE_PATH", "sessions.sqlite3")
    table = settings.config.get("SESSION_SQLITE_TABLE", "sessions")
    if not isinstance(table, str) or not table.isidentifier():
        raise ConfigurationError(
            f"SESSION_SQLITE_TABLE must be a plain table name (letters, digits, _), not {table!r}")
    return SQLiteStore(path, table=table, codec=codec, key_prefix=settings.key_prefix)


def memory_store(settings: Settings, codec: ValueCodec) -> SessionStore:
    from .stores.memory import MemoryStore

    return MemoryStore()


def store_factory(session_type: str) -> StoreFactory:
    """The function that builds SESSION_TYPE's store from settings (its module imported;
    ConfigurationError naming the pip extra when its driver is missing)."""
    target = STORE_FACTORIES[session_type]
    module_name, _, func = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"SESSION_TYPE={session_type!r} needs a driver that is not installed ({exc}): "
            f"pip install 'sessionkeeper[{session_type}]'"
        ) from exc
    factory: StoreFactory = getattr(module, func)
    return factory


def build_store(settings: Settings, codec: ValueCodec) -> SessionStore:
    """The configured store, checked to be reachable (start-up fails clearly otherwise)."""
    factory = store_factory(settings.session_type)
    try:
        # Some stores reach their server or directory while being built, others in check().
        store = factory(settings, codec)
        store.check()
    except StoreUnavailable as exc:
        raise ConfigurationError(
            f"{exc}. Start the server or fix its SESSION_* setting "
            f"(SESSION_TYPE={settings.session_type!r}); see docs/stores/"
        ) from exc
    return store


def build_revocations(settings: Settings, policy: ExpiryPolicy) -> RevocationList:
    """Where cookie sessions keep revocations of bound users: SESSION_REVOCATION_STORE,
    else the embedded SQLite file, opened on first use (apps that never bind a user to
    a cookie session never touch it)."""
    codec = ValueCodec(settings.serialization_format)  # type: ignore[arg-type]
    name = settings.revocation_store
    if name is None:
        store = sqlite_store(settings, codec)
    else:
        try:
            store = build_store(replace(settings, session_type=name), codec)
        except ConfigurationError as exc:
            raise ConfigurationError(f"SESSION_REVOCATION_STORE={name!r}: {exc}") from exc
    return RevocationList(store, codec=codec, key_prefix=settings.key_prefix,
                          window=policy.window)


def build_backend(settings: Settings, session_class: type[Session] = Session) -> SessionBackend:
    policy = ExpiryPolicy(
        lifetime=settings.lifetime,
        idle_timeout=settings.idle_timeout,
        absolute_timeout=settings.absolute_timeout,
        refresh_each_request=settings.refresh_each_request,
        refresh_fraction=settings.refresh_fraction,
    )
    ring = (KeyRing(settings.secret_key, settings.secret_key_fallbacks)
            if settings.secret_key else None)
    if settings.session_type == "cookie":
        assert ring is not None  # Settings checked it
        return CookieSessions(ring, policy=policy, cookie_name=settings.cookie_name,
                              permanent=settings.permanent, encrypt=settings.cookie_encrypt,
                              session_class=session_class,
                              revocations=build_revocations(settings, policy))
    codec = ValueCodec(settings.serialization_format)  # type: ignore[arg-type]
    store = build_store(settings, codec)
    if settings.breaker_open:
        store = GuardedStore(store, CircuitBreaker(store.name, settings.breaker_open))
    log_salt = (hashlib.sha256(b"sessionkeeper-log:" + ring.current).digest()
                if ring else None)
    return ServerSideSessions(
        store, policy=policy, codec=codec, ids=SessionIds(settings.id_length),
        signer=IdSigner(ring) if (settings.use_signer and ring) else None,
        key_prefix=settings.key_prefix, permanent=settings.permanent,
        log_salt=log_salt, session_class=session_class,
        rotation_grace=settings.rotation_grace,
    )
