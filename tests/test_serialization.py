"""Session values to bytes and back: Flask's and Flask-Session's value types, Flask's cookie
format, no pickle."""

from __future__ import annotations

import ast
import contextlib
import json
import math
import pickle
import sqlite3
from collections import namedtuple
from collections.abc import Callable
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import Enum, IntEnum
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import pytest
from flask import Flask, session
from flask.json.tag import TaggedJSONSerializer
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import Markup

from sessionkeeper.errors import UnserializableValue
from sessionkeeper.serialization import (
    MAX_DEPTH,
    CookieValueCodec,
    FlaskCookieSerializer,
    UndecodableValue,
    ValueCodec,
)

FORMATS = ["json", "msgpack"]
SRC = Path(__file__).resolve().parents[1] / "src" / "sessionkeeper"
IST = timezone(timedelta(hours=5, minutes=30))


def same(a: Any, b: Any) -> bool:
    """Equal *and* of the same types all the way down, dict keys and set items included
    (1, 1.0 and True differ here; so do Decimal("1.0") and Decimal("1.00"))."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        keys_b = {k: k for k in b}
        return len(a) == len(b) and all(
            k in keys_b and same(k, keys_b[k]) and same(v, b[k]) for k, v in a.items())
    if isinstance(a, set | frozenset):
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, Decimal):
        return str(a) == str(b)
    if isinstance(a, datetime | time):
        return a == b and a.utcoffset() == b.utcoffset()
    if isinstance(a, float) and a == 0:
        return math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


# -- every type Flask's session keeps ----------------------------------------------------
VALUES: dict[str, Any] = {
    "str": "hello",
    "empty str": "",
    "unicode str": "ünïcödé 😀 中文 مرحبا",
    "int": 42,
    "negative int": -7,
    "64-bit int": 2**63 - 1,
    "float": 3.14159,
    "negative zero": -0.0,
    "true": True,
    "false": False,
    "none": None,
    "list": [1, "two", 3.0, None],
    "empty list": [],
    "dict": {"a": 1, "b": [2, 3]},
    "empty dict": {},
    "tuple": (1, "two", None),
    "empty tuple": (),
    "tuple in list": [(1, 2), (3,)],
    "bytes": b"\x00\x01binary\xff",
    "empty bytes": b"",
    "naive datetime": datetime(2024, 2, 29, 13, 14, 15, 123456),
    "utc datetime": datetime(2024, 2, 29, 13, 14, 15, 654321, tzinfo=timezone.utc),
    "offset datetime": datetime(1999, 12, 31, 23, 59, 59, 1, tzinfo=IST),
    "uuid": UUID("12345678-1234-5678-1234-567812345678"),
    "markup": Markup("<b>bold</b> &amp; safe"),
    "nested": {"user": {"id": 1, "roles": ("admin", "dev"), "avatar": b"\x89PNG",
                        "seen": datetime(2024, 1, 1, tzinfo=timezone.utc),
                        "items": [{"id": UUID(int=1), "label": Markup("<i>x</i>")}]}},
    "tuple-tag-like dict": {" t": [1, 2]},
    "dict-tag-like dict": {" di": {"x": 1}},
    "bytes-tag-like dict": {" b": "aGk="},
    "markup-tag-like dict": {" m": "<b>"},
    "uuid-tag-like dict": {" u": "12345678123456781234567812345678"},
    "datetime-tag-like dict": {" d": "2024-01-01T00:00:00"},
    "tag-like key among others": {" t": [1], "other": 2},
    "nested tag-like dict": [{" di": {" t__": 1}}],
    "set-tag-like dict": {" s": [1, 2]},
    "keyed-dict-tag-like dict": {" dk": [1, 2]},
    "date-tag-like dict": {" da": "2024-01-01"},
    "every new tag-like key": [{" dk": 1}, {" s": 1}, {" fs": 1}, {" da": 1}, {" ti": 1},
                               {" td": 1}, {" dc": 1}],
}
# -- and every type Flask-Session stores (its MessagePack format), kept as it was --------
FLASK_SESSION_VALUES: dict[str, Any] = {
    "int keys": {5: 1, 7: 2},
    "float, bool and None keys": {1.5: "a", True: "b", None: "c", -0.0: "d"},
    "int and str keys that look alike": {5: "int", "5": "str"},
    "tuple, frozenset, bytes, date, UUID keys": {(1, "a"): 1, frozenset({2}): 2, b"k": 3,
                                                 date(2024, 1, 2): 4, UUID(int=1): 5},
    "one int key": {1: "one"},
    "set": {3, 1, 2},
    "set of text": {"b", "a"},
    "set of mixed items": {1, "a", (1, 2), None, 2.5, b"x", frozenset({"f"}), False},
    "empty set": set(),
    "frozenset": frozenset({"a", "b"}),
    "empty frozenset": frozenset(),
    "date": date(2024, 2, 29),
    "time": time(13, 14, 15, 123456),
    "time with an offset": time(13, 14, tzinfo=IST),
    "timedelta": timedelta(days=-3, seconds=5, microseconds=7),
    "largest timedelta": timedelta.max,
    "Decimal": Decimal("1.10"),
    "Decimal exponent": Decimal("-1.5E+300"),
    "Decimal NaN": Decimal("NaN"),
    "Decimal infinity": Decimal("Infinity"),
    "nested new types": {1: {2: [{3}, (4, date(2020, 1, 1))]},
                         "when": {date(2024, 1, 1): timedelta(1)}, "sum": Decimal("9.90")},
    "new types in Flask's": ({5: b"x"}, [{UUID(int=1): datetime(2024, 1, 1, tzinfo=IST)}]),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("value", [*VALUES.values(), *FLASK_SESSION_VALUES.values()],
                         ids=[*VALUES, *FLASK_SESSION_VALUES])
def test_flask_session_types_round_trip(fmt: str, value: Any) -> None:
    codec = ValueCodec(fmt)  # type: ignore[arg-type]

    assert same(codec.decode(codec.encode(value)), value)


@pytest.mark.parametrize("fmt", FORMATS)
def test_json_format_keeps_integers_of_any_size_and_msgpack_refuses_them_clearly(
    fmt: str,
) -> None:
    codec = ValueCodec(fmt)  # type: ignore[arg-type]
    huge = 2**80
    if fmt == "json":
        assert codec.decode(codec.encode(huge)) == huge
    else:
        with pytest.raises(UnserializableValue, match="64 bits"):
            codec.encode({"n": [huge]})


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_floats_keep_in_msgpack_and_are_refused_clearly_in_json(value: float) -> None:
    msgpack = ValueCodec("msgpack")
    assert same(msgpack.decode(msgpack.encode(value)), value)

    with pytest.raises(UnserializableValue, match="msgpack"):
        ValueCodec("json").encode({"score": [value]})  # never silently turned into null


class Level(IntEnum):
    HIGH = 2


class Color(str, Enum):
    RED = "red"


def test_subclasses_of_plain_types_are_kept_as_their_plain_type() -> None:
    point = namedtuple("point", "x y")
    codec = ValueCodec()

    assert same(codec.decode(codec.encode(point(1, 2))), (1, 2))
    assert same(codec.decode(codec.encode(Level.HIGH)), 2)
    assert same(codec.decode(codec.encode(Color.RED)), "red")
    assert same(codec.decode(codec.encode({Color.RED: 1, "b": 2})), {"red": 1, "b": 2})
    assert same(codec.decode(codec.encode({Level.HIGH: 1, "b": 2})), {2: 1, "b": 2})


@pytest.mark.parametrize("fmt", FORMATS)
def test_dict_keys_keep_their_types_as_in_flask_session(fmt: str) -> None:
    codec = ValueCodec(fmt)  # type: ignore[arg-type]
    keyed = {1: "a", None: "b", 2.5: "c", False: "d", "1": "e"}

    assert same(codec.decode(codec.encode(keyed)), keyed)  # five keys, none lost
    # The cart of a shop keyed by product id, changed over three requests.
    cart: dict[int, int] = {}
    for _ in range(3):
        cart = codec.decode(codec.encode(cart))
        cart[5] = cart.get(5, 0) + 1
    assert same(cart, {5: 3})


# -- property: anything Flask's session or Flask-Session keeps round-trips --------------
FLASK_TAGS = [" t", " di", " b", " m", " u", " d"]
NEW_TAGS = [" dk", " s", " fs", " da", " ti", " td", " dc"]
TIMEZONES = st.sampled_from([None, timezone.utc, IST])
Strategy = st.SearchStrategy[Any]


def _values(ints: Strategy, floats: Strategy, datetimes: Strategy, *, more_scalars: Strategy,
            more_containers: Callable[[Strategy], Strategy], tags: list[str]) -> Strategy:
    scalars = (st.none() | st.booleans() | ints | floats | st.text() | st.binary()
               | st.uuids() | datetimes | st.text().map(Markup) | more_scalars)
    return st.recursive(
        scalars,
        lambda inner: (st.lists(inner, max_size=4)
                       | st.lists(inner, max_size=4).map(tuple)
                       | st.dictionaries(st.text(), inner, max_size=4)
                       | st.dictionaries(st.sampled_from(tags), inner, min_size=1, max_size=1)
                       | more_containers(inner)),
        max_leaves=12,
    )


def _server_values(ints: Strategy, floats: Strategy) -> Strategy:
    """Everything Flask-Session's MessagePack format stores, nested in any way."""
    datetimes = st.datetimes(timezones=TIMEZONES)
    # dict keys and set items (no NaN: it equals nothing, so no key or item can be found)
    key_scalars = (st.none() | st.booleans() | ints | floats.filter(lambda f: f == f)
                   | st.text(max_size=8) | st.binary(max_size=8) | st.uuids() | datetimes
                   | st.dates() | st.times(timezones=TIMEZONES) | st.timedeltas()
                   | st.decimals(allow_nan=False))
    hashables = st.recursive(
        key_scalars,
        lambda inner: st.lists(inner, max_size=3).map(tuple) | st.frozensets(inner, max_size=3),
        max_leaves=4,
    )
    return _values(
        ints, floats, datetimes,
        more_scalars=(st.dates() | st.times(timezones=TIMEZONES) | st.timedeltas()
                      | st.decimals()),
        more_containers=lambda inner: (st.dictionaries(hashables, inner, max_size=3)
                                       | st.sets(hashables, max_size=4)
                                       | st.frozensets(hashables, max_size=4)),
        tags=FLASK_TAGS + NEW_TAGS,
    )


SERVER_VALUES = {
    "json": _server_values(st.integers(), st.floats(allow_nan=False, allow_infinity=False)),
    "msgpack": _server_values(st.integers(-(2**63), 2**64 - 1), st.floats()),
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_property_server_side_values_round_trip(fmt: str) -> None:
    codec = ValueCodec(fmt)  # type: ignore[arg-type]

    @settings(max_examples=150, deadline=None)
    @given(SERVER_VALUES[fmt])
    def round_trips(value: Any) -> None:
        assert same(codec.decode(codec.encode(value)), value)

    round_trips()


# -- the cookie format is Flask's, byte for byte -----------------------------------------
# Flask writes its session cookie inside an app context, where its JSON provider sorts
# keys and escapes non-ASCII; that is the output to match.
_flask_app = Flask("serialization_reference")
_flask = TaggedJSONSerializer()
_ours = FlaskCookieSerializer()
COOKIE_VALUES = _values(
    st.integers(), st.floats(),
    # Cookies keep datetimes to the second, in UTC, as HTTP dates (both sides agree).
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1),
                 timezones=TIMEZONES),
    # What Flask's JSON writes as text: dates (HTTP dates), Decimals, number keys.
    more_scalars=st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 1, 1))
    | st.decimals(),
    more_containers=lambda inner: (st.dictionaries(st.integers(), inner, max_size=3)
                                   | st.dictionaries(st.floats(allow_nan=False), inner,
                                                     max_size=3)),
    tags=FLASK_TAGS + NEW_TAGS,  # the new ones are plain keys to Flask's cookie
)


def flask_dumps(value: Any) -> str:
    with _flask_app.app_context():
        return _flask.dumps(value)


@settings(max_examples=300, deadline=None)
@given(COOKIE_VALUES)
def test_property_cookie_payload_is_byte_identical_to_flask(value: Any) -> None:
    assert _ours.dumps(value).decode("ascii") == flask_dumps(value)


@settings(max_examples=300, deadline=None)
@given(COOKIE_VALUES)
def test_property_flask_cookie_payloads_read_back_like_flask_reads_them(value: Any) -> None:
    written = flask_dumps(value)

    assert same(_ours.loads(written), _flask.loads(written))
    assert same(_ours.loads(written.encode()), _flask.loads(written))


@pytest.mark.parametrize("value", VALUES.values(), ids=VALUES.keys())
def test_cookie_payload_of_each_flask_type_matches_flask(value: Any) -> None:
    written = flask_dumps(value)

    assert _ours.dumps(value).decode() == written
    assert same(_ours.loads(written), _flask.loads(written))


def test_cookie_datetimes_read_back_as_flask_reads_them() -> None:
    moment = datetime(2024, 2, 29, 13, 14, 15, 999999, tzinfo=IST)

    back = _ours.loads(_ours.dumps({"at": moment}))["at"]

    assert back == moment.replace(microsecond=0)
    assert back.utcoffset() == timedelta(0)  # an HTTP date is UTC, as in Flask


# Flask's cookie JSON has no form for these: it writes text, or refuses them.
AS_TEXT_IN_FLASK_COOKIES = {
    "int keys": ({5: 1, 10: 2}, {"5": 1, "10": 2}),
    "float, bool and None keys": ({1.5: "a"}, {"1.5": "a"}),
    "bool key": ({True: 1}, {"true": 1}),
    "None key": ({None: 1}, {"null": 1}),
    "date": (date(2024, 1, 2), "Tue, 02 Jan 2024 00:00:00 GMT"),
    "date in a list": ([date(1999, 12, 31)], ["Fri, 31 Dec 1999 00:00:00 GMT"]),
    "Decimal": (Decimal("1.10"), "1.10"),
    "Decimal NaN": (Decimal("NaN"), "NaN"),
}


@pytest.mark.parametrize(("value", "back"), AS_TEXT_IN_FLASK_COOKIES.values(),
                         ids=AS_TEXT_IN_FLASK_COOKIES.keys())
def test_cookie_payloads_write_what_flask_writes_as_text(value: Any, back: Any) -> None:
    written = flask_dumps({"v": value})

    assert _ours.dumps({"v": value}).decode() == written
    assert same(_flask.loads(written)["v"], back)  # what Flask's cookie session gives back
    assert same(_ours.loads(written)["v"], back)


REFUSED_BY_FLASK_COOKIES = {
    "set": {1, 2},
    "frozenset": frozenset({1}),
    "time": time(1, 2),
    "timedelta": timedelta(days=1),
    "tuple key": {(1, 2): 1},
    "frozenset key": {frozenset(): 1},
    "bytes key": {b"k": 1},
    "int and str keys": {1: "a", "b": 2},
    "set in a dict": {"deep": [{"a"}]},
}


@pytest.mark.parametrize("value", REFUSED_BY_FLASK_COOKIES.values(),
                         ids=REFUSED_BY_FLASK_COOKIES.keys())
def test_the_cookie_serializer_refuses_what_flasks_cookie_refuses(value: Any) -> None:
    with pytest.raises(TypeError):
        flask_dumps({"v": value})

    with pytest.raises(UnserializableValue, match=r"session\['v'\].*as Flask's"):
        _ours.dumps({"user": "alice", "v": value})


# -- unsupported values fail clearly -----------------------------------------------------
class Profile:
    def __init__(self) -> None:
        self.name = "alice"


UNSUPPORTED = {
    "object": object(),
    "class instance": Profile(),
    "complex": 1 + 2j,
    "function": len,
    "bytearray": bytearray(b"x"),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("value", UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_unsupported_types_raise_a_clear_error(fmt: str, value: Any) -> None:
    codec = ValueCodec(fmt)  # type: ignore[arg-type]
    name = type(value).__name__

    for wrapped in (value, [value], {"deep": {"er": (1, value)}}):
        with pytest.raises(UnserializableValue, match=rf"cannot store a {name};.* datetime"):
            codec.encode(wrapped)


@pytest.mark.parametrize("value", UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_the_cookie_serializer_refuses_the_same_types(value: Any) -> None:
    with pytest.raises(UnserializableValue, match=type(value).__name__):
        _ours.dumps({"v": value})


@pytest.mark.parametrize("fmt", FORMATS)
def test_dict_keys_and_set_items_of_unsupported_types_raise_a_clear_error(fmt: str) -> None:
    codec = ValueCodec(fmt)  # type: ignore[arg-type]

    for value in ({"outer": {Profile: 1}}, {"outer": {1: 1, Profile: 2}}, {1, Profile},
                  frozenset({(1, Profile)})):
        with pytest.raises(UnserializableValue, match="cannot store a type"):
            codec.encode(value)


def test_an_unserializable_value_is_a_type_error_for_code_that_expects_one() -> None:
    with pytest.raises(TypeError):
        ValueCodec().encode([1 + 2j])


# -- nesting: what is stored reads back; nothing stored makes decoding recurse ----------
def nested(kind: str, depth: int) -> Any:
    """A value ``depth`` containers deep (kind "mixed" cycles list, dict, tuple)."""
    value: Any = b"leaf"
    for level in range(depth):
        shape = kind if kind != "mixed" else ("list", "dict", "tuple", "escaped")[level % 4]
        if shape == "list":
            value = [value]
        elif shape == "dict":
            value = {"k": value, "n": level}
        elif shape == "escaped":
            value = {" t": value}  # a dict Flask escapes with the " di" tag
        else:
            value = (value, level)
    return value


NESTINGS = ["list", "dict", "tuple", "mixed"]


@pytest.mark.parametrize("kind", NESTINGS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_values_nested_to_the_limit_round_trip(fmt: str, kind: str) -> None:
    codec = ValueCodec(fmt)  # type: ignore[arg-type]
    value = nested(kind, MAX_DEPTH)

    assert same(codec.decode(codec.encode(value)), value)
    assert same(_ours.loads(_ours.dumps({"v": value}))["v"], value)
    assert _ours.dumps({"v": value}).decode() == flask_dumps({"v": value})


@pytest.mark.parametrize("kind", NESTINGS)
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 245, 490, 5000])
def test_values_nested_deeper_than_the_limit_are_refused_when_stored(kind: str,
                                                                     depth: int) -> None:
    value = nested(kind, depth)

    for fmt in FORMATS:
        with pytest.raises(UnserializableValue, match=f"at most {MAX_DEPTH}"):
            ValueCodec(fmt).encode(value)  # type: ignore[arg-type]
    with pytest.raises(UnserializableValue, match=rf"session\['v'\].*at most {MAX_DEPTH}"):
        _ours.dumps({"ok": 1, "v": value})


def nested_new(kind: str, depth: int) -> Any:
    """A value ``depth`` frozensets (in a set at the top) or int-keyed dicts deep."""
    value: Any = b"leaf"
    for level in range(depth):
        if kind == "keyed dict":
            value = {level: value, "n": level}
        elif level == depth - 1:
            value = {value, level}
        else:
            value = frozenset({value, f"n{level}"})
    return value


@pytest.mark.parametrize("kind", ["set", "keyed dict"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_sets_and_keyed_dicts_nested_to_the_limit_round_trip(fmt: str, kind: str) -> None:
    codec = ValueCodec(fmt)  # type: ignore[arg-type]
    value = nested_new(kind, MAX_DEPTH)

    assert same(codec.decode(codec.encode(value)), value)
    for depth in (MAX_DEPTH + 1, 490):
        with pytest.raises(UnserializableValue, match=f"at most {MAX_DEPTH}"):
            codec.encode(nested_new(kind, depth))


@pytest.mark.timeout(10)
@pytest.mark.parametrize("fmt", FORMATS)
def test_dicts_of_text_and_other_keys_nested_deep_encode_in_linear_time(fmt: str) -> None:
    # The text key comes first: its value must not be encoded again at every level.
    codec = ValueCodec(fmt)  # type: ignore[arg-type]
    value: Any = "leaf"
    for level in range(MAX_DEPTH):
        value = {"inner": value, level: "n"}

    assert same(codec.decode(codec.encode(value)), value)


def test_a_value_that_contains_itself_is_refused_not_a_recursion_error() -> None:
    loop: list[Any] = []
    loop.append(loop)

    for encode in (ValueCodec("json").encode, ValueCodec("msgpack").encode,
                   CookieValueCodec().encode):
        with pytest.raises(UnserializableValue, match=f"at most {MAX_DEPTH}"):
            encode(loop)


def deep_json(depth: int, kind: str) -> bytes:
    """Hand-made JSON nested ``depth`` deep, as an old record or a forged cookie holds."""
    opening, closing = {"list": (b"[", b"]"), "dict": (b'{"a":', b"}"),
                        "tuple": (b'{" t":[', b"]}"), "frozenset": (b'{" fs":[', b"]}"),
                        "keyed dict": (b'{" dk":[1,', b"]}"),
                        "old set-tag-like dict": (b'{" s":', b"}")}[kind]
    return opening * depth + b"1" + closing * depth


def deep_msgpack(depth: int, kind: str) -> bytes:
    opening = {"list": b"\x91", "dict": b"\x81\xa1a", "tuple": b"\x81\xa2 t\x91",
               "frozenset": b"\x81\xa3 fs\x91", "keyed dict": b"\x81\xa3 dk\x92\x01",
               "old set-tag-like dict": b"\x81\xa2 s"}[kind]
    return opening * depth + b"\x01"


DEEP_KINDS = ["list", "dict", "tuple", "frozenset", "keyed dict", "old set-tag-like dict"]


@pytest.mark.parametrize("kind", DEEP_KINDS)
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 490, 3000, 200_000])
def test_stored_data_nested_deeper_than_the_limit_fails_cleanly(kind: str, depth: int) -> None:
    made = {"json": deep_json(depth, kind), "msgpack": deep_msgpack(depth, kind)}

    for fmt in FORMATS:
        codec = ValueCodec(fmt)  # type: ignore[arg-type]
        with pytest.raises(UndecodableValue):
            codec.decode(made[fmt])
        # A one-blob record holding it: the map itself, or that one value, fails.
        with pytest.raises(UndecodableValue):
            for encoded in codec.unpack(codec.pack({"ok": codec.encode(1),
                                                    "deep": made[fmt]})).values():
                codec.decode(encoded)
    with pytest.raises(UndecodableValue):
        _ours.loads(b'{"deep":' + made["json"] + b"}")


@pytest.mark.parametrize("kind", DEEP_KINDS)
def test_data_nested_just_to_the_limit_decodes(kind: str) -> None:
    for fmt, made in (("json", deep_json(MAX_DEPTH, kind)),
                      ("msgpack", deep_msgpack(MAX_DEPTH, kind))):
        value = ValueCodec(fmt).decode(made)  # type: ignore[arg-type]
        for _ in range(MAX_DEPTH):
            if kind == "keyed dict":
                value = value[1]
            else:
                (value,) = value.values() if isinstance(value, dict) else value
        assert value == 1


# -- data that does not decode raises one error, whatever it holds -----------------------
DAMAGED = {
    "not the format": {"json": b"\xc1\x00garbage", "msgpack": b"\xc1"},
    "empty": {"json": b"", "msgpack": b""},
    "truncated": {"json": b'["app', "msgpack": b"\x92\xa5apple"},
    "other format": {"json": b"\x91\xa5apple", "msgpack": b'["apple"]'},
    "bad bytes tag": {"json": b'{" b":"not base64!"}', "msgpack": b"\x81\xa2 b\xa1a"},
    "bytes tag of a list": {"json": b'{" b":[1]}', "msgpack": b"\x81\xa2 b\x91\x01"},
    "bad uuid tag": {"json": b'{" u":"not-a-uuid"}', "msgpack": b"\x81\xa2 u\x05"},
    "bad datetime tag": {"json": b'{" d":"yesterday"}', "msgpack": b"\x81\xa2 d\x91\x01"},
    "datetime out of range": {"json": b'{" d":"Mon, 01 Jan 99999999999999999999 00:00:00 GMT"}',
                              "msgpack": b"\x81\xa2 d\xa7-999999"},
    "tuple tag of an int": {"json": b'{" t":5}', "msgpack": b"\x81\xa2 t\x05"},
    "bad escaped dict": {"json": b'{" di":7}', "msgpack": b"\x81\xa3 di\x92\x01\x02"},
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("data", DAMAGED.values(), ids=DAMAGED.keys())
def test_a_damaged_value_raises_undecodable_value(fmt: str, data: dict[str, bytes]) -> None:
    with pytest.raises(UndecodableValue) as raised:
        ValueCodec(fmt).decode(data[fmt])  # type: ignore[arg-type]

    # Code that expects what msgspec raises for a damaged record catches it too.
    assert isinstance(raised.value, msgspec.DecodeError | ValueError)


#: damaged values under the tags sessionkeeper adds (Flask's cookie has none of them)
DAMAGED_NEW_TAGS = {
    "set of lists": {"json": b'{" s":[[1]]}', "msgpack": b"\x81\xa2 s\x91\x91\x01"},
    "frozenset of dicts": {"json": b'{" fs":[{"a":1}]}',
                           "msgpack": b"\x81\xa3 fs\x91\x81\xa1a\x01"},
    "key without a value": {"json": b'{" dk":[1]}', "msgpack": b"\x81\xa3 dk\x91\x01"},
    "list as a key": {"json": b'{" dk":[[1],2]}',
                      "msgpack": b"\x81\xa3 dk\x92\x91\x01\x02"},
    "timedelta of two parts": {"json": b'{" td":[1,2]}',
                               "msgpack": b"\x81\xa3 td\x92\x01\x02"},
    "timedelta of text": {"json": b'{" td":["1",0,0]}',
                          "msgpack": b"\x81\xa3 td\x93\xa11\x00\x00"},
    "timedelta out of range": {"json": b'{" td":[1000000000,0,0]}',
                               "msgpack": b"\x81\xa3 td\x93\xce\x3b\x9a\xca\x00\x00\x00"},
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("data", DAMAGED_NEW_TAGS.values(), ids=DAMAGED_NEW_TAGS.keys())
def test_a_damaged_value_of_a_new_type_raises_undecodable_value(
    fmt: str, data: dict[str, bytes],
) -> None:
    with pytest.raises(UndecodableValue):
        ValueCodec(fmt).decode(data[fmt])  # type: ignore[arg-type]


#: one-key dicts spelled like a tag added since, as an older version stored them (as they
#: were: it did not escape them)
OLD_TAG_LIKE_DICTS = [
    {" s": 5}, {" s": "abc"}, {" fs": {"a": [1]}}, {" dk": None}, {" da": "yesterday"},
    {" da": 20240101}, {" ti": "noon"}, {" td": "P1D"}, {" dc": "one"}, {" dc": 1.5},
    [{" s": {" s": {" da": "x"}}}],
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("value", OLD_TAG_LIKE_DICTS)
def test_records_written_before_the_new_tags_read_as_they_were(fmt: str, value: Any) -> None:
    codec = ValueCodec(fmt)  # type: ignore[arg-type]
    written_before = codec.module.encode(value)

    assert same(codec.decode(written_before), value)
    assert same(codec.decode(codec.encode(value)), value)  # and now written escaped


@pytest.mark.parametrize("data", DAMAGED.values(), ids=DAMAGED.keys())
def test_a_damaged_cookie_payload_raises_undecodable_value(data: dict[str, bytes]) -> None:
    with pytest.raises(UndecodableValue):
        _ours.loads(b'{"v":' + data["json"] + b"}")


JSON_NATIVE = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats() | st.text(),
    lambda inner: (st.lists(inner, max_size=3)
                   | st.dictionaries(st.sampled_from([" t", " di", " b", " m", " u", " d",
                                                      "a", "b__", " t__", *NEW_TAGS]),
                                     inner, max_size=2)),
    max_leaves=8,
)


@pytest.mark.parametrize("fmt", FORMATS)
def test_property_any_stored_bytes_decode_or_raise_undecodable_value(fmt: str) -> None:
    codec = ValueCodec(fmt)  # type: ignore[arg-type]

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=64) | JSON_NATIVE.map(codec.module.encode))
    def decodes_or_fails_cleanly(data: bytes) -> None:
        with contextlib.suppress(UndecodableValue):
            codec.decode(data)

    decodes_or_fails_cleanly()


@settings(max_examples=300, deadline=None)
@given(JSON_NATIVE.map(lambda v: json.dumps({"v": v}).encode()) | st.binary(max_size=64))
def test_property_any_cookie_payload_decodes_or_raises_undecodable_value(data: bytes) -> None:
    with contextlib.suppress(UndecodableValue):
        _ours.loads(data)


# -- non-finite floats and other text only Flask's cookie JSON writes --------------------
NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan,
              "list with inf": [1.0, math.inf], "nested nan": {"a": (math.nan, None)}}


@pytest.mark.parametrize("value", NON_FINITE.values(), ids=NON_FINITE.keys())
def test_cookie_payloads_with_non_finite_floats_match_flask_both_ways(value: Any) -> None:
    written = flask_dumps({"x": value})

    assert "Infinity" in written or "NaN" in written  # what Flask's stdlib JSON writes
    assert _ours.dumps({"x": value}).decode() == written
    assert same(_ours.loads(written), _flask.loads(written))
    assert same(_ours.loads(written)["x"], value)


def test_cookie_change_detection_tells_every_value_apart() -> None:
    # Cookie sessions compare these forms to find in-place changes: inf, nan and None
    # (all "null" in strict JSON) must differ, and each form must be stable.
    codec = CookieValueCodec()
    values = [[math.inf], [-math.inf], [math.nan], [None], [1.0], ["\ud800"], ["\ud801"],
              [2**80], [{"a": math.inf}], [{"a": 1}]]

    forms = [codec.encode(v) for v in values]

    assert len(set(forms)) == len(values)
    assert forms == [codec.encode(v) for v in values]
    for refused in (object(), nested("list", MAX_DEPTH + 1)):
        with pytest.raises(UnserializableValue):
            codec.encode(refused)


# -- change detection compares encodings: equal values must encode alike ----------------
def built_three_ways(items: list[Any]) -> list[set[Any]]:
    """The same set built in different orders, and with a history of removals."""
    forward, backward = set(items), set(reversed(items))
    churned = set(items) | {("filler", n) for n in range(64)}
    churned -= {("filler", n) for n in range(64)} - set(items)
    return [forward, backward, churned]


SET_ITEMS = {
    "ints": [5, 3, 2**40, -1, 0],
    "text": [f"tag-{n}" for n in range(40)],
    "floats with nan and inf": [math.nan, 1.5, -math.inf, 0.0],
    "mixed": [1, "1", b"1", (1,), frozenset({1}), None, 2.5, date(2024, 1, 1), UUID(int=1)],
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("items", SET_ITEMS.values(), ids=SET_ITEMS.keys())
def test_equal_sets_encode_alike_whatever_their_history(fmt: str, items: list[Any]) -> None:
    codec = ValueCodec(fmt)  # type: ignore[arg-type]
    if fmt == "json":
        items = [i for i in items if not (isinstance(i, float) and not math.isfinite(i))]
    sets = built_three_ways(items)
    assert sets[0] == sets[1] == sets[2] or math.nan in items

    forms = {codec.encode(s) for s in sets} | {codec.encode(frozenset(s)) for s in sets[:1]}
    read_back = codec.decode(codec.encode(sets[2]))

    assert len({codec.encode(s) for s in sets}) == 1
    assert len(forms) == 2  # a set and a frozenset differ
    assert codec.encode(read_back) == codec.encode(sets[0])


@pytest.mark.parametrize("fmt", FORMATS)
def test_property_a_value_read_back_encodes_as_it_was_stored(fmt: str) -> None:
    # Otherwise every read of such a value would look like a change and be written again.
    codec = ValueCodec(fmt)  # type: ignore[arg-type]

    @settings(max_examples=150, deadline=None)
    @given(SERVER_VALUES[fmt])
    def stable(value: Any) -> None:
        stored = codec.encode(value)
        assert codec.encode(codec.decode(stored)) == stored

    stable()


@pytest.mark.parametrize("fmt", FORMATS)
def test_changes_inside_sets_and_keyed_dicts_change_the_encoding(fmt: str) -> None:
    codec = ValueCodec(fmt)  # type: ignore[arg-type]
    value = {5: {"red"}, (1, 2): frozenset({date(2024, 1, 1)}), None: [Decimal("1.0")]}
    before = codec.encode(value)
    changes: list[Callable[[Any], None]] = [
        lambda v: v[5].add("blue"),
        lambda v: (v[5].discard("red"), v[5].add("green")),  # same size
        lambda v: v.update({(1, 2): frozenset({date(2024, 1, 2)})}),
        lambda v: v[None].append(Decimal("1.0")),
        lambda v: v[None].__setitem__(0, Decimal("1.00")),  # equal, but not the same text
        lambda v: v.update({5.0: v.pop(5)}),  # an equal key of another type
    ]

    for change in changes:
        changed = codec.decode(before)
        change(changed)
        assert codec.encode(changed) != before


@pytest.mark.parametrize("fmt", FORMATS)
def test_text_that_is_not_valid_unicode_is_refused_clearly_by_server_formats(fmt: str) -> None:
    # A lone surrogate (from a decoded form field, say) has no UTF-8 form.
    with pytest.raises(UnserializableValue, match="not valid Unicode"):
        ValueCodec(fmt).encode({"name": ["\udcff"]})  # type: ignore[arg-type]


def test_the_cookie_serializer_names_the_key_it_cannot_store() -> None:
    with pytest.raises(UnserializableValue, match=r"session\['tags'\].*cannot store a set"):
        _ours.dumps({"user": "alice", "tags": {1, 2}})
    # Keys of mixed types, which Flask's sorted JSON cannot write either.
    with pytest.raises(UnserializableValue, match=r"session\['map'\].*sorted together"):
        _ours.dumps({"user": "alice", "map": {1: "a", "b": 2}})


# -- no pickle ---------------------------------------------------------------------------
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "jsonpickle",
                  "shelve", "marshal"}
# The opt-in reader for records Flask-Session pickled (``--allow-pickle``); it resolves
# only plain data types. Nothing else may touch pickle.
MIGRATION_READER = "legacy.py"


def _pickle_imports(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in PICKLE_MODULES]
        elif (isinstance(node, ast.ImportFrom) and node.module
              and node.module.split(".")[0] in PICKLE_MODULES):
            found.append(node.module)
    return found


def _unrestricted_pickle_calls(tree: ast.AST) -> list[str]:
    """``pickle.load(s)`` / ``pickle.Unpickler(...)``: unpickling any class there is."""
    calls = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in PICKLE_MODULES
                and node.func.attr in ("load", "loads", "Unpickler")):
            calls.append(f"{node.func.value.id}.{node.func.attr} (line {node.lineno})")
    return calls


def test_no_module_unpickles_and_only_the_migration_reader_imports_pickle() -> None:
    sources = sorted(SRC.rglob("*.py"))
    assert len(sources) > 10

    importers = {}
    for path in sources:
        tree = ast.parse(path.read_text(), filename=str(path))
        assert _unrestricted_pickle_calls(tree) == [], path
        if _pickle_imports(tree):
            importers[path.relative_to(SRC).as_posix()] = tree

    assert set(importers) <= {MIGRATION_READER}
    for tree in importers.values():
        restricted = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)
                      and node.name == "find_class"]
        assert restricted, "a pickle reader must restrict the classes it resolves"


UNPICKLED: list[str] = []


def _record_unpickling(marker: str) -> str:
    UNPICKLED.append(marker)
    return marker


class Exploit:
    """Unpickling this runs code (here: harmlessly records that it ran)."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _record_unpickling, ("unpickled!",)


PICKLED = pickle.dumps({"user": "admin", "payload": Exploit()})


def overwrite_sqlite_record(app: Flask) -> None:
    store = app.extensions["sessionkeeper"].backend.store
    with sqlite3.connect(store.path) as db:
        assert db.execute(f"UPDATE {store.table} SET data = ?", (PICKLED,)).rowcount == 1


def overwrite_session_file(app: Flask) -> None:
    store = app.extensions["sessionkeeper"].backend.store
    (path,) = Path(store.directory).glob("*.session")
    path.write_bytes(PICKLED)


@pytest.mark.parametrize(("kind", "overwrite"), [
    ("sqlite", overwrite_sqlite_record),
    ("filesystem", overwrite_session_file),
])
def test_a_pickled_payload_in_the_store_is_a_fresh_session_and_never_unpickled(
    make_app: Any, tmp_path: Path, kind: str, overwrite: Any,
) -> None:
    app = make_app(SESSION_TYPE=kind, SESSION_SQLITE_PATH=str(tmp_path / "s.sqlite3"),
                   SESSION_FILE_DIR=str(tmp_path / "files"))

    @app.post("/login")
    def login() -> str:
        session["user"] = "alice"
        return "ok"

    @app.get("/whoami")
    def whoami() -> str:
        return str(session.get("user", "anonymous"))

    client = app.test_client()
    client.post("/login")
    assert client.get("/whoami").text == "alice"
    UNPICKLED.clear()

    overwrite(app)
    response = client.get("/whoami")

    assert response.status_code == 200
    assert response.text == "anonymous"
    assert UNPICKLED == []
    assert "session=;" in response.headers["Set-Cookie"]  # the dead cookie is cleared
