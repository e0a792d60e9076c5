"""The value types server-side sessions keep beyond Flask's tags, tagged in Flask's style.

Flask-Session 0.8 stores these in its MessagePack format; some come back as it stored
them (dict keys that are not strings), others as something else (a set as a list, a date
as text). Server-side stores keep them all as they were:

======  ==========================================  ===================================
tag     value                                       payload
======  ==========================================  ===================================
" dk"   a dict with a key that is not a string      ``[key, value, key, value, ...]``
" s"    a set                                       its items, in a canonical order
" fs"   a frozenset                                 the same
" da"   a date                                      ISO 8601 text
" ti"   a time                                      ISO 8601 text (with its UTC offset)
" td"   a timedelta                                 ``[days, seconds, microseconds]``
" dc"   a Decimal                                   its text
======  ==========================================  ===================================

Flask's own cookie session holds none of these tags (see ``FlaskCookieSerializer``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, time, timedelta
from decimal import Decimal
from typing import Any

DICT_WITH_KEYS = " dk"
SET = " s"
FROZENSET = " fs"
DATE = " da"
TIME = " ti"
TIMEDELTA = " td"
DECIMAL = " dc"

#: tags added after Flask's: a record written before them may hold a one-key dict spelled
#: like one, which reads back as that dict when its payload is not of the tag's type (or
#: not text the tag writes); older versions read the new tags as such dicts
EXTRA_TAGS = frozenset({DICT_WITH_KEYS, SET, FROZENSET, DATE, TIME, TIMEDELTA, DECIMAL})

#: the JSON-native type of each extra tag's payload
PAYLOAD_TYPES: dict[str, type] = {
    DICT_WITH_KEYS: list, SET: list, FROZENSET: list, DATE: str, TIME: str, TIMEDELTA: list,
    DECIMAL: str,
}


def _dict_with_keys(items: list[Any]) -> dict[Any, Any]:
    if len(items) % 2:
        raise ValueError("a key without a value")
    return dict(zip(items[::2], items[1::2], strict=True))


def _timedelta(parts: list[Any]) -> timedelta:
    days, seconds, microseconds = parts
    if not all(type(part) is int for part in parts):
        raise TypeError("a timedelta's parts must be integers")
    return timedelta(days, seconds, microseconds)


#: each extra tag's payload (of its PAYLOAD_TYPES type, already untagged) to its value;
#: any of the errors listed in serialization._DECODE_ERRORS for a damaged one
EXTRA_UNTAG: dict[str, Callable[[Any], Any]] = {
    DICT_WITH_KEYS: _dict_with_keys,
    SET: set,
    FROZENSET: frozenset,
    DATE: date.fromisoformat,
    TIME: time.fromisoformat,
    TIMEDELTA: _timedelta,
    DECIMAL: Decimal,
}

