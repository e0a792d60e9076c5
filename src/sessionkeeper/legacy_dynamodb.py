"""Flask-Session's DynamoDB sessions: items ``{id: P + sid (S), val: payload (B),
expiration: N}`` in SESSION_DYNAMODB_TABLE (default ``"Sessions"``).

The payload is Flask-Session's MessagePack or JSON, never pickled, so a session can be
read when its user comes back as well as by the command. sessionkeeper's DynamoDB store
may share the table: its items have no ``val`` and its ids are the prefix and 64 hex
digits, so neither is ever taken for Flask-Session's.

``expiration`` is what Flask-Session 0.8 computed, ``(datetime.utcnow() +
lifetime).timestamp()``: a UTC time read as local time, so it is off by the UTC offset
of the machine that wrote it. It is read back the same way (exact when the migration
runs in the app's time zone; on UTC machines nothing changes). Flask-Session never
looks at ``expiration`` itself, nor turns the table's TTL on, but its permanent cookies
expire then: an item past it is skipped as expired.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

from .legacy import Candidate, LegacyEntry, LegacySourceError
from .stores.base import chunked

T = TypeVar("T")

DEFAULT_TABLE = "Sessions"  # Flask-Session's SESSION_DYNAMODB_TABLE default
#: BatchGetItem reads at most this many items a call
_BATCH = 100
_RETRIES = 8  # unprocessed keys (throttling) are asked for again, with a growing pause


def utc_read_as_local(value: float) -> float:
    """The epoch time Flask-Session meant by ``naive_utc_datetime.timestamp()``."""
    try:
        wall_clock = datetime.fromtimestamp(value)  # the naive UTC time it came from
        return wall_clock.replace(tzinfo=timezone.utc).timestamp()
    except (OverflowError, OSError, ValueError):
        return value


class _Table:
    """One table, spoken to in Python values whatever the client: boto3 resources
    convert values themselves; a low-level client gets them converted here."""

    def __init__(self, client: Any, table: str) -> None:
        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
        from botocore.exceptions import BotoCoreError, ClientError

        from .stores.dynamodb_client import ResourceClient

        if isinstance(client, ResourceClient):
            self.client, self.wire = client.client, False
        elif hasattr(client, "Table") and hasattr(getattr(client, "meta", None), "client"):
            self.client, self.wire = client.meta.client, False  # a boto3 resource
        else:
            self.client, self.wire = client, True
        self.table = table
        self._to_wire = TypeSerializer().serialize
        self._to_python = TypeDeserializer().deserialize
        self._errors = (BotoCoreError, ClientError)
        self._client_error = ClientError

    def out(self, values: dict[str, Any]) -> dict[str, Any]:
        return {k: self._to_wire(v) for k, v in values.items()} if self.wire else values

    def back(self, values: dict[str, Any]) -> dict[str, Any]:
        return {k: self._to_python(v) for k, v in values.items()} if self.wire else values

    def code(self, exc: BaseException) -> str:
        if isinstance(exc, self._client_error):
            return str(exc.response.get("Error", {}).get("Code", ""))
        return ""

    def run(self, what: str, description: str, work: Callable[[], T]) -> T:
        try:
            return work()
        except self._errors as exc:
            if self.code(exc) == "ResourceNotFoundException":
                raise LegacySourceError(
                    f"cannot {what} {description}: there is no such table") from exc
            raise LegacySourceError(f"cannot {what} {description}: {exc}") from exc

    def scan_ids(self, prefix: str) -> Iterator[str]:
        """The ids of the items with a ``val`` whose id starts with ``prefix``."""
        condition = "attribute_exists(#v)"
        values: dict[str, Any] = {}
        if prefix:  # DynamoDB refuses an empty begins_with operand
            condition += " AND begins_with(#id, :p)"
            values[":p"] = prefix
        request: dict[str, Any] = {
            "TableName": self.table, "ProjectionExpression": "#id",
            "FilterExpression": condition,
            "ExpressionAttributeNames": {"#id": "id", "#v": "val"}}
        if values:
            request["ExpressionAttributeValues"] = self.out(values)
        while True:
            page = self.client.scan(**request)
            for item in page.get("Items", ()):
                yield str(self.back(item)["id"])
            if "LastEvaluatedKey" not in page:
                return
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def get_many(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """The items of ``ids`` that exist (consistent reads)."""
        wanted = {"Keys": [self.out({"id": i}) for i in ids], "ConsistentRead": True}
        found: list[dict[str, Any]] = []
        pause = 0.05
        for _ in range(_RETRIES):
            answer = self.client.batch_get_item(RequestItems={self.table: wanted})
            found += [self.back(item) for item in answer.get("Responses", {}).get(self.table, ())]
            left = answer.get("UnprocessedKeys", {}).get(self.table)
            if not left or not left.get("Keys"):
                return found
            wanted = left  # throttled: ask again for the rest, as AWS advises
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
        raise LegacySourceError(f"the table {self.table!r} kept refusing reads (throttled)")

    def get(self, item_id: str) -> dict[str, Any] | None:
        answer = self.client.get_item(TableName=self.table, Key=self.out({"id": item_id}),
                                      ConsistentRead=True)
        item = answer.get("Item")
        return None if item is None else self.back(item)

    def delete(self, item_id: str) -> bool:
        """Delete Flask-Session's item (only while it has a ``val``); True when deleted."""
        try:
            self.client.delete_item(TableName=self.table, Key=self.out({"id": item_id}),
                                    ConditionExpression="attribute_exists(#v)",
                                    ExpressionAttributeNames={"#v": "val"})
        except self._client_error as exc:
            if self.code(exc) == "ConditionalCheckFailedException":
                return False  # gone already
            raise
        return True


def _payload(value: Any) -> bytes | None:
    raw = getattr(value, "value", value)  # boto3's Binary wraps the bytes
    return bytes(raw) if isinstance(raw, bytes | bytearray) else None


def _expiry(value: Any) -> float | None:
    try:
        return utc_read_as_local(float(value))
    except (TypeError, ValueError):
        return None  # none written: Flask-Session kept it without an end


class DynamoDBSource:
    """Flask-Session's items in a DynamoDB table (see the module doc)."""

    def __init__(self, client: Any, table: str = DEFAULT_TABLE, prefix: str = "session:",
                 ) -> None:
        self.table = _Table(client, table)
        self.prefix = prefix
        self.description = f"DynamoDB table {table!r} (ids starting {prefix!r})"

    def _run(self, what: str, work: Callable[[], T]) -> T:
        return self.table.run(what, self.description, work)

    def _entry(self, sid: str, item: dict[str, Any]) -> LegacyEntry:
        payload = _payload(item.get("val"))
        # A val that is not binary was never written by Flask-Session: unreadable.
        return LegacyEntry(sid, item["id"], payload or b"", _expiry(item.get("expiration")))

    def candidates(self) -> list[Candidate]:
        ids = self._run("list", lambda: list(self.table.scan_ids(self.prefix)))
        return [Candidate(i[len(self.prefix):], i) for i in ids]

    def fetch(self, batch: Sequence[Candidate]) -> list[LegacyEntry]:
        by_id = {candidate.handle: candidate for candidate in batch}
        entries = []
        for ids in chunked(list(by_id), _BATCH):
            items = self._run("read", lambda ids=ids: self.table.get_many(ids))
            entries += [self._entry(by_id[item["id"]].sid, item) for item in items
                        if item.get("id") in by_id and "val" in item]
        return entries

    def delete(self, handles: Sequence[Any]) -> int:
        return sum(self._run("delete from", lambda h=h: self.table.delete(h))
                   for h in handles)

    def lookup(self, sid: str) -> LegacyEntry | None:
        """The item of one session id, or None (one consistent GetItem)."""
        item = self._run("read", lambda: self.table.get(self.prefix + sid))
        return None if item is None or "val" not in item else self._entry(sid, item)

    def discard(self, handle: Any) -> None:
        self._run("delete from", lambda: self.table.delete(handle))
