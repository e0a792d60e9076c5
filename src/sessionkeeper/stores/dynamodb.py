"""Sessions in Amazon DynamoDB (``SESSION_TYPE="dynamodb"``), over boto3's low-level client.

One item per session (layout: :mod:`.dynamodb_items`) in a table with Flask-Session's
key schema and TTL attribute (:mod:`.dynamodb_table`). A change is one ``UpdateItem``
that sets or removes just the changed values inside the item's ``values`` map, under
the condition that the item still exists and is live: two requests changing different
keys both survive, and a write after a logout is refused instead of bringing the
session back. DynamoDB's TTL deletes expired items lazily (within days), so every read
and write compares ``expires_at`` too. The per-user index is a global secondary index
on ``user_key``.

Round trips: a read is one consistent ``GetItem``; a change, a refresh, a new session
and a claimed key (``add``) are one write each.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from ..errors import ConfigurationError, SessionKeeperError, StoreUnavailable, UndecodableRecord
from ..serialization import ValueCodec
from ..settings import Settings, seconds
from .base import SessionRecord, SessionStore, SessionUpdate
from .dynamodb_client import DEFAULT_TIMEOUT, client_from_setting
from .dynamodb_items import (
    EXPIRES,
    ID,
    ITEM_LIMIT,
    USER_KEY,
    VERSION,
    DynamoDBItemTooLarge,
    Expression,
    TimeToLive,
    change_size,
    delta_expression,
    live_condition,
    metadata,
    number,
    record_from_item,
    record_item,
    record_size,
    user_key,
)
from .dynamodb_logs import hidden, install
from .dynamodb_table import USER_INDEX, add_index_command, ensure_table, error_code

logger = logging.getLogger("sessionkeeper")

DEFAULT_TABLE = "Sessions"  # Flask-Session's default, so switching keeps the same table
#: a change too large for one expression is rewritten whole, optimistically; it gives
#: up (503) after this many conflicting concurrent writes
MAX_REWRITES = 20
#: index entries keys_for_user reads a request
PAGE = 500
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")


class DynamoDBIndexMissing(SessionKeeperError):
    """The table has no active per-user index, so a user's sessions cannot be listed."""

    def __init__(self, table: str, reason: str) -> None:
        super().__init__(
            f"the DynamoDB table {table!r} has no active index {USER_INDEX!r} ({reason}); "
            f"add it: {add_index_command(table)}")


class _ConditionFailed(Exception):
    """ConditionalCheckFailedException: the item was not in the state a write needs."""


class _TooLarge(Exception):
    """DynamoDB refused an item over its size limit."""


class DynamoDBStore(SessionStore):
    """Keeps sessions in one DynamoDB table; every operation is one request."""

    name = "dynamodb"
    sweeps_itself = True  # DynamoDB's TTL; a request must never scan the table

    def __init__(self, client: Any, table: str = DEFAULT_TABLE, *,
                 key_prefix: str = "", keep_expired: float = 0.0, create_table: bool = True,
                 owns_client: bool = False) -> None:
        self.client = client
        self.table = table
        #: SESSION_KEY_PREFIX: the user index lists only keys under it, so apps sharing
        #: a table with different prefixes never see each other's sessions
        self.key_prefix = key_prefix
        #: create the table (and turn its TTL on) at start-up when it is missing
        self.create_table = create_table
        self.ttl = TimeToLive(keep_expired=keep_expired)
        self.page_size = PAGE
        self._owns_client = owns_client
        install()

    # -- calls ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """An unreachable, slow, throttling or refusing endpoint is StoreUnavailable
        (503); requests DynamoDB finds invalid stay errors (they are bugs)."""
        try:
            with hidden():
                yield
        except ClientError as exc:
            code = error_code(exc)
            message = str(exc.response.get("Error", {}).get("Message", ""))
            if code == "ConditionalCheckFailedException":
                raise _ConditionFailed from exc
            if code == "ValidationException":
                if "Item size" in message:
                    raise _TooLarge from exc
                raise
            if code == "ResourceNotFoundException":
                raise StoreUnavailable(self.name, f"the table {self.table!r} does not exist"
                                       ) from exc
            raise StoreUnavailable(self.name, f"{code}: {message}") from exc
        except ParamValidationError:
            raise
        except BotoCoreError as exc:  # connection refused or reset, timeouts, credentials
            raise StoreUnavailable(self.name, exc) from exc

    def _call(self, operation: str, **request: Any) -> dict[str, Any]:
        with self._errors():
            answer: dict[str, Any] = getattr(self.client, operation)(
                TableName=self.table, **request)
            return answer

    def _write(self, operation: str, size: int, *, change: bool = False,
               **request: Any) -> bool:
        """A conditional write: False when its condition did not hold."""
        try:
            self._call(operation, **request)
        except _ConditionFailed:
            return False
        except _TooLarge:
            raise DynamoDBItemTooLarge(size, change=change) from None
        return True

    def _key(self, key: str) -> dict[str, dict[str, str]]:
        return {ID: {"S": key}}

    # -- interface -------------------------------------------------------------------------
    def load(self, key: str, now: float) -> SessionRecord | None:
        item = self._call("get_item", Key=self._key(key), ConsistentRead=True).get("Item")
        if item is None:
            return None
        record = record_from_item(item, self.name)
        return record if record.expires_at > now else None

    def _item(self, key: str, record: SessionRecord) -> tuple[dict[str, Any], int]:
        item = record_item(key, record, self.ttl)
        size = record_size(item)
        if size > ITEM_LIMIT:  # refused before megabytes travel
            raise DynamoDBItemTooLarge(size)
        return item, size

    def create(self, key: str, record: SessionRecord) -> None:
        item, size = self._item(key, record)
        self._write("put_item", size, Item=item)

    def add(self, key: str, record: SessionRecord) -> bool:
        # One conditional PutItem: no item, or a dead one (expired and awaiting TTL,
        # or damaged), which is replaced.
        item, size = self._item(key, record)
        return self._write(
            "put_item", size, Item=item,
            ConditionExpression="attribute_not_exists(#id) OR NOT #e > :now",
            ExpressionAttributeNames={"#id": ID, "#e": EXPIRES},
            ExpressionAttributeValues={":now": number(record.accessed_at)})

    def update(self, key: str, update: SessionUpdate) -> bool:
        size = change_size(update)
        if size > ITEM_LIMIT:
            raise DynamoDBItemTooLarge(size, change=True)
        expression = delta_expression(update, self.ttl)
        if not expression.fits:
            return self._rewrite(key, update, size)
        return self._write("update_item", size, change=True, Key=self._key(key),
                           **expression.request(live_condition(expression,
                                                               update.accessed_at)))

    def _rewrite(self, key: str, update: SessionUpdate, size: int) -> bool:
        """Apply a change too large for one expression: read, merge, write the values
        map whole unless the item's version moved meanwhile (then again)."""
        for _ in range(MAX_REWRITES):
            item = self._call("get_item", Key=self._key(key), ConsistentRead=True).get("Item")
            if item is None:
                return False
            try:
                current = record_from_item(item, self.name)
            except UndecodableRecord:
                return False  # not patched: its next load removes it
            if current.expires_at <= update.accessed_at:
                return False
            expression = delta_expression(update, self.ttl,
                                          whole=update.apply_to(current.values))
            condition = live_condition(expression, update.accessed_at)
            version = expression.name(VERSION)
            condition += (f" AND {version} = {expression.value({'N': str(current.version)})}"
                          if current.version is not None
                          else f" AND attribute_not_exists({version})")
            if self._write("update_item", size, change=True, Key=self._key(key),
                           **expression.request(condition)):
                return True
        raise StoreUnavailable(
            self.name, f"{MAX_REWRITES} conflicting concurrent writes to one session")

    def touch(self, key: str, accessed_at: float, expires_at: float, *,
              version: Any = None) -> bool:
        expression = Expression()
        metadata(expression, accessed_at, expires_at, self.ttl)
        return self._write("update_item", 0, Key=self._key(key),
                           **expression.request(live_condition(expression, accessed_at)))

    def delete(self, key: str) -> None:
        self._call("delete_item", Key=self._key(key))

    def delete_expired(self, now: float) -> int:
        """Scan for items expired at ``now`` and delete each unless it was refreshed
        meanwhile. A whole-table scan: with TTL on, DynamoDB does this itself."""
        names = {"#id": ID, "#e": EXPIRES}
        values = {":now": number(now)}
        removed = 0
        request: dict[str, Any] = {"FilterExpression": "#e <= :now",
                                   "ProjectionExpression": "#id",
                                   "ExpressionAttributeNames": names,
                                   "ExpressionAttributeValues": values}
        while True:
            page = self._call("scan", **request)
            for item in page.get("Items", ()):
                removed += self._write("delete_item", 0, Key={ID: item[ID]},
                                       ConditionExpression="#e <= :now",
                                       ExpressionAttributeNames={"#e": EXPIRES},
                                       ExpressionAttributeValues=values)
            if "LastEvaluatedKey" not in page:
                return removed
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def keys_for_user(self, user_id: str, now: float) -> list[str]:
        """The user's live session keys, from the index, a page at a time.

        The index is eventually consistent on AWS: a session bound in the last moment
        (typically under a second) may be missing from the list.
        """
        request: dict[str, Any] = {
            "IndexName": USER_INDEX, "KeyConditionExpression": "#u = :u",
            "FilterExpression": "#e > :now", "ProjectionExpression": "#id",
            "Limit": self.page_size,
            "ExpressionAttributeNames": {"#u": USER_KEY, "#e": EXPIRES, "#id": ID},
            "ExpressionAttributeValues": {":u": {"S": user_key(user_id)}, ":now": number(now)},
        }
        keys: list[str] = []
        while True:
            try:
                page = self._call("query", **request)
            except ClientError as exc:  # a ValidationException: no such index (yet)
                if "index" in str(exc).lower():
                    raise DynamoDBIndexMissing(self.table, str(exc)) from exc
                raise
            keys += [str(item[ID]["S"]) for item in page.get("Items", ())]
            if "LastEvaluatedKey" not in page:
                break
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        if not self.key_prefix:
            return keys
        # The prefix and a sha256 exactly: a longer prefix starting with this one is
        # another app's.
        own = re.compile(re.escape(self.key_prefix) + "[0-9a-f]{64}")
        return [key for key in keys if own.fullmatch(key)]

    def check(self) -> None:
        """Create or find the table (waiting until it is ACTIVE) and learn its TTL
        attribute; StoreUnavailable when the endpoint cannot be reached."""
        with self._errors():
            state = ensure_table(self.client, self.table, create=self.create_table)
        self.ttl = state.time_to_live(self.ttl.keep_expired)

    def close(self) -> None:
        if self._owns_client:
            with contextlib.suppress(Exception):
                self.client.close()


# -- configuration -----------------------------------------------------------------------
def _table_name(config: Mapping[str, Any]) -> str:
    table = config.get("SESSION_DYNAMODB_TABLE") or DEFAULT_TABLE
    if not isinstance(table, str) or not _TABLE_NAME.fullmatch(table):
        raise ConfigurationError("SESSION_DYNAMODB_TABLE must be a DynamoDB table name "
                                 f"(3-255 of A-Z a-z 0-9 _ . -), not {table!r}")
    return table


def store_from_settings(settings: Settings, codec: ValueCodec) -> DynamoDBStore:
    """SESSION_DYNAMODB (resource, client, endpoint URL or None), SESSION_DYNAMODB_TABLE
    (default "Sessions"), SESSION_DYNAMODB_TABLE_EXISTS (default False: create it),
    SESSION_DYNAMODB_TIMEOUT (seconds, default 2, for a client the store builds)."""
    config = settings.config
    raw_timeout = config.get("SESSION_DYNAMODB_TIMEOUT")
    timeout = (DEFAULT_TIMEOUT if raw_timeout is None
               else seconds(raw_timeout, "SESSION_DYNAMODB_TIMEOUT"))
    exists = config.get("SESSION_DYNAMODB_TABLE_EXISTS", False)
    if not isinstance(exists, bool):
        raise ConfigurationError(
            f"SESSION_DYNAMODB_TABLE_EXISTS must be True or False, not {exists!r}")
    table = _table_name(config)
    client, owned = client_from_setting(config.get("SESSION_DYNAMODB"), timeout)
    return DynamoDBStore(client, table, key_prefix=settings.key_prefix,
                         keep_expired=settings.keep_expired, create_table=not exists,
                         owns_client=owned)
