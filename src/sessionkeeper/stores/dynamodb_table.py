"""The sessions table: created at start-up when asked, checked otherwise.

The table has Flask-Session's key schema (a string partition key ``id``) and TTL
attribute (``expiration``), so a table Flask-Session created keeps serving; the store
adds a global secondary index on ``user_key`` for the per-user index. An existing table
is never altered beyond turning on its TTL: adding an index to a large table costs a
backfill the operator should choose (the start-up log gives the command).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from ..errors import ConfigurationError
from .dynamodb_items import EXPIRATION, EXPIRES, ID, OWN_ATTRIBUTES, USER_KEY, TimeToLive

logger = logging.getLogger("sessionkeeper")

USER_INDEX = "sessionkeeper-user"
#: AWS creates a table in seconds; past this start-up gives up
TABLE_WAIT = 120.0


def create_table_request(table: str) -> dict[str, Any]:
    return {
        "TableName": table,
        "AttributeDefinitions": [{"AttributeName": ID, "AttributeType": "S"},
                                 {"AttributeName": USER_KEY, "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": ID, "KeyType": "HASH"}],
        "BillingMode": "PAY_PER_REQUEST",  # as Flask-Session creates it
        "GlobalSecondaryIndexes": [user_index()],
    }


def user_index() -> dict[str, Any]:
    # expires_at comes along so that dead sessions are filtered out by the query.
    return {"IndexName": USER_INDEX,
            "KeySchema": [{"AttributeName": USER_KEY, "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": [EXPIRES]}}


def add_index_command(table: str) -> str:
    """The AWS CLI command that adds the per-user index to an existing table."""
    return ("aws dynamodb update-table --table-name " + table
            + f" --attribute-definitions AttributeName={USER_KEY},AttributeType=S"
            + " --global-secondary-index-updates '[{\"Create\": {\"IndexName\": \""
            + USER_INDEX + f"\", \"KeySchema\": [{{\"AttributeName\": \"{USER_KEY}\", "
            + "\"KeyType\": \"HASH\"}], \"Projection\": {\"ProjectionType\": \"INCLUDE\", "
            + f"\"NonKeyAttributes\": [\"{EXPIRES}\"]}}}}}}]'"
            + " (on a provisioned table, add ProvisionedThroughput to the Create)")


@dataclass
class TableState:
    """What start-up found out about the table."""

    #: the per-user index exists and is ACTIVE (listing a user's sessions works)
    user_index: bool
    #: the attribute DynamoDB's TTL removes items by, when TTL is on
    ttl_attribute: str | None

    def time_to_live(self, keep_expired: float) -> TimeToLive:
        """Where the store writes its TTL value: the table's TTL attribute, unless
        that is one the layout uses for something else (then ``expiration``)."""
        attribute = self.ttl_attribute
        if attribute is None or attribute in OWN_ATTRIBUTES:
            attribute = EXPIRATION
        return TimeToLive(attribute, keep_expired)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def describe(client: Any, table: str) -> dict[str, Any] | None:
    """The table's description, or None when there is no such table."""
    try:
        answer = client.describe_table(TableName=table)
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return None
        raise
    return dict(answer["Table"])


def ensure_table(client: Any, table: str, *, create: bool) -> TableState:
    """Create the table (``create``) or find it, wait until it is ACTIVE, check its key
    schema, turn its TTL on (``create``) and report what it offers."""
    description = describe(client, table)
    if description is None:
        if not create:
            raise ConfigurationError(
                f"the DynamoDB table {table!r} does not exist: create it, or leave "
                "SESSION_DYNAMODB_TABLE_EXISTS unset so that sessionkeeper creates it")
        try:
            client.create_table(**create_table_request(table))
            logger.info("created the DynamoDB table %s", table)
        except ClientError as exc:
            if error_code(exc) != "ResourceInUseException":
                raise
            # Another process (worker) is creating it: wait for it as well.
        description = wait_until_active(client, table)
    elif description.get("TableStatus") not in ("ACTIVE", "UPDATING"):
        description = wait_until_active(client, table)
    _check_key_schema(description, table)
    ttl_attribute = _ttl(client, table, turn_on=create)
    has_index = any(index.get("IndexName") == USER_INDEX
                    and index.get("IndexStatus", "ACTIVE") == "ACTIVE"
                    for index in description.get("GlobalSecondaryIndexes") or ())
    if not has_index:
        logger.warning(
            "the DynamoDB table %s has no active index %s: sessions work, but listing or "
            "ending a user's sessions (SessionAccounts) fails until it is added: %s",
            table, USER_INDEX, add_index_command(table))
    return TableState(user_index=has_index, ttl_attribute=ttl_attribute)


def wait_until_active(client: Any, table: str, timeout: float = TABLE_WAIT) -> dict[str, Any]:
    # Not boto3's table_exists waiter: it sleeps 20 s between looks.
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        description = describe(client, table)
        if description is not None and description.get("TableStatus") == "ACTIVE":
            return description
        if time.monotonic() > deadline:
            status = description.get("TableStatus") if description else "missing"
            raise ConfigurationError(f"the DynamoDB table {table!r} is still {status} after "
                                     f"{timeout:.0f}s")
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def _check_key_schema(description: dict[str, Any], table: str) -> None:
    keys = description.get("KeySchema") or []
    types = {d["AttributeName"]: d["AttributeType"]
             for d in description.get("AttributeDefinitions") or ()}
    if keys != [{"AttributeName": ID, "KeyType": "HASH"}] or types.get(ID) != "S":
        raise ConfigurationError(
            f"the DynamoDB table {table!r} has the key schema {keys}: sessions need a "
            f"table whose only key is the string partition key {ID!r} (as Flask-Session "
            "creates it); name another table in SESSION_DYNAMODB_TABLE")


def _ttl(client: Any, table: str, *, turn_on: bool) -> str | None:
    """The table's TTL attribute; with ``turn_on``, TTL is turned on when it is off.

    Best effort: an endpoint without TTL (dynalite, some emulators) or a role without
    the permission leaves expired items in place, which the store never serves anyway.
    """
    try:
        answer = client.describe_time_to_live(TableName=table)
        spec = answer.get("TimeToLiveDescription") or {}
        if spec.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
            return str(spec.get("AttributeName") or EXPIRATION)
        if turn_on:
            client.update_time_to_live(TableName=table, TimeToLiveSpecification={
                "Enabled": True, "AttributeName": EXPIRATION})
            logger.info("turned on TTL for %s.%s", table, EXPIRATION)
            return EXPIRATION
    except ClientError as exc:
        logger.warning("TTL of the DynamoDB table %s could not be %s (%s): expired "
                       "sessions stay in the table (they are never served) until removed "
                       "by `flask sessions cleanup` or SESSION_CLEANUP_N_REQUESTS", table,
                       "turned on" if turn_on else "read", error_code(exc) or exc)
        return None
    logger.warning("TTL is off on the DynamoDB table %s: expired sessions stay in the "
                   "table (they are never served); turn it on for the attribute %r",
                   table, EXPIRATION)
    return None
