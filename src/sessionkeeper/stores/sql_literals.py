"""The direct statements' parameters written into the SQL by the store, as the driver
would write them.

psycopg2 and pymysql both send a statement as text with its parameters quoted in, and
both quote through Python-level machinery: psycopg2 builds an adapter object per
parameter, pymysql looks up an encoder and escapes. For a save's seven parameters that
is about 66,000 instructions in psycopg2 and 45,000 in pymysql (measured on the
statement alone under callgrind), against a few thousand to write them here. The values
the store binds are of a few plain types, so they are written here, in the literal form
the driver uses, and the statement is sent with no parameters (neither driver then
touches its text).

Only values whose literal is the same text under every server setting are written
here: numbers, flags, NULL, bytes (in hex) and printable ASCII without a quote or a
backslash (so ``standard_conforming_strings``, ``NO_BACKSLASH_ESCAPES`` and the client
encoding cannot change what they mean). Anything else, such as a key prefix with a quote
in it, makes the statement go to the driver with its parameters, as before.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

#: a placeholder of the pyformat paramstyle (psycopg2's): %(name)s
PYFORMAT_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
#: printable ASCII without the quote and the backslash
_PLAIN_TEXT = re.compile(r"[\x20-\x26\x28-\x5b\x5d-\x7e]*")

#: how each type is written (None: that value is not); a value of another type is not
LiteralWriters = Mapping[type, Callable[[Any], "str | None"]]


def _text(value: str) -> str | None:
    return f"'{value}'" if _PLAIN_TEXT.fullmatch(value) else None


def _postgresql_float(value: float) -> str | None:
    return repr(value) if math.isfinite(value) else None


def _mysql_float(value: float) -> str | None:
    if not math.isfinite(value):
        return None
    text = repr(value)
    return text if "e" in text else text + "e0"  # a DOUBLE, not a DECIMAL


_EITHER: LiteralWriters = {int: str, str: _text, type(None): lambda _: "NULL"}

#: psycopg2's literals; bytes as an escape string, read the same whatever the settings
POSTGRESQL_LITERALS: LiteralWriters = {
    **_EITHER, float: _postgresql_float, bool: lambda flag: "true" if flag else "false",
    bytes: lambda data: "E'\\\\x" + data.hex() + "'",
}
#: pymysql's literals, but bytes in hex rather than escaped (the same binary string)
MYSQL_LITERALS: LiteralWriters = {
    **_EITHER, float: _mysql_float, bool: lambda flag: "1" if flag else "0",
    bytes: lambda data: "X'" + data.hex() + "'",
}

#: the drivers whose statements are written here, and how
LITERAL_WRITERS: dict[str, LiteralWriters] = {
    "psycopg2": POSTGRESQL_LITERALS,
    "pymysql": MYSQL_LITERALS,
}


def sql_literal(value: object, writers: LiteralWriters) -> str | None:
    """``value`` as the driver would write it, or None when it is not written here."""
    write = writers.get(type(value))
    return None if write is None else write(value)


def literals_of(names: tuple[str, ...], params: Mapping[str, Any],
                writers: LiteralWriters) -> list[str] | None:
    """The literals of ``params[name]`` for each of ``names``, or None when one of them
    is not written here."""
    literals = []
    for name in names:
        written = sql_literal(params[name], writers)
        if written is None:
            return None
        literals.append(written)
    return literals
