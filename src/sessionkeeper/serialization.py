"""Turning session values into bytes and back, without pickle.

Values are first *tagged* into JSON-native data with the tag scheme of Flask's
``TaggedJSONSerializer`` (``" t"`` tuple, ``" b"`` bytes, ``" m"`` Markup, ``" u"`` UUID,
``" d"`` datetime, ``" di"`` escaped dict), so cookies stay readable by Flask itself, and
then encoded as JSON or MessagePack by msgspec.

Server-side stores keep datetimes as ISO 8601 (microseconds and naive/aware preserved);
Flask-compatible cookies keep them as HTTP dates, as Flask does. Both are read back.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, Literal
from uuid import UUID

import msgspec
from markupsafe import Markup

from .errors import UnserializableValue

SerializationFormat = Literal["json", "msgpack"]

_TAGS = frozenset({" di", " t", " b", " m", " u", " d"})
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _http_date(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return format_datetime(value.astimezone(timezone.utc), usegmt=True)


def _iso_date(value: datetime) -> str:
    return value.isoformat()


def _parse_date(text: str) -> datetime:
    # ISO strings start with the year; HTTP dates with a weekday name.
    if text[:1].isdigit():
        return datetime.fromisoformat(text)
    return parsedate_to_datetime(text)


class Tagger:
    """Converts Python values to JSON-native data and back (Flask's tag scheme)."""

    def __init__(self, *, precise_datetimes: bool = True, finite_floats: bool = False,
                 native_keys: bool = False) -> None:
        self._date = _iso_date if precise_datetimes else _http_date
        # JSON has no inf/nan: msgspec would silently write null, so refuse them instead.
        self._scalars = _SCALARS - {float} if finite_floats else _SCALARS
        # Flask's stdlib JSON converts (and sorts) dict keys itself; msgspec needs str keys.
        self._key = _json_key if native_keys else _dict_key

    def tag(self, value: Any) -> Any:
        kind = type(value)
        if kind in self._scalars:
            return value
        if kind is float:
            return _finite(value)
        if kind is dict:
            if len(value) == 1:
                (key,) = value
                if key in _TAGS:
                    return {" di": {f"{key}__": self.tag(value[key])}}
            return {self._key(k): self.tag(v) for k, v in value.items()}
        if kind is list:
            return [self.tag(v) for v in value]
        if kind is tuple:
            return {" t": [self.tag(v) for v in value]}
        if kind is bytes:
            return {" b": base64.b64encode(value).decode("ascii")}
        if callable(getattr(value, "__html__", None)):
            return {" m": str(value.__html__())}
        if kind is UUID:
            return {" u": value.hex}
        if isinstance(value, datetime):
            return {" d": self._date(value)}
        if isinstance(value, str | int | float):  # subclasses such as IntEnum or StrEnum
            return self.tag(_plain(value))
        if isinstance(value, Mapping):
            return self.tag(dict(value))
        if isinstance(value, list):
            return self.tag(list(value))
        if isinstance(value, tuple):  # namedtuples, tagged as tuples like Flask does
            return self.tag(tuple(value))
        raise UnserializableValue(
            f"a session cannot store a {kind.__name__}; store str, int, float, bool, None, "
            "list, dict, tuple, bytes, datetime, UUID or Markup values"
        )

    def untag(self, value: Any) -> Any:
        kind = type(value)
        if kind is dict:
            # Scalars are their own untagged form: only containers need the recursion.
            untag = self.untag
            value = {k: v if type(v) in _SCALARS else untag(v) for k, v in value.items()}
            if len(value) == 1:
                (key,) = value
                if key in _TAGS:
                    return _UNTAG[key](value[key])
            return value
        if kind is list:
            untag = self.untag
            return [v if type(v) in _SCALARS else untag(v) for v in value]
        return value


def _dict_key(key: Any) -> str:
    if type(key) is str:
        return key
    if isinstance(key, str):
        return str.__str__(key)
    if isinstance(key, int | float) or key is None:
        return json.dumps(key)  # the key JSON writes: "1", "1.5", "true", "null"
    raise UnserializableValue(f"session dict keys must be strings, not {type(key).__name__}")


def _json_key(key: Any) -> Any:
    if isinstance(key, str | int | float) or key is None:
        return key
    raise UnserializableValue(f"session dict keys must be strings, not {type(key).__name__}")


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise UnserializableValue(
            f"a session in 'json' format cannot store {value!r}; store it as a str or use "
            "SESSION_SERIALIZATION_FORMAT='msgpack'"
        )
    return value


def _plain(value: str | int | float) -> str | int | float:
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str.__str__(value)  # the text itself, as JSON writes it (str() of an Enum differs)


def _untag_escaped_dict(value: dict[str, Any]) -> dict[str, Any]:
    (key,) = value
    return {key[:-2]: value[key]}


_UNTAG: dict[str, Callable[[Any], Any]] = {
    " di": _untag_escaped_dict,
    " t": tuple,
    " b": lambda text: base64.b64decode(text),
    " m": Markup,
    " u": UUID,
    " d": _parse_date,
}


class ValueCodec:
    """Encodes one session value to bytes, and a map of encoded values to one blob.

    Stores that keep a session as one document use :meth:`pack`/:meth:`unpack`; the
    values inside stay encoded (``msgspec.Raw``), so a delta save never re-encodes the
    values it does not change.
    """

    def __init__(self, fmt: SerializationFormat = "msgpack") -> None:
        self.format = fmt
        self._tagger = Tagger(precise_datetimes=True, finite_floats=fmt == "json")
        #: msgspec.json or msgspec.msgpack, for stores that encode documents of their own
        self.module: Any = msgspec.json if fmt == "json" else msgspec.msgpack
        self._encode = self.module.Encoder().encode
        self._decode = self.module.Decoder().decode
        self._decode_map = self.module.Decoder(dict[str, msgspec.Raw]).decode

    def encode(self, value: Any) -> bytes:
        try:
            return self._encode(self._tagger.tag(value))
        except OverflowError as exc:  # MessagePack integers are 64-bit
            raise UnserializableValue(
                f"a session in {self.format!r} format cannot store integers beyond 64 bits; "
                "store them as a str or use SESSION_SERIALIZATION_FORMAT='json'"
            ) from exc

    def decode(self, data: bytes) -> Any:
        return self._tagger.untag(self._decode(data))

    def pack(self, values: Mapping[str, bytes]) -> bytes:
        return self._encode({k: msgspec.Raw(v) for k, v in values.items()})

    def unpack(self, blob: bytes) -> dict[str, bytes]:
        return {k: bytes(v) for k, v in self._decode_map(blob).items()}


class FlaskCookieSerializer:
    """The payload serializer of Flask's session cookie (compact tagged JSON, HTTP dates).

    It writes byte for byte what Flask writes into its session cookie - the stdlib JSON
    with Flask's settings (sorted keys, ASCII escapes, ``Infinity``) - and reads it with
    the same parser, so large integers and non-finite floats survive both ways.
    """

    def __init__(self) -> None:
        self._tagger = Tagger(precise_datetimes=False, native_keys=True)
        self._fast_loads = msgspec.json.Decoder().decode

    def dumps(self, value: Any) -> bytes:
        text = json.dumps(self._tagger.tag(value), separators=(",", ":"), ensure_ascii=True,
                          sort_keys=True)
        return text.encode("ascii")

    def loads(self, data: str | bytes) -> Any:
        try:
            # msgspec reads standard JSON exactly as the stdlib does (big integers too),
            # several times faster.
            parsed = self._fast_loads(data)
        except msgspec.DecodeError:
            parsed = json.loads(data)  # Infinity, NaN, lone surrogates: stdlib-only JSON
        return self._tagger.untag(parsed)
