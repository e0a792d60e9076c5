"""Starlette's cookie signature, made and checked without itsdangerous, is itsdangerous'
``TimestampSigner`` (Starlette's settings) both ways: what one signs the other accepts
with the same keys, and refuses with others, when tampered with or when expired."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from itsdangerous import BadSignature
from itsdangerous import TimestampSigner as ItsdangerousSigner

from sessionkeeper.starlette.timestamp_signer import BadTimestampSignature, TimestampSigner

payloads = st.binary(max_size=200).map(lambda data: data.replace(b".", b"_"))
keys = st.text(min_size=1, max_size=40)


@given(payloads, keys)
def test_what_itsdangerous_signs_is_accepted(payload: bytes, key: str) -> None:
    token = ItsdangerousSigner(key).sign(payload)
    value, stamp = TimestampSigner([key]).unsign(token, max_age=60)
    assert value == payload and abs(stamp - time.time()) < 5


class FixedTimeSigner(ItsdangerousSigner):
    """itsdangerous' signer at a fixed time, to compare tokens byte for byte."""

    def get_timestamp(self) -> int:
        return 1_796_000_000


@given(payloads, keys)
def test_what_is_signed_here_is_itsdangerous_token_byte_for_byte(payload: bytes,
                                                                 key: str) -> None:
    token = TimestampSigner([key]).sign(payload, now=1_796_000_000.7)
    assert token == FixedTimeSigner(key).sign(payload)
    assert ItsdangerousSigner(key).unsign(TimestampSigner([key]).sign(payload),
                                          max_age=60) == payload


def test_the_last_key_signs_and_every_key_verifies() -> None:
    rotated = TimestampSigner(["old key", "new key"])
    token = rotated.sign(b"data")
    assert ItsdangerousSigner("new key").unsign(token) == b"data"
    with pytest.raises(BadSignature):
        ItsdangerousSigner("old key").unsign(token)
    old_token = ItsdangerousSigner("old key").sign(b"data")
    assert rotated.unsign(old_token, max_age=None)[0] == b"data"
    with pytest.raises(BadTimestampSignature, match="does not match"):
        TimestampSigner(["new key"]).unsign(old_token, max_age=None)


@pytest.mark.parametrize("tamper", [
    lambda t: t[:-1] + (b"A" if t[-1:] != b"A" else b"B"),   # the signature
    lambda t: b"X" + t[1:],                                   # the value
    lambda t: t.replace(b".", b"", 1),                        # the timestamp's separator
    lambda t: t.rpartition(b".")[0],                          # no signature at all
    lambda t: b"",
])
def test_a_tampered_token_is_refused(tamper: object) -> None:
    token = TimestampSigner(["key"]).sign(b"data")
    with pytest.raises(BadTimestampSignature):
        TimestampSigner(["key"]).unsign(tamper(token), max_age=None)  # type: ignore[operator]


def test_an_old_or_future_stamp_is_refused_when_a_max_age_is_given() -> None:
    signer = TimestampSigner(["key"])
    old = signer.sign(b"data", now=time.time() - 100)
    future = signer.sign(b"data", now=time.time() + 100)
    assert signer.unsign(old, max_age=None)[0] == b"data"
    for token in (old, future):
        with pytest.raises(BadTimestampSignature, match="signature age"):
            signer.unsign(token, max_age=60)
    assert signer.unsign(old, max_age=200)[0] == b"data"
