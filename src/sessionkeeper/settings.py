"""Reading session configuration (Flask-Session's keys and meanings) from a mapping.

Works on a Flask ``app.config`` or any dict, so every integration reads the same keys.
Everything is checked here, at start-up, with messages that say what to set.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .errors import ConfigurationError

DEFAULT_LIFETIME = 31 * 24 * 3600  # Flask's PERMANENT_SESSION_LIFETIME default: 31 days

SERVER_TYPES = ("sqlite", "filesystem", "memory", "redis", "memcached", "mongodb", "sqlalchemy",
                "cachelib", "dynamodb")
SESSION_TYPES = (*SERVER_TYPES, "cookie")
_NOT_OFFERED = {
    "null": "remove SESSION_TYPE (the embedded sqlite store) or use 'cookie'",
}
_SECRET_HINT = (
    "set app.config['SECRET_KEY'] to a long random value, e.g. the output of "
    "python -c 'import secrets; print(secrets.token_hex())'"
)


def seconds(value: Any, name: str) -> float:
    """A duration given as seconds (int/float) or a timedelta."""
    if isinstance(value, timedelta):
        result = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        result = float(value)
    else:
        raise ConfigurationError(f"{name} must be a number of seconds or a timedelta, "
                                 f"not {value!r}")
    if result <= 0:
        raise ConfigurationError(f"{name} must be positive, not {value!r}")
    return result


def _keep_expired(config: Mapping[str, Any]) -> float:
    value = config.get("SESSION_KEEP_EXPIRED")
    if value is None or value == 0:
        return 0.0
    return seconds(value, "SESSION_KEEP_EXPIRED")


def _seconds_or_zero(config: Mapping[str, Any], name: str, default: float) -> float:
    """A duration where 0 turns the feature off."""
    value = config.get(name, default)
    if value is None or value == 0:
        return 0.0
    return seconds(value, name)


def _optional_seconds(config: Mapping[str, Any], name: str) -> float | None:
    value = config.get(name)
    return None if value is None else seconds(value, name)


def _flag(config: Mapping[str, Any], name: str, default: bool) -> bool:
    value = config.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, not {value!r}")
    return value


DEVICE_FIELDS = ("user_agent", "ip")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110)


def _device_info(config: Mapping[str, Any]) -> tuple[str, ...]:
    return device_fields(config.get("SESSION_DEVICE_INFO", ("user_agent",)))


def device_fields(value: object, name: str = "SESSION_DEVICE_INFO") -> tuple[str, ...]:
    """What to record of the device at login (``name`` is the setting, for messages)."""
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset):
        raise ConfigurationError(f"{name} must be a list of {DEVICE_FIELDS}, "
                                 f"e.g. ('user_agent', 'ip'), not {value!r}")
    unknown = [field for field in value if field not in DEVICE_FIELDS]
    if unknown:
        raise ConfigurationError(f"{name}: unknown {unknown!r}; "
                                 f"choose from {DEVICE_FIELDS}")
    return tuple(field for field in DEVICE_FIELDS if field in value)


def _header_name(config: Mapping[str, Any]) -> str | None:
    value = config.get("SESSION_HEADER_NAME")
    if value is None:
        return None
    if (not isinstance(value, str) or not _HEADER_NAME.fullmatch(value)
            or value.lower() in ("cookie", "set-cookie")):
        raise ConfigurationError(f"SESSION_HEADER_NAME must be a header name such as "
                                 f"'X-Session-Token', not {value!r}")
    return value


def _revocation_store(config: Mapping[str, Any]) -> str | None:
    value = config.get("SESSION_REVOCATION_STORE")
    if value is None:
        return None
    if not isinstance(value, str) or value.lower() not in SERVER_TYPES:
        raise ConfigurationError(f"SESSION_REVOCATION_STORE must be one of "
                                 f"{', '.join(SERVER_TYPES)}, not {value!r}")
    return value.lower()


@dataclass
class Settings:
    """Everything the core needs to build a session backend."""

    session_type: str = "sqlite"
    permanent: bool = True
    use_signer: bool = False
    key_prefix: str = "session:"
    id_length: int = 32
    serialization_format: str = "msgpack"
    cleanup_n_requests: int | None = None
    lifetime: float = DEFAULT_LIFETIME
    idle_timeout: float | None = None
    absolute_timeout: float | None = None
    refresh_each_request: bool = True
    refresh_fraction: float = 0.1
    cookie_name: str = "session"
    cookie_encrypt: bool = False
    secret_key: str | bytes | None = None
    secret_key_fallbacks: list[str | bytes] = field(default_factory=list)
    instance_path: str = "instance"
    #: what login records about the device: "user_agent" and/or "ip"
    device_info: tuple[str, ...] = ("user_agent",)
    #: request/response header that carries the session token for API clients
    header_name: str | None = None
    #: cookie sessions: the store type keeping per-user revocation stamps (None: sqlite)
    revocation_store: str | None = None
    #: seconds a store with its own expiry (Redis, memcached) keeps a record past it, so
    #: that a returning user's session is reported as expired rather than unknown
    keep_expired: float = 0.0
    #: seconds an id rotated by a login keeps pointing at the new session (0: none)
    rotation_grace: float = 30.0
    #: seconds session operations fail fast after a store timed out (0: no breaker)
    breaker_open: float = 5.0
    #: the whole mapping, for store-specific keys (SESSION_REDIS, SESSION_FILE_DIR, ...)
    config: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any], *, instance_path: str = "instance",
                     ) -> Settings:
        session_type = config.get("SESSION_TYPE") or "sqlite"
        if not isinstance(session_type, str) or session_type.lower() not in SESSION_TYPES:
            hint = _NOT_OFFERED.get(str(session_type).lower())
            raise ConfigurationError(
                f"SESSION_TYPE={session_type!r} is not supported: "
                + (hint if hint else f"use one of {', '.join(SESSION_TYPES)} "
                   "(unset means the embedded 'sqlite' store)")
            )
        fmt = config.get("SESSION_SERIALIZATION_FORMAT") or "msgpack"
        if fmt not in ("msgpack", "json"):
            raise ConfigurationError(
                f"SESSION_SERIALIZATION_FORMAT={fmt!r} is not supported: use 'msgpack' or 'json'"
            )
        cleanup = config.get("SESSION_CLEANUP_N_REQUESTS")
        if cleanup is not None and (not isinstance(cleanup, int) or cleanup < 1):
            raise ConfigurationError("SESSION_CLEANUP_N_REQUESTS must be a positive integer "
                                     f"or None, not {cleanup!r}")
        id_length = config.get("SESSION_ID_LENGTH", 32)
        if not isinstance(id_length, int) or isinstance(id_length, bool):
            raise ConfigurationError(f"SESSION_ID_LENGTH must be an integer, not {id_length!r}")
        # Cookie sessions refresh as Flask's do (on every request); server sessions at
        # most once per tenth of their window, so reads almost never cost a store write.
        fraction = config.get("SESSION_REFRESH_FRACTION",
                              0.0 if str(session_type).lower() == "cookie" else 0.1)
        if not isinstance(fraction, int | float) or not 0 <= fraction <= 1:
            raise ConfigurationError(
                f"SESSION_REFRESH_FRACTION must be between 0 and 1, not {fraction!r}")
        fallbacks = config.get("SECRET_KEY_FALLBACKS") or []
        if isinstance(fallbacks, str | bytes):
            raise ConfigurationError("SECRET_KEY_FALLBACKS must be a list of old keys")
        settings = cls(
            session_type=session_type.lower(),
            # Flask-Session's default is permanent; cookie sessions keep Flask's (not).
            permanent=_flag(config, "SESSION_PERMANENT", session_type.lower() != "cookie"),
            use_signer=_flag(config, "SESSION_USE_SIGNER", False),
            key_prefix=str(config.get("SESSION_KEY_PREFIX", "session:")),
            id_length=id_length,
            serialization_format=fmt,
            cleanup_n_requests=cleanup,
            lifetime=seconds(config.get("PERMANENT_SESSION_LIFETIME", DEFAULT_LIFETIME),
                             "PERMANENT_SESSION_LIFETIME"),
            idle_timeout=_optional_seconds(config, "SESSION_IDLE_TIMEOUT"),
            absolute_timeout=_optional_seconds(config, "SESSION_ABSOLUTE_TIMEOUT"),
            refresh_each_request=_flag(config, "SESSION_REFRESH_EACH_REQUEST", True),
            refresh_fraction=float(fraction),
            cookie_name=str(config.get("SESSION_COOKIE_NAME") or "session"),
            cookie_encrypt=_flag(config, "SESSION_COOKIE_ENCRYPT", False),
            secret_key=config.get("SECRET_KEY"),
            secret_key_fallbacks=list(fallbacks),
            instance_path=instance_path,
            device_info=_device_info(config),
            header_name=_header_name(config),
            revocation_store=_revocation_store(config),
            keep_expired=_keep_expired(config),
            rotation_grace=_seconds_or_zero(config, "SESSION_ROTATION_GRACE", 30.0),
            breaker_open=_seconds_or_zero(config, "SESSION_BREAKER_SECONDS", 5.0),
            config=config,
        )
        settings.require_secret_where_needed()
        return settings

    def require_secret_where_needed(self) -> None:
        needs = []
        if self.session_type == "cookie":
            needs.append("SESSION_TYPE='cookie' signs the session cookie")
        if self.use_signer:
            needs.append("SESSION_USE_SIGNER=True signs the session id")
        if self.cookie_encrypt:
            needs.append("SESSION_COOKIE_ENCRYPT=True encrypts the session cookie")
        if needs and not self.secret_key:
            raise ConfigurationError(f"{'; '.join(needs)} and needs SECRET_KEY: {_SECRET_HINT}")

    def path_setting(self, name: str, default_name: str) -> str:
        """A filesystem path from the config, defaulting inside the instance folder."""
        value = self.config.get(name)
        if value:
            return os.fspath(value)
        return os.path.join(self.instance_path, default_name)
