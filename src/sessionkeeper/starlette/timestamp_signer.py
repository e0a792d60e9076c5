"""The signed format of Starlette's session cookie, itsdangerous' ``TimestampSigner`` with
its defaults, verified and made with keys derived once.

``value.timestamp.signature``: the timestamp is the signing time in whole seconds
(big-endian bytes, URL-safe base64 without padding), the signature HMAC-SHA1 over
``value.timestamp`` with the key ``sha1(b"itsdangerous.Signer" + b"signer" + secret)``
(itsdangerous' "django-concat" derivation), URL-safe base64 without padding.
itsdangerous derives that key again for every cookie, which is most of what reading a
session cookie costs; here each key is derived when the signer is built. Tokens are
interchangeable with itsdangerous' both ways (tests/asgi/test_asgi_timestamp_signer.py).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import time
from collections.abc import Sequence

_SALT = b"itsdangerous.Signer"
_SEP = b"."


class BadTimestampSignature(ValueError):
    """Not signed with one of the keys, malformed, expired or stamped in the future."""


def _derived(secret: str) -> bytes:
    return hashlib.sha1(_SALT + b"signer" + secret.encode("utf-8")).digest()


_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(data: bytes) -> bytes:
    # urlsafe_b64encode(data).rstrip(b"="), without its two wrapper calls
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).rstrip(b"=")


_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _unb64(data: bytes) -> bytes:
    # urlsafe_b64decode, without its argument checks and a second function call
    return binascii.a2b_base64(data.translate(_FROM_URLSAFE) + b"=" * (-len(data) % 4))


class TimestampSigner:
    """Signs with the last of ``secret_keys``; accepts a signature by any of them."""

    def __init__(self, secret_keys: Sequence[str]) -> None:
        if not secret_keys:
            raise ValueError("at least one secret key is needed")
        self._keys = [_derived(key) for key in reversed(secret_keys)]  # newest first

    def sign(self, value: bytes, now: float | None = None) -> bytes:
        stamp = int(time.time() if now is None else now)
        signed = value + _SEP + _b64(stamp.to_bytes((stamp.bit_length() + 7) // 8, "big"))
        return signed + _SEP + _b64(hmac.digest(self._keys[0], signed, "sha1"))

    def unsign(self, token: bytes, max_age: float | None) -> tuple[bytes, int]:
        """The value and its signing time (unix seconds); BadTimestampSignature when
        the signature is not one of ours, or ``max_age`` seconds have passed."""
        signed, separated, signature = token.rpartition(_SEP)
        if not separated:
            raise BadTimestampSignature("no signature")
        for key in self._keys:
            if hmac.compare_digest(_b64(hmac.digest(key, signed, "sha1")), signature):
                break
        else:
            raise BadTimestampSignature("signature does not match")
        value, separated, stamp_text = signed.rpartition(_SEP)
        if not separated:
            raise BadTimestampSignature("no timestamp")
        try:
            stamp = int.from_bytes(_unb64(stamp_text), "big")
        except (binascii.Error, ValueError) as exc:
            raise BadTimestampSignature("malformed timestamp") from exc
        if max_age is not None:
            age = int(time.time()) - stamp
            if age > max_age or age < 0:
                raise BadTimestampSignature(f"signature age {age} not in 0..{max_age}")
        return value, stamp
