"""The MongoDB store, in a fresh collection per test.

No package source of this project ships ``mongod``, so these run only against a server
named by ``MONGODB_URL`` (or a ``mongod`` on PATH); otherwise they skip, which CI
tolerates for MongoDB alone.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pymongo
import pytest
from servers import mongodb_url

from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.mongodb import MongoDBStore

KIND = "mongodb"
DATABASE = "sessionkeeper_test"
NO_SERVER = ("no MongoDB server: set MONGODB_URL to a real server "
             "(no package source of this project ships mongod)")


def server_url() -> str:
    """The server to test against, or skip the test naming MONGODB_URL."""
    url = mongodb_url()
    if url is None:
        pytest.skip(NO_SERVER)
    return url


def random_collection() -> str:
    return f"sessions_{secrets.token_hex(4)}"


@contextmanager
def dropped_afterwards(url: str, collection: str) -> Iterator[None]:
    try:
        yield
    finally:
        client: pymongo.MongoClient[Any]
        with pymongo.MongoClient(url, serverSelectionTimeoutMS=2000) as client:
            client[DATABASE].drop_collection(collection)


@contextmanager
def store(codec: ValueCodec) -> Iterator[MongoDBStore]:
    url = server_url()
    name = random_collection()
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(url, serverSelectionTimeoutMS=2000)
    made = MongoDBStore(client[DATABASE][name], owns_client=True)
    with dropped_afterwards(url, name):
        made.check()
        try:
            yield made
        finally:
            made.close()


@contextmanager
def flask_config(tmp_path: Path) -> Iterator[dict[str, Any]]:
    url = server_url()
    name = random_collection()
    with dropped_afterwards(url, name):
        yield {"SESSION_TYPE": KIND, "SESSION_MONGODB": url,
               "SESSION_MONGODB_DB": DATABASE, "SESSION_MONGODB_COLLECT": name}
