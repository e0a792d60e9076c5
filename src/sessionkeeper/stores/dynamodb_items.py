"""How a session record is laid out as a DynamoDB item, and the expressions changing it.

One item per session, in DynamoDB's low-level attribute format::

    {"id": {"S": "session:<sha256 hex>"},          # the table's partition key
     "values": {"M": {"k<session key>": {"B": <encoded value>}, ...}},
     "created_at": {"N": ...}, "accessed_at": {"N": ...}, "expires_at": {"N": ...},
     "expiration": {"N": <whole epoch seconds>},    # the table's TTL attribute
     "permanent": {"BOOL": true}, "version": {"N": ...},
     "user_id": {"S": "42"}, "user_key": {"S": <sha256 hex of the user id>}}

``id`` and ``expiration`` are the names Flask-Session gives its key and its TTL
attribute, so both kinds of item can share one table. ``user_id``/``user_key`` are
absent while no user is bound: the per-user index (a GSI on ``user_key``) stays sparse.
A session key is a map key behind a ``k`` (so the empty key is a valid name), or, when
it is not valid UTF-8, its hex behind an ``x``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import SessionKeeperError, UndecodableRecord
from .base import SessionRecord, SessionUpdate

Item = dict[str, dict[str, Any]]

ID = "id"
VALUES = "values"
CREATED = "created_at"
ACCESSED = "accessed_at"
EXPIRES = "expires_at"
EXPIRATION = "expiration"  # Flask-Session's TTL attribute
PERMANENT = "permanent"
VERSION = "version"
USER_ID = "user_id"
USER_KEY = "user_key"

#: DynamoDB keeps items up to 400 KB, attribute names included
ITEM_LIMIT = 400 * 1024
#: DynamoDB refuses expressions longer than 4 KB, or with more than 300 operations
EXPRESSION_LIMIT = 4096
OPERATION_LIMIT = 300


class DynamoDBItemTooLarge(SessionKeeperError):
    """A session would be larger than DynamoDB keeps in one item (400 KB).

    Raised by the storing request (a 500 the app's logs explain), never retried: the
    session must hold less.
    """

    def __init__(self, size: int, *, change: bool = False) -> None:
        self.size = size
        self.limit = ITEM_LIMIT
        what = (f"with a change of {size} bytes the session record would be" if change
                else f"the session record is {size} bytes,")
        super().__init__(
            f"{what} more than DynamoDB keeps in one item (400 KB, {ITEM_LIMIT} bytes, "
            "attribute names included); store less in the session")


# -- names and numbers -------------------------------------------------------------------
def escape_key(key: str) -> str:
    """The map key a session key is stored under (reversible, any key allowed)."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: not sendable as they are
        return "x" + key.encode("utf-8", "surrogatepass").hex()
    return "k" + key


def unescape_key(name: str) -> str:
    if name.startswith("k"):
        return name[1:]
    if name.startswith("x"):
        return bytes.fromhex(name[1:]).decode("utf-8", "surrogatepass")
    raise ValueError(f"not an escaped session key: {name!r}")


def user_key(user_id: str) -> str:
    """The per-user index's key: fixed length, never empty (DynamoDB refuses empty or
    over-long index keys), whatever the user id."""
    return hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()


def number(value: float) -> dict[str, str]:
    if not math.isfinite(value):
        raise ValueError(f"a session time must be finite, not {value}")
    text = repr(float(value))
    if "e" in text or "E" in text:  # 1e-07: written out, as DynamoDB expects digits
        text = f"{value:.20f}".rstrip("0").rstrip(".")
    return {"N": text}


#: attributes of the layout that expressions name as they are: none is one of DynamoDB's
#: reserved words (``values`` is, so it always goes through a placeholder)
BARE_NAMES = frozenset({ID, CREATED, ACCESSED, EXPIRES, EXPIRATION, PERMANENT, VERSION,
                        USER_ID, USER_KEY})
#: attributes of the layout above; a table's TTL on one of them is not written twice
OWN_ATTRIBUTES = frozenset({ID, VALUES, CREATED, ACCESSED, EXPIRES, PERMANENT, VERSION,
                            USER_ID, USER_KEY})


@dataclass(frozen=True)
class TimeToLive:
    """Where and when DynamoDB's TTL may remove an item: ``attribute`` (the table's TTL
    attribute, ``expiration`` unless the table names another) holds whole epoch
    seconds, ``keep_expired`` (SESSION_KEEP_EXPIRED) past the exact expiry."""

    attribute: str = EXPIRATION
    keep_expired: float = 0.0

    def value(self, expires_at: float) -> dict[str, str]:
        return {"N": str(math.ceil(expires_at + self.keep_expired))}


# -- records ---------------------------------------------------------------------------------
def record_item(key: str, record: SessionRecord, ttl: TimeToLive) -> Item:
    item: Item = {
        ID: {"S": key},
        VALUES: {"M": {escape_key(k): {"B": v} for k, v in record.values.items()}},
        CREATED: number(record.created_at),
        ACCESSED: number(record.accessed_at),
        EXPIRES: number(record.expires_at),
        PERMANENT: {"BOOL": record.permanent},
        VERSION: {"N": "0"},
        ttl.attribute: ttl.value(record.expires_at),
    }
    if record.user_id is not None:
        item[USER_ID] = {"S": record.user_id}
        item[USER_KEY] = {"S": user_key(record.user_id)}
    return item


def record_from_item(item: Mapping[str, Mapping[str, Any]], store: str) -> SessionRecord:
    """The record an item holds; :class:`UndecodableRecord` when an attribute is missing
    or of the wrong type (edited by hand, written by something else)."""
    try:
        values: dict[str, bytes] = {}
        for name, value in item[VALUES]["M"].items():
            values[unescape_key(name)] = bytes(value["B"])
        user = item.get(USER_ID)
        permanent = item[PERMANENT]["BOOL"]
        if not isinstance(permanent, bool):
            raise TypeError("permanent is not a boolean")
        return SessionRecord(  # positional: one per load (SessionRecord's docstring)
            values,
            _time(item, CREATED),
            _time(item, ACCESSED),
            _time(item, EXPIRES),
            permanent,
            None if user is None else str(user["S"]),
            int(item[VERSION]["N"]) if VERSION in item else None,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UndecodableRecord(store, f"damaged session item: {exc!r}") from exc


def _time(item: Mapping[str, Mapping[str, Any]], name: str) -> float:
    value = float(item[name]["N"])
    if not math.isfinite(value):
        raise ValueError(f"{name} is {value}")
    return value


def record_size(item: Item) -> int:
    """An item's size as DynamoDB counts it, closely enough to refuse one far too large
    before sending it (the server has the final word)."""
    return sum(len(name.encode("utf-8", "surrogatepass")) + _size(value)
               for name, value in item.items())


def _size(value: Mapping[str, Any]) -> int:
    (kind, content), = value.items()
    if kind == "M":
        return 3 + sum(len(n.encode("utf-8", "surrogatepass")) + _size(v) + 1
                       for n, v in content.items())
    if kind == "B":
        return len(content)
    if kind == "S":
        return len(content.encode("utf-8", "surrogatepass"))
    if kind == "N":
        return len(content) // 2 + 2
    return 1


def change_size(update: SessionUpdate) -> int:
    return sum(len(escape_key(k).encode("utf-8", "surrogatepass")) + len(v) + 1
               for k, v in update.set_values.items())


# -- expressions -----------------------------------------------------------------------------
@dataclass
class Expression:
    """An UpdateItem's expressions, with numbered placeholders for names and values."""

    names: dict[str, str] = field(default_factory=dict)
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    sets: list[str] = field(default_factory=list)
    removes: list[str] = field(default_factory=list)
    adds: list[str] = field(default_factory=list)
    _numbers: dict[str, str] = field(default_factory=dict, repr=False)

    def name(self, attribute: str) -> str:
        if attribute in BARE_NAMES:
            return attribute
        placeholder = f"#{attribute}" if attribute.isidentifier() else f"#n{len(self.names)}"
        self.names[placeholder] = attribute
        return placeholder

    def value(self, attribute_value: dict[str, Any]) -> str:
        # One placeholder per distinct number (the request time is both the condition's
        # "now" and the new accessed_at): every value costs the client a validation and
        # the server a parse.
        number_text = attribute_value.get("N") if len(attribute_value) == 1 else None
        if number_text is not None and number_text in self._numbers:
            return self._numbers[number_text]
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = attribute_value
        if number_text is not None:
            self._numbers[number_text] = placeholder
        return placeholder

    def set(self, path: str, attribute_value: dict[str, Any]) -> None:
        self.sets.append(f"{path} = {self.value(attribute_value)}")

    def value_path(self, key: str) -> str:
        placeholder = f"#k{len(self.names)}"
        self.names[placeholder] = escape_key(key)
        return f"{self.name(VALUES)}.{placeholder}"

    @property
    def update_expression(self) -> str:
        parts = []
        if self.sets:
            parts.append("SET " + ", ".join(self.sets))
        if self.removes:
            parts.append("REMOVE " + ", ".join(self.removes))
        if self.adds:
            parts.append("ADD " + ", ".join(self.adds))
        return " ".join(parts)

    @property
    def fits(self) -> bool:
        """Within DynamoDB's limits for one expression."""
        operations = len(self.sets) + len(self.removes) + len(self.adds)
        return (operations <= OPERATION_LIMIT
                and len(self.update_expression.encode("utf-8")) <= EXPRESSION_LIMIT)

    def request(self, condition: str) -> dict[str, Any]:
        request = {"UpdateExpression": self.update_expression, "ConditionExpression": condition,
                   "ExpressionAttributeValues": self.values}
        if self.names:  # DynamoDB refuses an empty map
            request["ExpressionAttributeNames"] = self.names
        return request


def live_condition(expression: Expression, now: float) -> str:
    """The item is there, not expired at ``now``, and holds a values map: a write never
    brings back a session that ended (logout) nor patches a damaged item."""
    # A missing item has no expires_at, and a comparison with a missing attribute is
    # false: the comparison alone refuses it (an attribute_exists would test it twice).
    return (f"{expression.name(EXPIRES)} > {expression.value(number(now))} AND "
            f"attribute_type({expression.name(VALUES)}, {expression.value({'S': 'M'})})")


def metadata(expression: Expression, accessed_at: float, expires_at: float,
             ttl: TimeToLive) -> None:
    expression.set(expression.name(ACCESSED), number(accessed_at))
    expression.set(expression.name(EXPIRES), number(expires_at))
    expression.set(expression.name(ttl.attribute), ttl.value(expires_at))


def delta_expression(update: SessionUpdate, ttl: TimeToLive, *,
                     whole: dict[str, bytes] | None = None) -> Expression:
    """SET/REMOVE of just the changed values (or, with ``whole``, the values map as a
    whole), the new metadata, and a version bump that optimistic writers check."""
    expression = Expression()
    if whole is not None or update.replace:
        values = update.set_values if whole is None else whole
        expression.set(expression.name(VALUES),
                       {"M": {escape_key(k): {"B": v} for k, v in values.items()}})
    else:
        for key, value in update.set_values.items():
            expression.set(expression.value_path(key), {"B": value})
        for key in update.deleted_keys - update.set_values.keys():
            expression.removes.append(expression.value_path(key))
    metadata(expression, update.accessed_at, update.expires_at, ttl)
    expression.set(expression.name(PERMANENT), {"BOOL": update.permanent})
    if update.user_id_changed:
        if update.user_id is None:
            expression.removes += [expression.name(USER_ID), expression.name(USER_KEY)]
        else:
            expression.set(expression.name(USER_ID), {"S": update.user_id})
            expression.set(expression.name(USER_KEY), {"S": user_key(update.user_id)})
    expression.adds.append(f"{expression.name(VERSION)} {expression.value({'N': '1'})}")
    return expression
