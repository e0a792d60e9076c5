"""The MongoDB store.

The first half needs no server: field-name escaping, the update documents deltas become,
configuration checks, and what users see when the server cannot be reached (a real
connection to a port nobody listens on). The second half runs against the server named
by MONGODB_URL and skips without one (no package source of this project ships mongod).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import bson
import pymongo
import pytest
from flask import Flask, session
from hypothesis import given
from hypothesis import strategies as st
from providers import mongodb as mongodb_provider
from servers import unused_port

from sessionkeeper.errors import ConfigurationError, StoreUnavailable, UndecodableRecord
from sessionkeeper.flask import Session
from sessionkeeper.serialization import ValueCodec
from sessionkeeper.settings import Settings
from sessionkeeper.stores.base import SessionRecord, SessionUpdate
from sessionkeeper.stores.mongodb import (
    MongoDBStore,
    escape_field,
    record_document,
    record_from_document,
    store_from_settings,
    unescape_field,
    update_spec,
)

AWKWARD_KEYS = ["a.b", "$where", "", "_id", "v", "ключ", "x.y.$z", "😀"]


def build(config: dict[str, Any]) -> MongoDBStore:
    return store_from_settings(Settings.from_mapping({"SESSION_TYPE": "mongodb", **config}),
                               ValueCodec())


def delta(**fields: Any) -> SessionUpdate:
    """A delta made now, keeping the session ten more minutes."""
    now = time.time()
    base: dict[str, Any] = dict(set_values={}, deleted_keys=set(), replace=False,
                                accessed_at=now, expires_at=now + 600, permanent=True)
    base.update(fields)
    return SessionUpdate(**base)


# -- field names ------------------------------------------------------------------------
@given(st.text())
def test_any_session_key_becomes_a_safe_field_name_and_back(key: str) -> None:
    field = escape_field(key)
    assert "." not in field and "$" not in field and field.startswith("k")
    assert field.isascii() and field.isalnum()
    assert unescape_field(field) == key


def test_distinct_keys_never_share_a_field_name() -> None:
    fields = {escape_field(key) for key in AWKWARD_KEYS}
    assert len(fields) == len(AWKWARD_KEYS)


def test_a_field_that_is_not_escaped_is_refused() -> None:
    with pytest.raises(ValueError):
        unescape_field("plain")


# -- documents and deltas ---------------------------------------------------------------
def test_a_record_survives_a_real_bson_round_trip_with_awkward_keys() -> None:
    values = {key: f"value {i}".encode() for i, key in enumerate(AWKWARD_KEYS)}
    record = SessionRecord(values, 10.5, 11.25, 5000.75, False, "user-7")
    stored = bson.decode(bson.encode(record_document("session:abc", record)))
    assert stored["_id"] == "session:abc"
    assert all("." not in f and "$" not in f for f in stored["v"])
    assert stored["expiration"].timestamp() == pytest.approx(5000.75, abs=0.001)
    back = record_from_document(stored)
    assert back.values == values
    assert (back.created_at, back.accessed_at, back.expires_at) == (10.5, 11.25, 5000.75)
    assert back.permanent is False and back.user_id == "user-7"


def test_a_session_without_user_has_no_user_field_so_the_user_index_stays_sparse() -> None:
    document = record_document("k", SessionRecord({}, 1.0, 1.0, 2.0, True))
    assert "user_id" not in document
    assert record_from_document(document).user_id is None


def stored_document(**changes: Any) -> dict[str, Any]:
    """A session document as MongoDB hands it back, with ``changes`` (None: left out)."""
    record = SessionRecord({"cart": b"\x92\x01\x02"}, 10.0, 11.0, 5000.0, True, "u7")
    document: dict[str, Any] = bson.decode(bson.encode(record_document("session:abc", record)))
    for name, value in changes.items():
        document.pop(name, None)
        if value is not None:
            document[name] = value
    return document


DAMAGED_DOCUMENTS: dict[str, dict[str, Any]] = {
    "created_at a string": {"created_at": "yesterday"},
    "expires_at missing": {"expires_at": None},
    "accessed_at not a number": {"accessed_at": float("nan")},
    "accessed_at a boolean": {"accessed_at": True},
    "values a string": {"v": "cart=1,2"},
    "a value a number": {"v": {escape_field("cart"): 12}},
    "a field name not escaped": {"v": {"cart": b"\x01"}},
    "permanent a string": {"permanent": "yes"},
    "user_id a number": {"user_id": 42},
}


@pytest.mark.parametrize("damage", list(DAMAGED_DOCUMENTS))
def test_a_document_with_wrong_field_types_raises_undecodable_record(damage: str) -> None:
    document = bson.decode(bson.encode(stored_document(**DAMAGED_DOCUMENTS[damage])))
    with pytest.raises(UndecodableRecord) as caught:
        record_from_document(document)
    assert caught.value.store == "mongodb"


def test_a_delta_sets_changed_values_and_unsets_deleted_ones_only() -> None:
    spec = update_spec(delta(set_values={"cart": b"1", "a.b": b"2"},
                             deleted_keys={"old", "$x"}, expires_at=2000.0))
    assert spec["$set"]["v." + escape_field("cart")] == b"1"
    assert spec["$set"]["v." + escape_field("a.b")] == b"2"
    assert "v" not in spec["$set"]  # the other values are left alone
    assert set(spec["$unset"]) == {"v." + escape_field("old"), "v." + escape_field("$x")}
    assert spec["$set"]["expires_at"] == 2000.0
    assert spec["$set"]["expiration"].timestamp() == 2000.0
    assert "user_id" not in spec["$set"] and "user_id" not in spec["$unset"]


def test_a_key_deleted_then_set_again_is_set() -> None:
    spec = update_spec(delta(set_values={"k": b"new"}, deleted_keys={"k"}))
    assert spec["$set"]["v." + escape_field("k")] == b"new"
    assert "$unset" not in spec  # an empty $unset is an error in MongoDB


def test_clear_replaces_the_whole_values_document() -> None:
    spec = update_spec(delta(set_values={"fresh": b"1"}, deleted_keys={"gone"}, replace=True))
    assert spec["$set"]["v"] == {escape_field("fresh"): b"1"}
    assert not any(path.startswith("v.") for path in spec["$set"])
    assert "$unset" not in spec  # $set v and $unset v.x together is a conflict


def test_login_and_logout_set_and_unset_the_user() -> None:
    assert update_spec(delta(user_id="42", user_id_changed=True))["$set"]["user_id"] == "42"
    assert "user_id" in update_spec(delta(user_id=None, user_id_changed=True))["$unset"]


# -- configuration ----------------------------------------------------------------------
@pytest.mark.parametrize("value", [42, {"host": "localhost"}, b"mongodb://x", ["mongodb://x"]])
def test_session_mongodb_of_the_wrong_type_is_a_clear_configuration_error(value: Any) -> None:
    with pytest.raises(ConfigurationError,
                       match=r"SESSION_MONGODB must be a pymongo MongoClient or AsyncMongoClient"):
        build({"SESSION_MONGODB": value})


def test_a_url_that_is_not_mongodb_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="not a usable MongoDB URL"):
        build({"SESSION_MONGODB": "http://127.0.0.1:27017"})


@pytest.mark.parametrize(("key", "value"), [
    ("SESSION_MONGODB_DB", ""), ("SESSION_MONGODB_DB", 7), ("SESSION_MONGODB_DB", "a.b"),
    ("SESSION_MONGODB_DB", "has space"), ("SESSION_MONGODB_COLLECT", "$bad"),
    ("SESSION_MONGODB_COLLECT", ""), ("SESSION_MONGODB_COLLECT", ["sessions"]),
    ("SESSION_MONGODB_TIMEOUT", "2"), ("SESSION_MONGODB_TIMEOUT", -1),
])
def test_bad_names_and_timeouts_are_configuration_errors(key: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=key):
        build({key: value})


def test_defaults_match_flask_session() -> None:
    made = build({})
    try:
        assert made.collection.full_name == "flask_session.sessions"
        assert made.timeout == 2.0
        seeds = made.collection.database.client.topology_description.server_descriptions()
        assert list(seeds) == [("127.0.0.1", 27017)]
    finally:
        made.close()


def test_an_app_client_is_used_as_is() -> None:
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(
        f"mongodb://127.0.0.1:{unused_port()}", connect=False)
    made = build({"SESSION_MONGODB": client, "SESSION_MONGODB_DB": "app",
                  "SESSION_MONGODB_COLLECT": "web_sessions",
                  "SESSION_MONGODB_TIMEOUT": timedelta(milliseconds=1500)})
    assert made.collection.database.client is client
    assert made.collection.full_name == "app.web_sessions"
    assert made.timeout == 1.5
    client.close()


# -- an unreachable server --------------------------------------------------------------
def test_an_unreachable_server_stops_the_app_at_start_up_with_a_clear_message() -> None:
    app = Flask(__name__)
    app.config.update(SESSION_TYPE="mongodb", SESSION_MONGODB_TIMEOUT=0.3,
                      SESSION_MONGODB=f"mongodb://127.0.0.1:{unused_port()}")
    with pytest.raises(ConfigurationError, match="session store mongodb is unavailable"):
        Session(app)


@pytest.fixture
def app_with_unreachable_store() -> Iterator[Flask]:
    app = Flask(__name__)
    app.config.update(SECRET_KEY=secrets.token_hex(16), SESSION_TYPE="memory")
    Session(app)
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(
        f"mongodb://127.0.0.1:{unused_port()}", serverSelectionTimeoutMS=300)
    app.extensions["sessionkeeper"].backend.store = MongoDBStore(
        client["db"]["sessions"], timeout=0.3)

    @app.route("/whoami")
    def whoami() -> str:
        return str(session.get("user", "nobody"))

    @app.route("/health")
    def health() -> str:
        return "fine"

    yield app
    client.close()


def test_a_request_using_the_session_answers_503_while_the_server_is_down(
    app_with_unreachable_store: Flask,
) -> None:
    client = app_with_unreachable_store.test_client()
    client.set_cookie("session", secrets.token_urlsafe(32))
    response = client.get("/whoami")
    assert response.status_code == 503
    assert "Set-Cookie" not in response.headers


def test_views_that_do_not_use_the_session_are_unaffected_by_the_outage(
    app_with_unreachable_store: Flask,
) -> None:
    client = app_with_unreachable_store.test_client()
    client.set_cookie("session", secrets.token_urlsafe(32))
    assert client.get("/health").text == "fine"


def test_each_operation_raises_store_unavailable() -> None:
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(
        f"mongodb://127.0.0.1:{unused_port()}", serverSelectionTimeoutMS=300)
    made = MongoDBStore(client["db"]["sessions"], timeout=0.3, owns_client=True)
    with pytest.raises(StoreUnavailable) as caught:
        made.load("k", time.time())
    assert caught.value.store == "mongodb"
    with pytest.raises(StoreUnavailable):
        made.update("k", delta())
    made.close()


# -- against a real server (MONGODB_URL) ------------------------------------------------
@pytest.fixture
def mongo_store() -> Iterator[MongoDBStore]:
    with mongodb_provider.store(ValueCodec()) as made:
        yield made


def raw(made: MongoDBStore, key: str) -> dict[str, Any] | None:
    document: dict[str, Any] | None = made.collection.find_one({"_id": key})
    return document


def fresh(values: dict[str, bytes], *, ttl: float = 600, user: str | None = None,
          ) -> SessionRecord:
    now = time.time()
    return SessionRecord(values, now, now, now + ttl, True, user)


def test_the_ttl_index_on_expiration_and_the_user_index_exist(mongo_store: MongoDBStore) -> None:
    indexes = {tuple(info["key"]): info for info in mongo_store.collection.index_information()
               .values()}
    assert indexes[(("expiration", 1),)]["expireAfterSeconds"] == 0
    assert indexes[(("user_id", 1),)].get("sparse") is True
    # Flask-Session creates the very same TTL index: both can share a collection.
    mongo_store.collection.create_index("expiration", expireAfterSeconds=0)


def test_a_delta_changes_only_its_keys_in_the_stored_document(mongo_store: MongoDBStore) -> None:
    mongo_store.create("k1", fresh({"a": b"1", "b": b"2", "c": b"3"}))
    now = time.time()
    assert mongo_store.update("k1", delta(set_values={"b": b"22"}, deleted_keys={"c"},
                                          accessed_at=now, expires_at=now + 900))
    document = raw(mongo_store, "k1")
    assert document is not None
    assert document["v"] == {escape_field("a"): b"1", escape_field("b"): b"22"}
    assert document["expires_at"] == now + 900
    assert document["expiration"].timestamp() == pytest.approx(now + 900, abs=0.001)


def test_two_deltas_on_different_keys_both_survive(mongo_store: MongoDBStore) -> None:
    mongo_store.create("k1", fresh({"a": b"1"}))
    now = time.time()
    assert mongo_store.update("k1", delta(set_values={"x": b"x"}))
    assert mongo_store.update("k1", delta(set_values={"y": b"y"}))
    record = mongo_store.load("k1", now)
    assert record is not None and record.values == {"a": b"1", "x": b"x", "y": b"y"}


def test_clear_drops_every_old_value(mongo_store: MongoDBStore) -> None:
    mongo_store.create("k1", fresh({"a": b"1", "b": b"2"}))
    now = time.time()
    assert mongo_store.update("k1", delta(set_values={"c": b"3"}, replace=True))
    record = mongo_store.load("k1", now)
    assert record is not None and record.values == {"c": b"3"}


def test_awkward_keys_are_stored_escaped_and_read_back(mongo_store: MongoDBStore) -> None:
    values = {key: key.encode() or b"empty" for key in AWKWARD_KEYS}
    mongo_store.create("k1", fresh(values))
    now = time.time()
    assert mongo_store.update("k1", delta(set_values={"$set": b"s"}, deleted_keys={"a.b"},
                                          accessed_at=now))
    document = raw(mongo_store, "k1")
    assert document is not None and all(field.isalnum() for field in document["v"])
    record = mongo_store.load("k1", now)
    expected = {k: v for k, v in values.items() if k != "a.b"} | {"$set": b"s"}
    assert record is not None and record.values == expected


def test_an_expired_document_is_not_loaded_before_the_ttl_monitor_removes_it(
    mongo_store: MongoDBStore,
) -> None:
    mongo_store.create("k1", fresh({"a": b"1"}, ttl=-1))
    assert raw(mongo_store, "k1") is not None  # still there: the monitor runs once a minute
    now = time.time()
    assert mongo_store.load("k1", now) is None
    assert mongo_store.update("k1", delta(accessed_at=now, expires_at=now + 600)) is False
    assert mongo_store.touch("k1", now, now + 600) is False
    assert mongo_store.load("k1", time.time()) is None  # neither revives it


def test_an_update_of_a_deleted_session_fails_and_creates_nothing(
    mongo_store: MongoDBStore,
) -> None:
    mongo_store.create("k1", fresh({"a": b"1"}))
    mongo_store.delete("k1")
    assert mongo_store.update("k1", delta(set_values={"a": b"2"})) is False
    assert mongo_store.collection.count_documents({}) == 0


def test_touch_extends_life_without_rewriting_values(mongo_store: MongoDBStore) -> None:
    mongo_store.create("k1", fresh({"a": b"1"}, ttl=60))
    now = time.time()
    mongo_store.touch("k1", now, now + 3600)
    record = mongo_store.load("k1", now + 120)
    assert record is not None and record.values == {"a": b"1"}
    assert record.expires_at == now + 3600


def test_sessions_are_found_by_user_and_logout_unbinds(mongo_store: MongoDBStore) -> None:
    mongo_store.create("k1", fresh({}, user="u1"))
    mongo_store.create("k2", fresh({}, user="u1"))
    mongo_store.create("k3", fresh({}, user="u2"))
    mongo_store.create("k4", fresh({}, user="u1", ttl=-1))
    now = time.time()
    assert sorted(mongo_store.keys_for_user("u1", now)) == ["k1", "k2"]
    assert mongo_store.update("k2", delta(user_id=None, user_id_changed=True))
    assert mongo_store.keys_for_user("u1", now) == ["k1"]


def test_cleanup_removes_only_expired_sessionkeeper_documents(mongo_store: MongoDBStore) -> None:
    mongo_store.create("live", fresh({}))
    mongo_store.create("dead", fresh({}, ttl=-5))
    # A Flask-Session document in the same collection is not sessionkeeper's to count.
    mongo_store.collection.insert_one({"id": "session:old", "val": b"\x80",
                                       "expiration": datetime.now(timezone.utc)
                                       + timedelta(hours=1)})
    assert mongo_store.delete_expired(time.time()) == 1
    assert raw(mongo_store, "live") is not None and raw(mongo_store, "dead") is None
    assert mongo_store.collection.count_documents({"id": "session:old"}) == 1


def test_create_over_an_existing_key_replaces_it(mongo_store: MongoDBStore) -> None:
    mongo_store.create("k1", fresh({"a": b"1"}))
    mongo_store.create("k1", fresh({"b": b"2"}))
    record = mongo_store.load("k1", time.time())
    assert record is not None and record.values == {"b": b"2"}


# -- damaged documents, add, touch (MONGODB_URL) -----------------------------------------
@pytest.mark.parametrize("damage", [*DAMAGED_DOCUMENTS, "expires_at a string"])
def test_loading_a_damaged_document_raises_undecodable_record(
    mongo_store: MongoDBStore, damage: str,
) -> None:
    changes = DAMAGED_DOCUMENTS.get(damage, {"expires_at": "never"})
    mongo_store.collection.insert_one({**stored_document(**changes), "_id": "k1"})
    with pytest.raises(UndecodableRecord):
        mongo_store.load("k1", time.time())
    mongo_store.delete("k1")  # what the core does next
    assert mongo_store.load("k1", time.time()) is None


def test_a_damaged_session_of_a_user_is_left_out_of_the_list(mongo_store: MongoDBStore) -> None:
    mongo_store.create("k1", fresh({}, user="u1"))
    mongo_store.create("k2", fresh({}, user="u1"))
    mongo_store.collection.update_one({"_id": "k2"}, {"$set": {"expires_at": "never"}})
    assert mongo_store.keys_for_user("u1", time.time()) == ["k1"]


def test_add_claims_a_key_once(mongo_store: MongoDBStore) -> None:
    assert mongo_store.add("k1", fresh({"n": b"1"}, user="u1")) is True
    assert mongo_store.add("k1", fresh({"n": b"2"}, user="u2")) is False
    record = mongo_store.load("k1", time.time())
    assert record is not None and record.values == {"n": b"1"} and record.user_id == "u1"


def test_add_replaces_an_expired_or_damaged_document(mongo_store: MongoDBStore) -> None:
    mongo_store.create("k1", fresh({"n": b"1"}, ttl=-1))  # awaiting the TTL monitor
    assert mongo_store.add("k1", fresh({"n": b"2"})) is True
    assert mongo_store.load("k1", time.time()).values == {"n": b"2"}  # type: ignore[union-attr]
    mongo_store.collection.insert_one({**stored_document(expires_at="never"), "_id": "k2"})
    assert mongo_store.add("k2", fresh({"n": b"3"})) is True
    assert mongo_store.load("k2", time.time()).values == {"n": b"3"}  # type: ignore[union-attr]


def test_concurrent_adds_of_one_key_let_exactly_one_win(mongo_store: MongoDBStore) -> None:
    claimants = 16
    for attempt in range(10):
        key = f"k{attempt}"
        start = threading.Barrier(claimants)

        def claim(n: int, key: str = key, start: threading.Barrier = start) -> bool:
            start.wait(timeout=30)
            return mongo_store.add(key, fresh({"n": bytes([n])}))

        with ThreadPoolExecutor(claimants) as pool:
            won = [n for n, ok in zip(range(claimants), pool.map(claim, range(claimants)),
                                      strict=True) if ok]
        assert len(won) == 1, f"{len(won)} claims of one key succeeded"
        record = mongo_store.load(key, time.time())
        assert record is not None and record.values == {"n": bytes([won[0]])}


def test_touch_says_whether_the_session_was_there(mongo_store: MongoDBStore) -> None:
    now = time.time()
    assert mongo_store.touch("missing", now, now + 600) is False
    assert mongo_store.collection.count_documents({}) == 0  # nothing created
    mongo_store.create("k1", fresh({"a": b"1"}))
    assert mongo_store.touch("k1", now, now + 900) is True
