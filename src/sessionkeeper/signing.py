"""Secret keys, signed session ids and signed standalone cookies (itsdangerous)."""

from __future__ import annotations

import binascii
import hashlib
import hmac
import zlib
from collections.abc import Iterable
from typing import Any

from itsdangerous import BadSignature, Signer, TimestampSigner

from .errors import ConfigurationError

Secret = str | bytes


def _as_bytes(key: Secret) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else bytes(key)


class KeyRing:
    """The current secret key plus older ones still accepted (SECRET_KEY_FALLBACKS).

    New signatures always use the current key; any key in the ring verifies, so
    rotating keys never logs users out.
    """

    def __init__(self, current: Secret, fallbacks: Iterable[Secret] = ()) -> None:
        if not current:
            raise ConfigurationError("SECRET_KEY is empty")
        self.current = _as_bytes(current)
        self.fallbacks = [_as_bytes(k) for k in fallbacks if k]

    @property
    def oldest_first(self) -> list[bytes]:
        """The order itsdangerous wants: the signing key last."""
        return [*self.fallbacks, self.current]

    @property
    def newest_first(self) -> list[bytes]:
        return [self.current, *reversed(self.fallbacks)]

    def derive(self, purpose: str) -> list[bytes]:
        """32-byte subkeys for ``purpose``, newest first, so one secret never serves two uses."""
        label = b"sessionkeeper:" + purpose.encode("utf-8")
        return [hmac.new(key, label, hashlib.sha256).digest() for key in self.newest_first]


_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64encode(data: bytes) -> bytes:
    """itsdangerous' unpadded URL-safe base64."""
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).rstrip(b"=")


def _b64decode(data: bytes) -> bytes:
    """itsdangerous' unpadded URL-safe base64 (as lenient as ``urlsafe_b64decode``);
    ValueError when it is not base64."""
    try:
        return binascii.a2b_base64(data.translate(_FROM_URLSAFE) + b"=" * (-len(data) % 4))
    except binascii.Error as exc:
        raise ValueError("invalid base64") from exc


class TimedCookieReader:
    """Verifies, opens and re-stamps values of itsdangerous' ``URLSafeTimedSerializer``
    format (``payload.timestamp.signature``, HMAC key derivation), the format of Flask's
    session cookie. It reads exactly what itsdangerous accepts, but derives the keys once per key
    ring instead of on every request: a request reading its cookie session pays one HMAC.
    """

    def __init__(self, ring: KeyRing, salt: str, digest: str = "sha1") -> None:
        label = salt.encode("utf-8")
        self._digest = digest
        self._keys = [hmac.new(key, label, digest).digest() for key in ring.newest_first]

    def unsign(self, token: str) -> tuple[bytes, int] | None:
        """(signed payload bytes, signing time) when a key of the ring signed ``token``,
        else None (tampered, foreign key, malformed)."""
        signed, sep, sig_text = token.encode("utf-8").rpartition(b".")
        if not sep:
            return None
        try:
            sig = _b64decode(sig_text)
        except ValueError:
            return None
        digest = self._digest
        for key in self._keys:
            if hmac.compare_digest(hmac.digest(key, signed, digest), sig):
                break
        else:
            return None
        payload, sep, stamp = signed.rpartition(b".")
        if not sep or len(stamp) > 11:  # itsdangerous stamps are at most 8 bytes
            return None
        try:
            issued_at = int.from_bytes(_b64decode(stamp), "big")
        except ValueError:
            return None
        return payload, issued_at

    def restamp(self, payload: bytes, issued_at: int) -> str:
        """A verified ``payload`` (as ``unsign`` gave it) signed anew at ``issued_at``
        with the current key: what itsdangerous makes of the same payload and time."""
        stamp = _b64encode(issued_at.to_bytes(8, "big").lstrip(b"\0"))
        signed = payload + b"." + stamp
        signature = hmac.digest(self._keys[0], signed, self._digest)
        return (signed + b"." + _b64encode(signature)).decode("ascii")

    @staticmethod
    def payload_bytes(payload: bytes) -> bytes:
        """The serialized data inside a verified payload (base64, zlib when it starts with
        a dot); ValueError when it cannot be decoded."""
        if payload.startswith(b"."):
            try:
                return zlib.decompress(_b64decode(payload[1:]))
            except zlib.error as exc:
                raise ValueError("invalid compressed payload") from exc
        return _b64decode(payload)


class IdSigner:
    """Signs session ids in cookies (SESSION_USE_SIGNER), the way Flask-Session does."""

    def __init__(self, ring: KeyRing) -> None:
        # Same salt and derivation as Flask-Session, so its signed cookies stay valid.
        self._signer = Signer(ring.oldest_first, salt="flask-session", key_derivation="hmac")

    def sign(self, sid: str) -> str:
        return self._signer.sign(sid).decode("ascii")

    def unsign(self, token: str) -> str | None:
        try:
            return self._signer.unsign(token).decode("ascii")
        except (BadSignature, UnicodeError):
            return None


class CookieSigner:
    """Signed standalone cookies, like Django's ``set_signed_cookie``/``get_signed_cookie``.

    The cookie name and a salt are bound into the signature, so a value signed for one
    cookie cannot be replayed as another; ``max_age`` rejects old values.
    """

    def __init__(self, ring: KeyRing) -> None:
        self._ring = ring

    def _signer(self, name: str, salt: str) -> TimestampSigner:
        return TimestampSigner(
            self._ring.oldest_first, salt=f"sessionkeeper.cookie:{name}:{salt}",
            key_derivation="hmac", digest_method=hashlib.sha256,
        )

    def sign(self, name: str, value: str, salt: str = "") -> str:
        return self._signer(name, salt).sign(value).decode("utf-8")

    def unsign(self, name: str, signed: str, salt: str = "", max_age: float | None = None) -> str:
        """The original value; raises ``itsdangerous.BadSignature`` (or SignatureExpired)."""
        raw: Any = self._signer(name, salt).unsign(signed, max_age=max_age)
        return raw.decode("utf-8")
