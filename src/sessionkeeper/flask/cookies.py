"""Signed standalone cookies for Flask (like Django's set/get_signed_cookie)."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, request
from itsdangerous import BadSignature

from ..backend import logger
from ..errors import ConfigurationError
from ..signing import CookieSigner, KeyRing


def _signer() -> CookieSigner:
    config = current_app.config
    if not config.get("SECRET_KEY"):
        raise ConfigurationError("signed cookies need SECRET_KEY: set app.config['SECRET_KEY']")
    return CookieSigner(KeyRing(config["SECRET_KEY"], config.get("SECRET_KEY_FALLBACKS") or []))


def set_signed_cookie(response: Response, key: str, value: str, *, salt: str = "",
                      **options: Any) -> None:
    """``response.set_cookie`` with a signature: the browser can read it but not forge it.

    ``options`` are those of ``set_cookie`` (``max_age``, ``expires``, ``httponly``...).
    """
    response.set_cookie(key, _signer().sign(key, value, salt), **options)


def get_signed_cookie(key: str, default: str | None = None, *, salt: str = "",
                      max_age: float | None = None) -> str | None:
    """The value of a cookie set by :func:`set_signed_cookie`, or ``default`` when it is
    missing, tampered with, signed for another cookie or salt, or older than ``max_age``."""
    signed = request.cookies.get(key)
    if signed is None:
        return default
    try:
        return _signer().unsign(key, signed, salt, max_age)
    except BadSignature as exc:
        logger.info("signed cookie %r rejected (%s)", key, type(exc).__name__)
        return default
