"""Sessions in MongoDB: one document per session, deltas applied with ``$set``/``$unset``.

Document layout (``_id`` is the store key)::

    {"_id": "session:<sha256 hex>",
     "v": {"k<hex of the key>": <binary encoded value>, ...},
     "created_at": 1.7e9, "accessed_at": 1.7e9, "expires_at": 1.7e9,   # epoch seconds
     "expiration": ISODate(...),   # the same expiry as a BSON date, for the TTL index
     "permanent": true, "user_id": "42"}    # user_id only when bound

Session keys may contain ``.`` or ``$`` or start with ``$``, which MongoDB field names
cannot; they are hex-encoded behind a ``k`` (so the empty key is a valid name too).
A TTL index on ``expiration`` lets MongoDB remove dead sessions; since its monitor runs
only about once a minute, every read and write also checks ``expires_at``. A document
with a field missing or of the wrong type makes ``load`` raise ``UndecodableRecord``.
The per-user index lists only ``_id``s under the store's ``SESSION_KEY_PREFIX``.
Flask-Session's documents (an ``id`` field and a ``val`` blob) can share the collection:
they use the same TTL index and never match these queries.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, TypeVar

import pymongo
from pymongo.collection import Collection
from pymongo.errors import ConfigurationError as MongoConfigurationError
from pymongo.errors import ConnectionFailure, DuplicateKeyError, InvalidName, PyMongoError
from pymongo.errors import InvalidURI as MongoInvalidURI

from ..errors import ConfigurationError, StoreUnavailable, UndecodableRecord
from ..serialization import ValueCodec
from ..settings import Settings, seconds
from .base import SessionRecord, SessionStore, SessionUpdate

DEFAULT_URL = "mongodb://127.0.0.1:27017"
DEFAULT_DB = "flask_session"  # Flask-Session's defaults, so switching keeps the same place
DEFAULT_COLLECTION = "sessions"
DEFAULT_TIMEOUT = 2.0

T = TypeVar("T")


def escape_field(key: str) -> str:
    """A MongoDB-safe field name for a session key (reversible, any key allowed)."""
    return "k" + key.encode("utf-8", "surrogatepass").hex()


def unescape_field(field: str) -> str:
    """The session key behind a field name made by :func:`escape_field`."""
    if not field.startswith("k"):
        raise ValueError(f"not an escaped session key: {field!r}")
    return bytes.fromhex(field[1:]).decode("utf-8", "surrogatepass")


def _bson_date(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def update_spec(update: SessionUpdate) -> dict[str, dict[str, Any]]:
    """The ``update_one`` document applying a delta: changed values and new metadata."""
    to_set: dict[str, Any] = {
        "accessed_at": update.accessed_at,
        "expires_at": update.expires_at,
        "expiration": _bson_date(update.expires_at),
        "permanent": update.permanent,
    }
    to_unset: dict[str, str] = {}
    if update.replace:
        # clear(): the whole sub-document is replaced, so nothing old survives.
        to_set["v"] = {escape_field(k): v for k, v in update.set_values.items()}
    else:
        for key, value in update.set_values.items():
            to_set["v." + escape_field(key)] = value
        for key in update.deleted_keys - update.set_values.keys():
            to_unset["v." + escape_field(key)] = ""
    if update.user_id_changed:
        if update.user_id is None:
            to_unset["user_id"] = ""
        else:
            to_set["user_id"] = update.user_id
    spec: dict[str, dict[str, Any]] = {"$set": to_set}
    if to_unset:
        spec["$unset"] = to_unset
    return spec


def record_document(key: str, record: SessionRecord) -> dict[str, Any]:
    """The document a new record is stored as."""
    document: dict[str, Any] = {
        "_id": key,
        "v": {escape_field(k): v for k, v in record.values.items()},
        "created_at": record.created_at,
        "accessed_at": record.accessed_at,
        "expires_at": record.expires_at,
        "expiration": _bson_date(record.expires_at),
        "permanent": record.permanent,
    }
    if record.user_id is not None:  # absent, not null: the user index stays sparse
        document["user_id"] = record.user_id
    return document


def record_from_document(document: Mapping[str, Any]) -> SessionRecord:
    """The record a document holds; :class:`UndecodableRecord` when a field is missing
    or of the wrong type (edited by hand, written by something else)."""
    try:
        values = document.get("v", {})
        permanent = document.get("permanent", True)
        user_id = document.get("user_id")
        if not isinstance(values, Mapping) or not isinstance(permanent, bool) or not (
                user_id is None or isinstance(user_id, str)):
            raise TypeError("v, permanent or user_id has the wrong type")
        decoded: dict[str, bytes] = {}
        for field, value in values.items():
            if not isinstance(value, bytes):  # BSON binary reads as bytes
                raise TypeError(f"value {field!r} is a {type(value).__name__}, not binary")
            decoded[unescape_field(field)] = bytes(value)
        return SessionRecord(
            values=decoded,
            created_at=_time_field(document, "created_at"),
            accessed_at=_time_field(document, "accessed_at"),
            expires_at=_time_field(document, "expires_at"),
            permanent=permanent,
            user_id=user_id,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UndecodableRecord(MongoDBStore.name, f"damaged session document: {exc!r}"
                                ) from exc


def _time_field(document: Mapping[str, Any], name: str) -> float:
    value = document[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} is a {type(value).__name__}, not a number")
    if not math.isfinite(value):
        raise ValueError(f"{name} is {value}")
    return float(value)


class MongoDBStore(SessionStore):
    """Keeps sessions in one MongoDB collection; every operation is a single round trip."""

    name = "mongodb"

    def __init__(self, collection: Collection[Any], *, timeout: float = DEFAULT_TIMEOUT,
                 owns_client: bool = False, key_prefix: str = "") -> None:
        self.collection = collection
        #: SESSION_KEY_PREFIX: the user index lists only keys under it, so apps sharing
        #: a collection with different prefixes never see each other's sessions
        self.key_prefix = key_prefix
        self.timeout = timeout
        self._owns_client = owns_client
        self._indexed = False
        self._index_lock = threading.Lock()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        # pymongo.timeout bounds server selection and the operation together, also for a
        # client the app built itself; a down server becomes StoreUnavailable (503).
        try:
            with pymongo.timeout(self.timeout):
                yield
        except ConnectionFailure as exc:
            raise StoreUnavailable(self.name, exc) from exc
        except PyMongoError as exc:
            if exc.timeout:
                raise StoreUnavailable(self.name, exc) from exc
            raise

    def _run(self, operation: Callable[[], T]) -> T:
        with self._guard():
            return operation()

    def ensure_indexes(self) -> None:
        """The TTL index on ``expiration`` and the per-user index (idempotent)."""
        with self._index_lock:
            if self._indexed:
                return
            with self._guard():
                # Same spec and name as Flask-Session's TTL index, so both can coexist.
                self.collection.create_index("expiration", expireAfterSeconds=0)
                self.collection.create_index("user_id", sparse=True)
            self._indexed = True

    # -- interface -------------------------------------------------------------------
    def load(self, key: str, now: float) -> SessionRecord | None:
        # By _id alone, so that a damaged expires_at is reported, not silently unmatched.
        document = self._run(lambda: self.collection.find_one({"_id": key}))
        if document is None:
            return None
        record = record_from_document(document)
        return record if record.expires_at > now else None

    def create(self, key: str, record: SessionRecord) -> None:
        document = record_document(key, record)
        try:
            self._run(lambda: self.collection.insert_one(document))
        except DuplicateKeyError:
            # Keys are fresh random ids, so only a re-run migration gets here: overwrite,
            # as every other store does.
            self._run(lambda: self.collection.replace_one({"_id": key}, document))

    def add(self, key: str, record: SessionRecord) -> bool:
        # One atomic upsert: the filter matches no document or a dead one (expired and
        # awaiting the TTL monitor, or damaged), which is replaced; a live one makes the
        # upsert's insert fail on the _id.
        document = record_document(key, record)
        try:
            self._run(lambda: self.collection.replace_one(
                {"_id": key, "expires_at": {"$not": {"$gt": record.accessed_at}}},
                document, upsert=True))
        except DuplicateKeyError:
            return False
        return True

    def update(self, key: str, update: SessionUpdate) -> bool:
        # upsert=False and the expiry condition: a record that is gone (logged out) or
        # dead (awaiting the TTL monitor) is never brought back.
        result = self._run(lambda: self.collection.update_one(
            {"_id": key, "expires_at": {"$gt": update.accessed_at}},
            update_spec(update), upsert=False))
        return result.matched_count == 1

    def touch(self, key: str, accessed_at: float, expires_at: float, *,
              version: Any = None) -> bool:
        result = self._run(lambda: self.collection.update_one(
            {"_id": key, "expires_at": {"$gt": accessed_at}},
            {"$set": {"accessed_at": accessed_at, "expires_at": expires_at,
                      "expiration": _bson_date(expires_at)}},
            upsert=False))
        return result.matched_count == 1

    def delete(self, key: str) -> None:
        self._run(lambda: self.collection.delete_one({"_id": key}))

    def delete_expired(self, now: float) -> int:
        # The TTL monitor does this too, but only about once a minute.
        result = self._run(lambda: self.collection.delete_many(
            {"expiration": {"$lte": _bson_date(now)}, "expires_at": {"$exists": True}}))
        return result.deleted_count

    def keys_for_user(self, user_id: str, now: float) -> list[str]:
        query: dict[str, Any] = {"user_id": user_id, "expires_at": {"$gt": now}}
        if self.key_prefix:
            # The prefix and a sha256 exactly: a longer prefix starting with this one
            # is another app's.
            query["_id"] = {"$regex": f"^{re.escape(self.key_prefix)}[0-9a-f]{{64}}$"}
        cursor = self._run(lambda: list(self.collection.find(query, {"_id": 1})))
        return [document["_id"] for document in cursor]

    def check(self) -> None:
        """Reach the server (ping) and create the indexes, or raise StoreUnavailable."""
        try:
            self._run(lambda: self.collection.database.command("ping"))
            self.ensure_indexes()
        except PyMongoError as exc:  # refused credentials and the like, at start-up
            raise StoreUnavailable(self.name, exc) from exc

    def close(self) -> None:
        if self._owns_client:
            self.collection.database.client.close()


# -- configuration ---------------------------------------------------------------------
def _name(config: Mapping[str, Any], key: str, default: str) -> str:
    value = config.get(key)
    if value is None:
        return default
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{key} must be a non-empty string, not {value!r}")
    return value


def client_from_setting(value: Any, timeout: float) -> tuple[pymongo.MongoClient[Any], bool]:
    """The client SESSION_MONGODB names, and whether the store made (and so owns) it."""
    if value is None:
        value = DEFAULT_URL
    if isinstance(value, pymongo.MongoClient):
        return value, False
    if type(value).__module__.startswith("pymongo.asynchronous"):
        return _blocking_twin(value), True
    if not isinstance(value, str):
        raise ConfigurationError(
            "SESSION_MONGODB must be a pymongo MongoClient or AsyncMongoClient, or a "
            f"mongodb:// URL, not {type(value).__name__}"
        )
    millis = max(1, int(timeout * 1000))
    try:
        # The constructor does not connect: reaching the server is check()'s job.
        client: pymongo.MongoClient[Any] = pymongo.MongoClient(
            value, serverSelectionTimeoutMS=millis, connectTimeoutMS=millis,
            socketTimeoutMS=millis, appname="sessionkeeper")
    except (MongoInvalidURI, MongoConfigurationError, ValueError) as exc:
        raise ConfigurationError(f"SESSION_MONGODB={value!r} is not a usable MongoDB URL: "
                                 f"{exc}") from exc
    return client, True


def _blocking_twin(client: Any) -> pymongo.MongoClient[Any]:
    """A blocking client of the same servers, with the same settings, for an
    ``AsyncMongoClient`` (an ASGI or Quart app's): the store runs in threads, and a URL
    would lose the keyword options (timeouts among them) the app gave its client."""
    # What the client was built from (URI or hosts, and every keyword option), as
    # pymongo keeps it to compare and print clients.
    settings = getattr(client, "_init_kwargs", None)
    if not isinstance(settings, dict):
        raise ConfigurationError(
            "SESSION_MONGODB: this AsyncMongoClient does not show its settings (a pymongo "
            "release this version does not know); pass a MongoClient or a mongodb:// URL")
    return pymongo.MongoClient(**{**settings, "connect": False})


def store_from_settings(settings: Settings, codec: ValueCodec) -> MongoDBStore:
    """SESSION_MONGODB (client or URL), SESSION_MONGODB_DB, SESSION_MONGODB_COLLECT,
    SESSION_MONGODB_TIMEOUT (seconds, default 2)."""
    config = settings.config
    raw_timeout = config.get("SESSION_MONGODB_TIMEOUT")
    timeout = (DEFAULT_TIMEOUT if raw_timeout is None
               else seconds(raw_timeout, "SESSION_MONGODB_TIMEOUT"))
    db_name = _name(config, "SESSION_MONGODB_DB", DEFAULT_DB)
    collection_name = _name(config, "SESSION_MONGODB_COLLECT", DEFAULT_COLLECTION)
    client, owned = client_from_setting(config.get("SESSION_MONGODB"), timeout)
    try:
        collection = client[db_name][collection_name]
    except InvalidName as exc:
        if owned:
            client.close()
        raise ConfigurationError(
            f"SESSION_MONGODB_DB={db_name!r} / SESSION_MONGODB_COLLECT={collection_name!r} "
            f"is not a valid MongoDB name: {exc}") from exc
    return MongoDBStore(collection, timeout=timeout, owns_client=owned,
                        key_prefix=settings.key_prefix)
