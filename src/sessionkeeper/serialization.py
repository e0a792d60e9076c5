"""Turning session values into bytes and back, without pickle.

Values are first *tagged* into JSON-native data with the tag scheme of Flask's
``TaggedJSONSerializer`` (``" t"`` tuple, ``" b"`` bytes, ``" m"`` Markup, ``" u"`` UUID,
``" d"`` datetime, ``" di"`` escaped dict), so cookies stay readable by Flask itself, and
then encoded as JSON or MessagePack by msgspec.

Server-side stores also keep what Flask-Session stores - dict keys that are not strings,
sets, dates, times, timedeltas, Decimals - with tags of the same style
(:mod:`.serialization_types`), and keep datetimes as ISO 8601 (microseconds and
naive/aware preserved). Cookies are Flask's: datetimes as HTTP dates, keys of other types
as JSON text, dates and Decimals as text, and no sets, times or timedeltas, all as Flask
does.

Values nest at most :data:`MAX_DEPTH` containers deep, on the way in and on the way out:
what is stored always reads back, and no stored data can make decoding recurse without
bound. Data that does not decode raises :class:`UndecodableValue`, never anything else.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, Literal
from uuid import UUID

import msgspec
from markupsafe import Markup

from . import serialization_types as extra
from .errors import UnserializableValue

SerializationFormat = Literal["json", "msgpack"]

#: Flask's own tags, the only ones its cookie session holds
_FLASK_TAGS = frozenset({" di", " t", " b", " m", " u", " d"})
_TAGS = _FLASK_TAGS | extra.EXTRA_TAGS
_SCALARS = frozenset({str, int, float, bool, type(None)})
#: set items whose natural order is total (unlike floats with NaN, or frozensets)
_ORDERED = (int, str)
_MISSING: Any = object()

#: how many containers (lists, dicts, tuples, sets) a session value may nest: far more
#: than any real session needs, and shallow enough that encoding and decoding (a few
#: frames per level) stay far from Python's recursion limit wherever the app reads it
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
        f"a session value may nest at most {MAX_DEPTH} lists, dicts, tuples or sets deep"
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
    """Converts Python values to JSON-native data and back (Flask's tag scheme).

    ``flask_cookie`` makes it Flask's cookie session exactly: Flask's tags only, dict
    keys left for the JSON writer (which turns them into text or fails, as Flask's does),
    and what Flask's JSON provider does with dates and Decimals (text) and with sets,
    times and timedeltas (it refuses them).
    """

    def __init__(self, *, precise_datetimes: bool = True, finite_floats: bool = False,
                 flask_cookie: bool = False) -> None:
        self._date = _iso_date if precise_datetimes else _http_date
        # JSON has no inf/nan: msgspec would silently write null, so refuse them instead.
        self._scalars = _SCALARS - {float} if finite_floats else _SCALARS
        self._flask_cookie = flask_cookie
        self._tags = _FLASK_TAGS if flask_cookie else _TAGS

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
                if key in self._tags:
                    return {" di": {f"{key}__": self.tag(value[key], depth)}}
            tagged = {}
            tag, scalars, native_keys = self.tag, self._scalars, self._flask_cookie
            for k, v in value.items():
                if type(k) is not str and not native_keys:
                    return self._tag_keyed(value, depth, tagged)
                tagged[k] = v if type(v) in scalars else tag(v, depth)
            return tagged
        if kind is bytes:
            return {" b": base64.b64encode(value).decode("ascii")}
        if callable(getattr(value, "__html__", None)):
            return {" m": str(value.__html__())}
        if kind is UUID:
            return {" u": value.hex}
        if isinstance(value, datetime):
            return {" d": self._date(value)}
        if kind is set or kind is frozenset:
            return self._tag_set(value, depth)
        if isinstance(value, date | time | timedelta | Decimal):
            return self._tag_other(value)
        if isinstance(value, str | int | float):  # subclasses such as IntEnum or StrEnum
            return self.tag(_plain(value), depth)
        if isinstance(value, Mapping):
            return self.tag(dict(value), depth)
        if isinstance(value, list):
            return self.tag(list(value), depth)
        if isinstance(value, tuple):  # namedtuples, tagged as tuples like Flask does
            return self.tag(tuple(value), depth)
        if isinstance(value, set | frozenset):
            return self.tag(set(value) if isinstance(value, set) else frozenset(value), depth)
        raise self._unsupported(kind)

    def _tag_keyed(self, value: dict[Any, Any], depth: int, done: dict[str, Any]) -> Any:
        """A dict with a key that is not a ``str`` (``depth``: its items' depth), whose
        values under the ``str`` keys before it are tagged already (``done``: tagging
        them again would cost twice per level of such dicts)."""
        tag, missing = self.tag, _MISSING
        text_keys = all(isinstance(k, str) for k in value)  # StrEnum: its text, as in JSON
        tagged: dict[Any, Any] = {}
        items: list[Any] = []
        for k, v in value.items():
            item = done.get(k, missing) if type(k) is str else missing
            if item is missing:
                item = tag(v, depth)
            if text_keys:
                tagged[str.__str__(k)] = item
            else:
                items.append(tag(k, depth))
                items.append(item)
        return tagged if text_keys else {extra.DICT_WITH_KEYS: items}

    def _tag_set(self, value: set[Any] | frozenset[Any], depth: int) -> Any:
        if self._flask_cookie:
            raise self._unsupported(type(value))
        if depth >= MAX_DEPTH:
            raise _too_deep()
        depth += 1
        # Change detection compares encodings, so equal sets must encode alike whatever
        # their history: their items go in an order that depends on the items alone.
        kinds = {type(item) for item in value}
        if len(kinds) == 1 and kinds.pop() in _ORDERED:
            items = sorted(value)  # plain ints or strs: their own order, no tagging
        else:
            # Floats (NaN), tuples, mixed types: by their tagged text (stdlib JSON writes
            # big integers and non-finite floats too). A loop: one frame per level.
            items = []
            for item in value:
                items.append(self.tag(item, depth))
            items.sort(key=json.dumps)
        return {extra.SET if type(value) is set else extra.FROZENSET: items}

    def _tag_other(self, value: date | time | timedelta | Decimal) -> Any:
        if self._flask_cookie:
            # What Flask's JSON provider writes for them (the others it refuses).
            if isinstance(value, date):
                return _http_date(datetime.combine(value, time()))
            if isinstance(value, Decimal):
                return str(value)
            raise self._unsupported(type(value))
        if isinstance(value, date):
            return {extra.DATE: value.isoformat()}
        if isinstance(value, time):
            return {extra.TIME: value.isoformat()}
        if isinstance(value, timedelta):
            return {extra.TIMEDELTA: [value.days, value.seconds, value.microseconds]}
        return {extra.DECIMAL: str(value)}

    def _unsupported(self, kind: type) -> UnserializableValue:
        if self._flask_cookie:
            return UnserializableValue(
                f"a cookie session cannot store a {kind.__name__}, as Flask's cannot; store "
                "str, int, float, bool, None, list, dict, tuple, bytes, datetime, date, "
                "Decimal, UUID or Markup values (dates and Decimals read back as text), or "
                "use a server-side SESSION_TYPE"
            )
        return UnserializableValue(
            f"a session cannot store a {kind.__name__}; store str, int, float, bool, None, "
            "list, dict, tuple, set, frozenset, bytes, datetime, date, time, timedelta, "
            "Decimal, UUID or Markup values"
        )

    def untag(self, value: Any, depth: int = 0) -> Any:
        """The value that ``value`` (JSON-native data, found inside ``depth`` containers)
        stands for; raises :class:`UndecodableValue` past :data:`MAX_DEPTH`."""
        kind = type(value)
        if kind is dict:
            if len(value) == 1:
                (key,) = value
                if key in self._tags:
                    if key in extra.EXTRA_TAGS:
                        return self._untag_extra(key, value[key], depth)
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

    def _untag_extra(self, key: str, payload: Any, depth: int) -> Any:
        kind = type(payload)
        if kind is extra.PAYLOAD_TYPES[key]:
            if kind is list:  # a damaged list raises, to become UndecodableValue
                return extra.EXTRA_UNTAG[key](self.untag(payload, depth))
            try:
                return extra.EXTRA_UNTAG[key](payload)
            except (ValueError, ArithmeticError):  # decimal.InvalidOperation included
                pass
        # Written before this tag existed: a dict of that one key, read as it was then.
        # (One pass over the payload: a second one could be redone at every level.)
        if depth >= MAX_DEPTH:
            raise UndecodableValue(f"nested deeper than {MAX_DEPTH} levels")
        return {key: self.untag(payload, depth + 1)}


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
            value = self._decode(data)
            # Scalars are their own untagged form (most session values): no untag call.
            return value if type(value) in _SCALARS else self._tagger.untag(value)
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
        self._tagger = Tagger(precise_datetimes=False, flask_cookie=True)
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
        except TypeError as exc:  # keys Flask's sorted JSON fails on: mixed types, tuples
            raise UnserializableValue(
                "a cookie session's dict keys must be str, int, float, bool or None, and "
                f"of types that can be sorted together, as Flask's must ({exc})"
            ) from exc
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
