"""Session ids: generation, format checks and the store keys derived from them."""

from __future__ import annotations

import hashlib
import math
import re
import secrets

from .errors import ConfigurationError

MIN_ID_BYTES = 16  # 128 bits, the OWASP floor for session id entropy


class SessionIds:
    """Makes and recognises session ids of one length (in random bytes)."""

    def __init__(self, length: int = 32) -> None:
        if length < MIN_ID_BYTES:
            raise ConfigurationError(
                f"SESSION_ID_LENGTH={length} gives fewer than {MIN_ID_BYTES * 8} bits; "
                f"set it to {MIN_ID_BYTES} or more (default 32)"
            )
        self.length = length
        chars = math.ceil(length * 4 / 3)
        self._pattern = re.compile(rf"[A-Za-z0-9_-]{{{chars}}}")

    def new(self) -> str:
        return secrets.token_urlsafe(self.length)

    def is_well_formed(self, sid: str) -> bool:
        """True when ``sid`` could have come from :meth:`new` (checked before any store look-up)."""
        return self._pattern.fullmatch(sid) is not None


def storage_key(sid: str) -> str:
    """The store key of a session: a hash, so a leaked store does not leak live cookies."""
    return hashlib.sha256(sid.encode("ascii")).hexdigest()
