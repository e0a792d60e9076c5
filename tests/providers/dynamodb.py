"""The DynamoDB store against dynalite (a DynamoDB-compatible server), a fresh table each.

dynalite starts once per test run (installed by .ci/dynalite.sh); it makes tables ACTIVE
at once, so a table per test costs milliseconds and isolates completely. The client has
dummy credentials and a region set explicitly: nothing here ever reaches AWS.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from botocore.client import BaseClient
from providers._shared import random_prefix
from servers import DynaliteServer, start_dynalite, start_or_skip

from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.dynamodb import DynamoDBStore
from sessionkeeper.stores.dynamodb_client import client_config

KIND = "dynamodb"
REGION = "us-east-1"
# Generous: the whole suite may run beside other work on a small machine.
TIMEOUT = 5.0
#: DynamoDB keeps items up to 400 KB: larger sessions fail with DynamoDBItemTooLarge
MAX_RECORD_BYTES = 400 * 1024

_server: DynaliteServer | None = None
_client: BaseClient | None = None


def server() -> DynaliteServer:
    """The shared dynalite, started on first use (skips when it is not installed)."""
    global _server
    if _server is None:
        _server = start_or_skip(start_dynalite)
    return _server


def make_client(endpoint_url: str, timeout: float = TIMEOUT) -> BaseClient:
    return boto3.client("dynamodb", endpoint_url=endpoint_url, region_name=REGION,
                        aws_access_key_id="dummy", aws_secret_access_key="dummy",
                        config=client_config(timeout))


def client() -> BaseClient:
    """One client for the shared server (botocore clients are thread-safe)."""
    global _client
    if _client is None:
        _client = make_client(server().endpoint_url)
    return _client


def random_table() -> str:
    return f"sktest_{secrets.token_hex(4)}"


@contextmanager
def dropped_afterwards(table: str) -> Iterator[None]:
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            client().delete_table(TableName=table)


@contextmanager
def store(codec: ValueCodec) -> Iterator[DynamoDBStore]:
    table = random_table()
    made = DynamoDBStore(client(), table)
    with dropped_afterwards(table):
        made.check()  # creates the table
        try:
            yield made
        finally:
            made.close()


@contextmanager
def flask_config(tmp_path: Path) -> Iterator[dict[str, Any]]:
    table = random_table()
    with dropped_afterwards(table):
        yield {"SESSION_TYPE": KIND, "SESSION_DYNAMODB": client(),
               "SESSION_DYNAMODB_TABLE": table, "SESSION_KEY_PREFIX": random_prefix(KIND)}
