"""Authenticated encryption of cookie sessions (AES-256-GCM, random 96-bit nonce)."""

from __future__ import annotations

import base64
import os
import re
import struct

from .errors import ConfigurationError
from .signing import KeyRing

PREFIX = "~"  # marks encrypted cookies; never produced by itsdangerous' alphabet
_VERSION = b"\x01"
# What encrypt() emits after the prefix: b64decode alone would skip any other character,
# so a cookie with junk added would still open.
_BODY = re.compile(r"[A-Za-z0-9_-]*")


class CookieCipher:
    """Encrypts with the current key; decrypts with any key of the ring (rotation)."""

    def __init__(self, ring: KeyRing) -> None:
        try:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigurationError(
                "SESSION_COOKIE_ENCRYPT needs the 'cryptography' package: "
                "pip install 'sessionkeeper[crypto]'"
            ) from exc
        self._ciphers = [AESGCM(key) for key in ring.derive("cookie-encryption")]

    def encrypt(self, payload: bytes, issued_at: int) -> str:
        nonce = os.urandom(12)
        plain = struct.pack(">Q", issued_at) + payload
        sealed = self._ciphers[0].encrypt(nonce, plain, _VERSION)
        return PREFIX + base64.urlsafe_b64encode(_VERSION + nonce + sealed).decode().rstrip("=")

    def decrypt(self, token: str) -> tuple[bytes, int] | None:
        """(payload, issued_at), or None for anything not sealed by a key of the ring."""
        from cryptography.exceptions import InvalidTag

        body = token[len(PREFIX):]
        if not token.startswith(PREFIX) or _BODY.fullmatch(body) is None:
            return None
        try:
            blob = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except ValueError:
            return None
        if len(blob) < 1 + 12 + 16 + 8 or blob[:1] != _VERSION:
            return None
        nonce, sealed = blob[1:13], blob[13:]
        for cipher in self._ciphers:
            try:
                plain = cipher.decrypt(nonce, sealed, _VERSION)
            except InvalidTag:
                continue
            (issued_at,) = struct.unpack(">Q", plain[:8])
            return plain[8:], issued_at
        return None
