"""The demo's configuration: Flask-Session's config keys, read from environment variables.

Every key keeps its Flask-Session meaning and default; the environment only spells the
values as text (``SESSION_USE_SIGNER=true``, ``PERMANENT_SESSION_LIFETIME=7200``).
Server settings (``SESSION_REDIS``, ``SESSION_MONGODB`` ...) are URLs, which the stores
accept in place of client objects and connect with their own timeouts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sessionkeeper import ConfigurationError

#: Read as text: these, and every SESSION_* variable no list below claims
#: (SESSION_TYPE, SESSION_KEY_PREFIX, SESSION_REDIS, SESSION_SQLITE_PATH ...).
#: DEMO_USERS_PATH is the demo's own: where changed passwords are kept.
TEXT_KEYS = ("SECRET_KEY", "SQLALCHEMY_DATABASE_URI", "DEMO_USERS_PATH")
FLAG_KEYS = (
    "SESSION_PERMANENT",
    "SESSION_USE_SIGNER",
    "SESSION_COOKIE_ENCRYPT",
    "SESSION_COOKIE_SECURE",
    "SESSION_COOKIE_HTTPONLY",
    "SESSION_REFRESH_EACH_REQUEST",
)
#: Seconds: these, and every SESSION_*_TIMEOUT (SESSION_REDIS_TIMEOUT ...).
SECONDS_KEYS = ("PERMANENT_SESSION_LIFETIME",)
INTEGER_KEYS = ("SESSION_CLEANUP_N_REQUESTS", "SESSION_ID_LENGTH")
FRACTION_KEYS = ("SESSION_REFRESH_FRACTION",)
#: File permissions in octal, as chmod spells them ("600").
OCTAL_KEYS = ("SESSION_FILE_MODE",)
#: Several servers, comma-separated ("10.0.0.1:11211,10.0.0.2:11211").
ADDRESS_LIST_KEYS = ("SESSION_MEMCACHED",)
#: Names, comma-separated ("user_agent,ip").
NAME_LIST_KEYS = ("SESSION_DEVICE_INFO",)

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

#: The tutorials' sessions end with the browser unless a view sets session.permanent,
#: so the demo starts sessions non-permanent (Flask-Session's default is permanent).
DEMO_DEFAULTS: dict[str, Any] = {"SESSION_PERMANENT": False}


def _bad(name: str, raw: str, expected: str) -> ConfigurationError:
    return ConfigurationError(f"environment variable {name}={raw!r} must be {expected}")


def _flag(name: str, raw: str) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise _bad(name, raw, "true or false (1/0, yes/no, on/off)")


def _integer(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise _bad(name, raw, "a whole number") from None


def _number(name: str, raw: str) -> int | float:
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        return float(raw)
    except ValueError:
        raise _bad(name, raw, "a number of seconds") from None


def _octal(name: str, raw: str) -> int:
    try:
        return int(raw, 8)
    except ValueError:
        raise _bad(name, raw, "an octal file mode such as 600") from None


def _text(name: str, raw: str) -> str:
    return raw


def _addresses(name: str, raw: str) -> str | list[str]:
    parts = [part.strip() for part in raw.split(",") if part.strip()]
    return parts if len(parts) > 1 else raw


def _names(name: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


Parser = Callable[[str, str], Any]
_PARSERS: dict[str, Parser] = {
    **dict.fromkeys(TEXT_KEYS, _text),
    **dict.fromkeys(FLAG_KEYS, _flag),
    **dict.fromkeys(SECONDS_KEYS, _number),
    **dict.fromkeys(INTEGER_KEYS, _integer),
    **dict.fromkeys(FRACTION_KEYS, _number),
    **dict.fromkeys(OCTAL_KEYS, _octal),
    **dict.fromkeys(ADDRESS_LIST_KEYS, _addresses),
    **dict.fromkeys(NAME_LIST_KEYS, _names),
}


def _parser(name: str) -> Parser | None:
    if name in _PARSERS:
        return _PARSERS[name]
    if name.startswith("SESSION_"):
        return _number if name.endswith("_TIMEOUT") else _text
    return None


def config_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """The app config the environment asks for (empty variables count as unset).

    Raises :class:`ConfigurationError` naming the variable when a value cannot be read.
    """
    config: dict[str, Any] = dict(DEMO_DEFAULTS)
    for name, value in environ.items():
        parse = _parser(name)
        raw = value.strip()
        if parse is not None and raw:
            config[name] = parse(name, raw)
    return config
