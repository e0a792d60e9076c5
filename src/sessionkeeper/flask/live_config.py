"""Flask's session settings read the way Flask reads them: when a request is answered.

Flask (and Flask-Session) look up the cookie attributes, the secret keys and the
lifetime in ``app.config`` on every request, so settings changed after ``Session(app)``
(app factories, tests) apply. Re-reading and re-checking them all per request would cost
more than the session itself; instead a request compares the few values they depend on
with those last seen and re-resolves only when one changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from operator import itemgetter
from typing import Any

from flask import Flask

from ..cookie_rules import DEFAULT_SAMESITE, check_cookie_attributes, samesite_or_default
from ..settings import DEFAULT_LIFETIME, seconds
from ..signing import KeyRing
from .set_cookie import SetCookie

#: the app.config keys whose change re-resolves the session settings
WATCHED_KEYS = (
    "SECRET_KEY", "SECRET_KEY_FALLBACKS", "SESSION_COOKIE_NAME", "SESSION_COOKIE_DOMAIN",
    "SESSION_COOKIE_PATH", "APPLICATION_ROOT", "SESSION_COOKIE_SECURE",
    "SESSION_COOKIE_HTTPONLY", "SESSION_COOKIE_SAMESITE", "SESSION_COOKIE_PARTITIONED",
    "PERMANENT_SESSION_LIFETIME", "SESSION_REFRESH_EACH_REQUEST",
)
_watched = itemgetter(*WATCHED_KEYS)


@dataclass(frozen=True)
class CookieSettings:
    """What the response's Set-Cookie needs, resolved from app.config."""

    name: str
    options: dict[str, Any]
    #: its Set-Cookie header, attributes formatted once
    set_cookie: SetCookie


class LiveConfig:
    """Re-resolves the session settings when the app's config changed.

    ``apply_keys`` receives the new key ring (None without a secret key) when the keys
    changed; ``apply_lifetime`` the lifetime and SESSION_REFRESH_EACH_REQUEST when
    those did. ``unset_samesite`` is what an unset SESSION_COOKIE_SAMESITE sends: "Lax"
    for sessionkeeper's own cookies, None (no attribute) where the session is Flask's
    cookie, which sends none.
    """

    def __init__(self, interface: Any, apply_keys: Callable[[KeyRing | None], None],
                 apply_lifetime: Callable[[float, bool], None],
                 unset_samesite: str | None = DEFAULT_SAMESITE) -> None:
        self._interface = interface
        self._unset_samesite = unset_samesite
        self._apply_keys = apply_keys
        self._apply_lifetime = apply_lifetime
        self._seen: tuple[Any, ...] | None = None
        self.cookie: CookieSettings | None = None

    def refresh(self, app: Flask) -> CookieSettings:
        try:
            seen = _watched(app.config)  # one C call
        except KeyError:  # an older Flask without some of these keys
            seen = tuple(map(app.config.get, WATCHED_KEYS))
        if seen == self._seen:
            return self.cookie  # type: ignore[return-value]  # set with _seen
        return self._changed(app, seen)

    def _changed(self, app: Flask, seen: tuple[Any, ...]) -> CookieSettings:
        config, previous = app.config, self._seen
        cookie = self._cookie_settings(app)
        if previous is None or previous[:2] != seen[:2]:
            secret = config.get("SECRET_KEY")
            fallbacks = config.get("SECRET_KEY_FALLBACKS") or []
            self._apply_keys(KeyRing(secret, list(fallbacks)) if secret else None)
        if previous is None or previous[-2:] != seen[-2:]:
            lifetime = seconds(config.get("PERMANENT_SESSION_LIFETIME", DEFAULT_LIFETIME),
                               "PERMANENT_SESSION_LIFETIME")
            refresh = config.get("SESSION_REFRESH_EACH_REQUEST", True)
            self._apply_lifetime(lifetime, refresh is None or bool(refresh))
        self.cookie, self._seen = cookie, seen
        return cookie

    def _cookie_settings(self, app: Flask) -> CookieSettings:
        interface = self._interface
        name = interface.get_cookie_name(app)
        domain, path = interface.get_cookie_domain(app), interface.get_cookie_path(app)
        secure = interface.get_cookie_secure(app)
        samesite = samesite_or_default(interface.get_cookie_samesite(app),
                                       self._unset_samesite)
        check_cookie_attributes(name, domain=domain, path=path, secure=secure,
                                samesite=samesite)
        options = {
            "domain": domain,
            "path": path,
            "secure": secure,
            "httponly": interface.get_cookie_httponly(app),
            "samesite": samesite,
            "partitioned": interface.get_cookie_partitioned(app),
        }
        return CookieSettings(name, options, SetCookie(name, options))


def with_lifetime(policy: Any, lifetime: float, refresh_each_request: bool) -> Any:
    """``policy`` with Flask's lifetime settings as they are now."""
    if (policy.lifetime, policy.refresh_each_request) == (lifetime, refresh_each_request):
        return policy
    return replace(policy, lifetime=lifetime, refresh_each_request=refresh_each_request)
