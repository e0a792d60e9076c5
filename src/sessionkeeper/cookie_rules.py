"""Start-up checks of the session cookie's attributes, and the secure defaults.

Browsers silently drop cookies that break the rules of their name prefix
(RFC 6265bis): a ``__Host-`` cookie must be ``Secure``, have ``Path=/`` and no
``Domain``; a ``__Secure-`` cookie must be ``Secure``. A dropped session cookie looks
like sessions that never stick, so the problems are reported when the app starts.
"""

from __future__ import annotations

import warnings

from .backend import logger
from .errors import ConfigurationError

DEFAULT_SAMESITE = "Lax"
_SAMESITE_VALUES = ("Lax", "Strict", "None")


class InsecureCookieWarning(UserWarning):
    """The session cookie's settings make browsers drop it or send it where they should not."""


def samesite_or_default(value: object, default: str | None = DEFAULT_SAMESITE) -> str | None:
    """SESSION_COOKIE_SAMESITE, ``default`` when unset (Flask leaves it unset)."""
    if value is None or value is False:
        return default
    text = str(value).title()
    if text not in _SAMESITE_VALUES:
        raise ConfigurationError(f"SESSION_COOKIE_SAMESITE must be one of "
                                 f"{', '.join(_SAMESITE_VALUES)}, not {value!r}")
    return text


def check_cookie_attributes(name: str, *, domain: str | None, path: str | None,
                            secure: bool, samesite: str | None) -> None:
    """Raise ConfigurationError for a cookie browsers would refuse; warn when one would
    be refused on plain HTTP or sent more widely than intended."""
    lowered = name.lower()
    if lowered.startswith("__host-"):
        if domain:
            raise ConfigurationError(
                f"the session cookie {name!r} has the __Host- prefix, which forbids a Domain "
                f"attribute: unset SESSION_COOKIE_DOMAIN (now {domain!r}) or rename the cookie")
        if (path or "/") != "/":
            raise ConfigurationError(
                f"the session cookie {name!r} has the __Host- prefix, which requires Path=/: "
                f"set SESSION_COOKIE_PATH to '/' (now {path!r}) or rename the cookie")
    if lowered.startswith(("__host-", "__secure-")) and not secure:
        _warn(f"the session cookie {name!r} has a {name[:name.index('-') + 1]} prefix but "
              "SESSION_COOKIE_SECURE is False: browsers drop such cookies, so sessions will "
              "not stick. Set SESSION_COOKIE_SECURE = True (and serve the app over HTTPS)")
    if samesite == "None" and not secure:
        _warn("SESSION_COOKIE_SAMESITE='None' without SESSION_COOKIE_SECURE: browsers drop "
              "such cookies. Set SESSION_COOKIE_SECURE = True")


def _warn(message: str) -> None:
    logger.warning("%s", message)
    warnings.warn(message, InsecureCookieWarning, stacklevel=4)
