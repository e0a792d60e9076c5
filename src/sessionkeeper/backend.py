"""What every session backend offers an integration (Flask, ASGI): open and save."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .ids import storage_key
from .model import Session

logger = logging.getLogger("sessionkeeper")


@dataclass(slots=True)
class CookieUpdate:
    """What the response must do with the session cookie. Never changed once made
    (not frozen only because a frozen dataclass costs twice as much to build, and every
    write builds one)."""

    value: str | None  # None: delete the cookie
    max_age: int | None = None  # None with a value: a browser-session cookie

    @property
    def delete(self) -> bool:
        return self.value is None


DELETE_COOKIE = CookieUpdate(None)

#: a request's cookie value, or a callable that reads it when the session is first used
TokenSource = str | None | Callable[[], str | None]


def resolve_token(token: TokenSource) -> str | None:
    return token() if callable(token) else token


class SessionBackend(Protocol):
    def open(self, token: TokenSource) -> Session:
        """A lazy session for the request's cookie value; must not do any I/O."""
        ...

    def save(self, session: Session) -> CookieUpdate | None:
        """Persist what the request changed; None when the cookie stays as it is."""
        ...


class LogIds:
    """Salted hashes of session ids for log lines and signals; ids never reach logs."""

    def __init__(self, salt: bytes) -> None:
        self._salt = salt

    def __call__(self, sid: str | None) -> str:
        if not sid:
            return "-"
        return self.of_digest(storage_key(sid))

    def of_digest(self, digest: str) -> str:
        """The log id from the id's store digest, so events known only by store key
        (a revocation) carry the same log id as the rest of that session's life."""
        return hmac.new(self._salt, digest.encode(), hashlib.sha256).hexdigest()[:12]
