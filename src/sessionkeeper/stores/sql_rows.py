"""What the SQL stores (embedded SQLite and SQLAlchemy) share about their rows: turning a
row back into a record, and which rows belong to this app's key prefix.

A row is read back strictly: values that no longer unpack (another
SESSION_SERIALIZATION_FORMAT, a damaged blob) and metadata columns that are not the
numbers and strings the store wrote (SQLite keeps whatever it is given) raise
:class:`UndecodableRecord`, which the core turns into a fresh session, never a 500.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from ..errors import UndecodableRecord
from ..serialization import ValueCodec
from .base import SessionRecord

#: a store key is SESSION_KEY_PREFIX followed by the 64 hex digits of a sha256
DIGEST_LENGTH = 64
#: PostgreSQL's packed read (stores/sql_packed.py binary_row) starts with created_at,
#: accessed_at, expires_at, permanent, version and the user id's length (-1: NULL)
PG_FIELDS = struct.Struct(">dddBqi")


def unpack_values(store: str, codec: ValueCodec, data: Any) -> dict[str, bytes]:
    """The values packed in a ``data`` column; :class:`UndecodableRecord` when they are not."""
    try:
        return codec.unpack(data)
    except (ValueError, TypeError) as exc:  # msgspec's DecodeError is a ValueError
        raise UndecodableRecord(store, f"the data column does not unpack ({exc})") from exc


def timestamp(store: str, column: str, value: Any) -> float:
    """A time column as the float the store wrote (a Decimal from a NUMERIC column
    too); text, blobs and non-finite numbers are damage."""
    if type(value) is float and -math.inf < value < math.inf:  # as drivers return a DOUBLE
        return value
    try:
        if isinstance(value, str | bytes | bool | None):
            raise TypeError(type(value).__name__)
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise UndecodableRecord(store, f"{column} is not a number ({exc})") from exc
    if not math.isfinite(number):
        raise UndecodableRecord(store, f"{column} is {number}")
    return number


def flag(store: str, column: str, value: Any) -> bool:
    """A boolean column: a bool, or 0/1 where the database keeps integers."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise UndecodableRecord(store, f"{column} is not a boolean ({value!r:.20})")


def user_id_of(store: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise UndecodableRecord(store, f"user_id is not text ({type(value).__name__})")


def record_of_row(store: str, codec: ValueCodec, data: Any, created_at: Any,
                  accessed_at: Any, expires_at: Any, permanent: Any, user_id: Any,
                  version: Any = None) -> SessionRecord:
    """The record a row holds, every column checked."""
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise UndecodableRecord(store, f"version is not an integer ({type(version).__name__})")
    return SessionRecord(  # positional: one per load (SessionRecord's docstring)
        unpack_values(store, codec, data),
        timestamp(store, "created_at", created_at),
        timestamp(store, "accessed_at", accessed_at),
        timestamp(store, "expires_at", expires_at),
        flag(store, "permanent", permanent),
        user_id_of(store, user_id),
        version,
    )


def unpack_row(store: str, packed: Any) -> tuple[Any, ...]:
    """The columns of a MariaDB/MySQL read packed into one (stores/sql_packed.py), as
    the seven-column read gives them: ``(data, created_at, accessed_at, expires_at,
    permanent, user_id, version)``, numbers parsed, checked further by
    :func:`record_of_row`."""
    fields = _packed_bytes(store, packed).split(b" ", 6)
    try:
        rest = fields[6]
        length = fields[5]
        user_id = None if length == b"-" else rest[:int(length)]
        data = rest if user_id is None else rest[len(user_id):]
        return (data, float(fields[0]), float(fields[1]), float(fields[2]), int(fields[3]),
                user_id, int(fields[4]))
    except (IndexError, ValueError) as exc:
        raise UndecodableRecord(store, f"the row does not unpack ({exc})") from exc


def unpack_binary_row(store: str, packed: Any) -> tuple[Any, ...]:
    """The columns of a PostgreSQL read packed into one (stores/sql_packed.py
    binary_row), as the seven-column read gives them, checked further by
    :func:`record_of_row`."""
    if not isinstance(packed, bytes | memoryview | bytearray):
        raise UndecodableRecord(store, f"a column of the row is {packed!r:.20}")
    try:
        created_at, accessed_at, expires_at, permanent, version, length = (
            PG_FIELDS.unpack_from(packed))
    except struct.error as exc:
        raise UndecodableRecord(store, f"the row does not unpack ({exc})") from exc
    start = PG_FIELDS.size
    if length < 0:
        return packed[start:], created_at, accessed_at, expires_at, permanent, None, version
    user_id = bytes(packed[start:start + length])
    return (packed[start + length:], created_at, accessed_at, expires_at, permanent, user_id,
            version)


def unpack_current(store: str, packed: Any) -> tuple[Any, ...]:
    """A save's read of a row packed into one column on MariaDB/MySQL
    (stores/sql_packed.py), as the two-column read gives it: ``(data, version)``."""
    version, _, data = _packed_bytes(store, packed).partition(b" ")
    try:
        return data, int(version)
    except ValueError as exc:
        raise UndecodableRecord(store, f"the version does not parse ({exc})") from exc


def _packed_bytes(store: str, packed: Any) -> bytes:
    """A packed column as bytes; NULL (a column of the row is: a table of another
    layout) or anything else is UndecodableRecord."""
    if isinstance(packed, bytes):
        return packed
    if isinstance(packed, bytearray):
        return bytes(packed)
    raise UndecodableRecord(store, f"a column of the row is {packed!r:.20}")


def under_prefix(key: str, prefix: str) -> bool:
    """Whether ``key`` is a session key of an app with this SESSION_KEY_PREFIX.

    The length matters as much as the start: with prefixes ``a:`` and ``a:b:`` on one
    table, ``a:b:<digest>`` starts with ``a:`` but is no key of that app.
    """
    return len(key) == len(prefix) + DIGEST_LENGTH and key.startswith(prefix)


def like_prefix(prefix: str, escape: str = "/") -> str:
    """A LIKE pattern matching strings that start with ``prefix`` (``%`` and ``_`` in it
    taken literally, with ``escape`` as the escape character)."""
    escaped = (prefix.replace(escape, escape * 2).replace("%", escape + "%")
               .replace("_", escape + "_"))
    return escaped + "%"
