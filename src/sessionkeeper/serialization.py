"""Turning session values into bytes and back, without pickle.

Values are first *tagged* into JSON-native data with the tag scheme of Flask's
``TaggedJSONSerializer`` (``" t"`` tuple, ``" b"`` bytes, ``" m"`` Markup, ``" u"`` UUID,
``" d"`` datetime, ``" di"`` escaped dict), so cookies stay readable by Flask itself, and
then encoded as JSON or MessagePack by msgspec.

Server-side stores keep datetimes as ISO 8601 (microseconds and naive/aware preserved);
Flask-compatible cookies keep them as HTTP dates, as Flask does. Both are read back.

Values nest at most :data:`MAX_DEPTH` containers deep, on the way in and on the way out:
what is stored always reads back, and no stored data can make decoding recurse without
bound. Data that does not decode raises :class:`UndecodableValue`, never anything else.
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

#: how many lists, dicts and tuples a session value may nest: far more than any real
#: session needs, and shallow enough that encoding and decoding (a few frames per level)
#: stay far from Python's recursion limit wherever the app reads its session
MAX_DEPTH = 100


class UndecodableValue(msgspec.DecodeError):
    """Stored session data that no longer decodes: damaged, written in the other
    SESSION_SERIALIZATION_FORMAT, or nested deeper than :data:`MAX_DEPTH`.

    A ``msgspec.DecodeError`` (so a ``ValueError``), as the rest of a damaged record is.
    """


#: what decoding damaged data can raise (the tag handlers get arbitrary types too)
_DECODE_ERRORS = (ValueError, TypeError, AttributeError, LookupError, ArithmeticError,
                  RecursionError)


def naming_key(key: str, error: UnserializableValue) -> UnserializableValue:
    """``error`` again, saying which session key holds the value."""
    return UnserializableValue(f"session[{key!r}] cannot be stored: {error}")


def _too_deep() -> UnserializableValue:
    return UnserializableValue(
        f"a session value may nest at most {MAX_DEPTH} lists, dicts or tuples deep"
    )


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

    def tag(self, value: Any, depth: int = 0) -> Any:
        """``value``, found inside ``depth`` containers, as JSON-native data."""
        # Loops rather than comprehensions: a comprehension's closure would cost every
        # call, the many calls for plain values included.
        kind = type(value)
        if kind in self._scalars:
            return value
        if kind is float:
            return _finite(value)
        if kind is list or kind is tuple:
            if depth >= MAX_DEPTH:
                raise _too_deep()
            depth += 1
            items: list[Any] = []
            add, tag, scalars = items.append, self.tag, self._scalars
            for v in value:
                add(v if type(v) in scalars else tag(v, depth))
            return items if kind is list else {" t": items}
        if kind is dict:
            if depth >= MAX_DEPTH:
                raise _too_deep()
            depth += 1
            if len(value) == 1:
                (key,) = value
                if key in _TAGS:
                    return {" di": {f"{key}__": self.tag(value[key], depth)}}
            tagged = {}
            dict_key, tag, scalars = self._key, self.tag, self._scalars
            for k, v in value.items():
                tagged[dict_key(k)] = v if type(v) in scalars else tag(v, depth)
            return tagged
        if kind is bytes:
            return {" b": base64.b64encode(value).decode("ascii")}
        if callable(getattr(value, "__html__", None)):
            return {" m": str(value.__html__())}
        if kind is UUID:
            return {" u": value.hex}
        if isinstance(value, datetime):
            return {" d": self._date(value)}
        if isinstance(value, str | int | float):  # subclasses such as IntEnum or StrEnum
            return self.tag(_plain(value), depth)
        if isinstance(value, Mapping):
            return self.tag(dict(value), depth)
        if isinstance(value, list):
            return self.tag(list(value), depth)
        if isinstance(value, tuple):  # namedtuples, tagged as tuples like Flask does
            return self.tag(tuple(value), depth)
        raise UnserializableValue(
            f"a session cannot store a {kind.__name__}; store str, int, float, bool, None, "
            "list, dict, tuple, bytes, datetime, UUID or Markup values"
        )

    def untag(self, value: Any, depth: int = 0) -> Any:
        """The value that ``value`` (JSON-native data, found inside ``depth`` containers)
        stands for; raises :class:`UndecodableValue` past :data:`MAX_DEPTH`."""
        kind = type(value)
        if kind is dict:
            if len(value) == 1:
                (key,) = value
                if key in _TAGS:
                    # A tag wraps one value at its own level: a tuple's list is the tuple.
                    return _UNTAG[key](self.untag(value[key], depth))
            if depth >= MAX_DEPTH:
                raise UndecodableValue(f"nested deeper than {MAX_DEPTH} levels")
            depth += 1
            untag = self.untag
            # Scalars are their own untagged form: only containers need the recursion.
            untagged = {}
            for k, v in value.items():
                untagged[k] = v if type(v) in _SCALARS else untag(v, depth)
            return untagged
        if kind is list:
            if depth >= MAX_DEPTH:
                raise UndecodableValue(f"nested deeper than {MAX_DEPTH} levels")
            depth += 1
            untag = self.untag
            items: list[Any] = []
            add = items.append
            for v in value:
                add(v if type(v) in _SCALARS else untag(v, depth))
            return items
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
        except UnicodeEncodeError as exc:  # lone surrogates have no UTF-8 form
            raise UnserializableValue(
                f"a session cannot store text that is not valid Unicode ({exc.reason})"
            ) from exc

    def decode(self, data: bytes) -> Any:
        """The value in ``data``; :class:`UndecodableValue` when it does not decode."""
        try:
            return self._tagger.untag(self._decode(data))
        except UndecodableValue:
            raise
        except _DECODE_ERRORS as exc:
            raise UndecodableValue(f"{type(exc).__name__}: {exc}") from exc

    def pack(self, values: Mapping[str, bytes]) -> bytes:
        return self._encode({k: msgspec.Raw(v) for k, v in values.items()})

    def unpack(self, blob: bytes) -> dict[str, bytes]:
        """The encoded values in ``blob``; :class:`UndecodableValue` when it is not such
        a map (msgspec checks each value's shape, recursing into it)."""
        try:
            return {k: bytes(v) for k, v in self._decode_map(blob).items()}
        except UndecodableValue:
            raise
        except (msgspec.DecodeError, RecursionError) as exc:
            raise UndecodableValue(f"{type(exc).__name__}: {exc}") from exc


#: the depth of a cookie's payload: the session itself, whose values nest as deep as
#: server-side ones
_PAYLOAD = -1


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
        """A session's payload (a dict of its values) as Flask writes it."""
        try:
            return self._text(self._tagger.tag(value, _PAYLOAD))
        except UnserializableValue as exc:
            raise self._naming_key(value, exc) from exc

    def dumps_value(self, value: Any) -> bytes:
        """One session value as it is written inside the payload."""
        return self._text(self._tagger.tag(value))

    @staticmethod
    def _text(tagged: Any) -> bytes:
        try:
            text = json.dumps(tagged, separators=(",", ":"), ensure_ascii=True,
                              sort_keys=True)
        except TypeError as exc:  # keys of mixed types, which Flask's sorted JSON fails on
            raise UnserializableValue(f"a dict's keys cannot be sorted ({exc})") from exc
        return text.encode("ascii")

    def _naming_key(self, value: Any, error: UnserializableValue) -> UnserializableValue:
        """The error of a session payload, naming the key of the value that failed."""
        if isinstance(value, dict):
            for key, item in value.items():
                try:
                    self.dumps_value(item)
                except UnserializableValue as exc:
                    return naming_key(key, exc)
        return error

    def loads(self, data: str | bytes) -> Any:
        """The payload in ``data``; :class:`UndecodableValue` when it does not decode."""
        try:
            try:
                # msgspec reads standard JSON exactly as the stdlib does (big integers
                # too), several times faster.
                parsed = self._fast_loads(data)
            except msgspec.DecodeError:
                parsed = json.loads(data)  # Infinity, NaN, lone surrogates: stdlib JSON
            return self._tagger.untag(parsed, _PAYLOAD)
        except UndecodableValue:
            raise
        except _DECODE_ERRORS as exc:
            raise UndecodableValue(f"{type(exc).__name__}: {exc}") from exc


class CookieValueCodec(ValueCodec):
    """Change detection for cookie sessions, which keep what Flask's cookie keeps.

    Values go through msgspec's JSON like server-side ones; the few that it cannot write
    but Flask's cookie can (``inf``, ``nan``, lone surrogates) through the cookie's own
    serializer. Each value's form stays the same for as long as it does not change.
    """

    def __init__(self) -> None:
        super().__init__("json")
        self._cookie = FlaskCookieSerializer()

    def encode(self, value: Any) -> bytes:
        try:
            return super().encode(value)
        except UnserializableValue:
            pass
        return self._cookie.dumps_value(value)  # refuses what the cookie cannot keep either
