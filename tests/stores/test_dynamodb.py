"""The DynamoDB store, against dynalite (a DynamoDB-compatible server; never AWS).

The shared suites (conformance, Flask-level) run it through tests/providers/dynamodb.py;
these tests cover what is DynamoDB's own: the table and item layout Flask-Session's
tables share, the 400 KB item limit, deltas too large for one expression, the per-user
index, configuration, botocore's wire log, and outages (a stopped or frozen server).
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from flask import Flask, session
from hypothesis import given
from hypothesis import strategies as st
from providers import dynamodb as provider
from servers import DynaliteServer, start_dynalite, start_or_skip, unused_port

from sessionkeeper.errors import (
    ConfigurationError,
    SessionKeeperError,
    StoreUnavailable,
    UndecodableRecord,
)
from sessionkeeper.ids import storage_key
from sessionkeeper.serialization import ValueCodec
from sessionkeeper.settings import Settings
from sessionkeeper.stores.base import SessionRecord, SessionUpdate
from sessionkeeper.stores.dynamodb import DynamoDBIndexMissing, DynamoDBStore, store_from_settings
from sessionkeeper.stores.dynamodb_client import DEFAULT_ENDPOINT
from sessionkeeper.stores.dynamodb_items import (
    EXPRESSION_LIMIT,
    DynamoDBItemTooLarge,
    TimeToLive,
    delta_expression,
    escape_key,
    number,
    unescape_key,
)
from sessionkeeper.stores.dynamodb_table import USER_INDEX, TableState

CODEC = ValueCodec()


# -- helpers ---------------------------------------------------------------------------------
@pytest.fixture
def store() -> Iterator[DynamoDBStore]:
    with provider.store(CODEC) as made:
        yield made


def new_key(prefix: str = "session:") -> str:
    return prefix + storage_key(secrets.token_urlsafe(32))


def record(values: dict[str, Any] | None = None, *, lifetime: float = 3600,
           user_id: str | None = None, now: float | None = None) -> SessionRecord:
    now = time.time() if now is None else now
    return SessionRecord(values={k: CODEC.encode(v) for k, v in (values or {}).items()},
                         created_at=now, accessed_at=now, expires_at=now + lifetime,
                         permanent=True, user_id=user_id)


def delta(set_values: dict[str, Any] | None = None, **fields: Any) -> SessionUpdate:
    now = time.time()
    base: dict[str, Any] = dict(
        set_values={k: CODEC.encode(v) for k, v in (set_values or {}).items()},
        deleted_keys=set(), replace=False, accessed_at=now, expires_at=now + 3600,
        permanent=True)
    base.update(fields)
    return SessionUpdate(**base)


def values_of(store: DynamoDBStore, key: str) -> dict[str, Any]:
    loaded = store.load(key, time.time())
    assert loaded is not None, "the record is missing"
    return {k: CODEC.decode(v) for k, v in loaded.values.items()}


def raw_item(store: DynamoDBStore, key: str) -> dict[str, Any] | None:
    answer = store.client.get_item(TableName=store.table, Key={"id": {"S": key}},
                                   ConsistentRead=True)
    item: dict[str, Any] | None = answer.get("Item")
    return item


def put_raw(store: DynamoDBStore, item: dict[str, Any]) -> None:
    store.client.put_item(TableName=store.table, Item=item)


def session_app(make_app: Callable[..., Flask], config: dict[str, Any]) -> Flask:
    app = make_app(config)

    @app.route("/ping")
    def ping() -> str:
        return "pong"

    @app.route("/read")
    def read() -> str:
        return f"welcome {session['user']}" if "user" in session else "please log in"

    @app.route("/login/<name>", methods=["POST"])
    def login(name: str) -> str:
        session["user"] = name
        return "ok"

    @app.route("/set/<key>/<int:size>", methods=["POST"])
    def set_value(key: str, size: int) -> str:
        session[key] = "x" * size
        return "ok"

    return app


def cookie_of(response: Any) -> str:
    header = response.headers["Set-Cookie"]
    return str(header.split(";", 1)[0].split("=", 1)[1])


def flask_config(**more: Any) -> dict[str, Any]:
    return {"SESSION_TYPE": "dynamodb", "SESSION_DYNAMODB": provider.client(),
            "SESSION_DYNAMODB_TABLE": provider.random_table(), **more}


@pytest.fixture
def dropped_tables() -> Iterator[list[str]]:
    """Names of tables a test creates through an app; dropped afterwards."""
    tables: list[str] = []
    yield tables
    for table in tables:
        with provider.dropped_afterwards(table):
            pass


def create_flask_session_table(table: str, client: Any = None) -> None:
    """The table exactly as Flask-Session 0.8 creates it: the key ``id`` only."""
    client = client or provider.client()
    client.create_table(
        TableName=table, AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}], BillingMode="PAY_PER_REQUEST")
    # CREATING until the server's next tick (dynalite, even with --createTableMs 0; AWS
    # for seconds): an item put before it is ACTIVE is refused as ResourceNotFound.
    deadline = time.monotonic() + 10
    while client.describe_table(TableName=table)["Table"]["TableStatus"] != "ACTIVE":
        assert time.monotonic() < deadline, f"{table} did not become ACTIVE"
        time.sleep(0.02)


# -- the table -------------------------------------------------------------------------------
def test_the_table_has_flask_sessions_key_and_the_user_index(store: DynamoDBStore) -> None:
    table = store.client.describe_table(TableName=store.table)["Table"]

    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    [index] = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == USER_INDEX
    assert index["KeySchema"] == [{"AttributeName": "user_key", "KeyType": "HASH"}]


def test_an_item_keeps_the_ttl_attribute_in_whole_seconds_past_its_expiry(
        store: DynamoDBStore) -> None:
    key = new_key()
    made = record({"cart": [1, 2]}, user_id="42")
    store.create(key, made)

    item = raw_item(store, key)

    assert item is not None
    assert item["expiration"] == {"N": str(math.ceil(made.expires_at))}
    assert float(item["expires_at"]["N"]) == made.expires_at  # exact, for the core
    assert item["values"]["M"]["kcart"] == {"B": CODEC.encode([1, 2])}
    assert item["user_id"] == {"S": "42"}


def test_keep_expired_moves_the_ttl_not_the_expiry() -> None:
    with provider.dropped_afterwards(table := provider.random_table()):
        store = DynamoDBStore(provider.client(), table, keep_expired=300)
        store.check()
        key = new_key()
        made = record({"a": 1}, lifetime=60)
        store.create(key, made)
        item = raw_item(store, key)
        assert item is not None
        assert int(item["expiration"]["N"]) == math.ceil(made.expires_at + 300)
        assert store.load(key, made.expires_at + 1) is None  # expired all the same
        store.touch(key, time.time(), time.time() + 10)
        item = raw_item(store, key)
        assert item is not None and int(item["expiration"]["N"]) >= time.time() + 309


def test_the_table_is_created_and_waited_for_until_active() -> None:
    server = start_or_skip(start_dynalite, create_table_ms=1500)
    try:
        client = provider.make_client(server.endpoint_url)
        stores = [DynamoDBStore(client, "Sessions") for _ in range(3)]
        started = time.monotonic()
        # Three workers starting at once: one creates the table, all wait for it.
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda s: s.check(), stores))
        assert time.monotonic() - started >= 1.4
        status = client.describe_table(TableName="Sessions")["Table"]["TableStatus"]
        assert status == "ACTIVE"
        key = new_key()
        stores[0].create(key, record({"a": 1}))
        assert values_of(stores[2], key) == {"a": 1}
    finally:
        server.stop()


def test_a_missing_table_fails_start_up_when_it_should_exist(
        make_app: Callable[..., Flask]) -> None:
    config = flask_config(SESSION_DYNAMODB_TABLE_EXISTS=True)
    with pytest.raises(ConfigurationError, match=config["SESSION_DYNAMODB_TABLE"]) as caught:
        make_app(config)
    assert isinstance(caught.value, ValueError)
    assert "does not exist" in str(caught.value)


def test_an_existing_table_is_used_as_it_is(make_app: Callable[..., Flask],
                                            dropped_tables: list[str]) -> None:
    config = flask_config(SESSION_DYNAMODB_TABLE_EXISTS=True)
    dropped_tables.append(config["SESSION_DYNAMODB_TABLE"])
    DynamoDBStore(provider.client(), config["SESSION_DYNAMODB_TABLE"]).check()  # made before
    app = session_app(make_app, config)
    browser = app.test_client()
    browser.post("/login/alice")
    assert browser.get("/read").text == "welcome alice"


def test_a_table_with_another_key_schema_is_refused(make_app: Callable[..., Flask],
                                                    dropped_tables: list[str]) -> None:
    config = flask_config()
    table = config["SESSION_DYNAMODB_TABLE"]
    dropped_tables.append(table)
    provider.client().create_table(
        TableName=table, AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}], BillingMode="PAY_PER_REQUEST")
    with pytest.raises(ConfigurationError, match="partition key 'id'"):
        make_app(config)


def test_a_flask_session_table_keeps_working_beside_its_old_items(
        make_app: Callable[..., Flask], dropped_tables: list[str],
        caplog: pytest.LogCaptureFixture) -> None:
    config = flask_config(SESSION_DYNAMODB_TABLE_EXISTS=True)
    table = config["SESSION_DYNAMODB_TABLE"]
    dropped_tables.append(table)
    create_flask_session_table(table)
    old = {"id": {"S": "session:flask-session-sid"}, "val": {"B": b"\x81\xa1a\x01"},
           "expiration": {"N": str(time.time() + 3600)}}
    provider.client().put_item(TableName=table, Item=old)

    with caplog.at_level(logging.WARNING, logger="sessionkeeper"):
        app = session_app(make_app, config)
    browser = app.test_client()
    browser.post("/login/alice")

    assert browser.get("/read").text == "welcome alice"
    kept = provider.client().get_item(TableName=table, Key={"id": old["id"]})["Item"]
    assert kept == old  # Flask-Session's item is left alone
    # No per-user index on that table: start-up says how to add it, and listing a
    # user's sessions says so too instead of answering an empty list.
    assert any("update-table" in r.getMessage() and USER_INDEX in r.getMessage()
               for r in caplog.records)
    store = DynamoDBStore(provider.client(), table, create_table=False)
    with pytest.raises(DynamoDBIndexMissing, match="update-table"):
        store.keys_for_user("alice", time.time())


# -- items -----------------------------------------------------------------------------------
@given(st.text(max_size=40))
def test_any_session_key_becomes_a_map_key_and_back(key: str) -> None:
    name = escape_key(key)
    assert name and unescape_key(name) == key


def test_awkward_keys_round_trip(store: DynamoDBStore) -> None:
    awkward = {"": 1, "k": 2, "x41": 3, "a.b": 4, "#v": 5, ":v0": 6, "values": 7,
               "\ud800lone": 8, "tab\there": 9}
    key = new_key()
    store.create(key, record(awkward))
    assert values_of(store, key) == awkward

    assert store.update(key, delta({"\udfffother": 10, "": 11}, deleted_keys={"x41", "#v"}))

    expected = {k: v for k, v in awkward.items() if k not in ("x41", "#v")}
    assert values_of(store, key) == expected | {"\udfffother": 10, "": 11}


def test_numbers_are_written_as_digits() -> None:
    assert number(1e-7) == {"N": "0.0000001"}
    assert number(1764751467.123456) == {"N": "1764751467.123456"}
    with pytest.raises(ValueError):
        number(float("inf"))


@pytest.mark.parametrize("damage", [
    {"values": {"S": "not a map"}},
    {"values": {"M": {"kname": {"S": "not binary"}}}},
    {"values": {"M": {"plain": {"B": b"1"}}}},
    {"expires_at": {"S": "soon"}},
    {"permanent": {"S": "yes"}},
    {"created_at": None},
])
def test_a_damaged_item_raises_undecodable_record(store: DynamoDBStore,
                                                  damage: dict[str, Any]) -> None:
    key = new_key()
    store.create(key, record({"a": 1}))
    item = raw_item(store, key)
    assert item is not None
    for name, value in damage.items():
        if value is None:
            del item[name]
        else:
            item[name] = value
    put_raw(store, item)

    with pytest.raises(UndecodableRecord):
        store.load(key, time.time())


def test_a_write_never_patches_an_item_without_a_values_map(store: DynamoDBStore) -> None:
    key = new_key()
    store.create(key, record({"a": 1}))
    item = raw_item(store, key)
    assert item is not None
    item["values"] = {"S": "not a map"}
    put_raw(store, item)

    assert store.update(key, delta({"b": 2})) is False
    assert store.touch(key, time.time(), time.time() + 60) is False
    assert raw_item(store, key) == item


def test_add_claims_a_key_once_and_replaces_a_dead_record(store: DynamoDBStore) -> None:
    key = new_key()
    assert store.add(key, record({"first": 1})) is True
    assert store.add(key, record({"second": 2})) is False
    assert values_of(store, key) == {"first": 1}

    expired = new_key()
    store.create(expired, record({"old": 1}, now=time.time() - 100, lifetime=10))
    assert store.add(expired, record({"new": 1})) is True
    assert values_of(store, expired) == {"new": 1}

    damaged = new_key()
    put_raw(store, {"id": {"S": damaged}, "val": {"B": b"junk"}})
    assert store.add(damaged, record({"fresh": 1})) is True
    assert values_of(store, damaged) == {"fresh": 1}


def test_concurrent_adds_of_one_key_let_exactly_one_win(store: DynamoDBStore) -> None:
    key = new_key()
    start = threading.Barrier(10, timeout=30)

    def claim(i: int) -> bool:
        start.wait()
        return store.add(key, record({"winner": i}))

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(claim, range(10)))

    assert results.count(True) == 1
    assert values_of(store, key) == {"winner": results.index(True)}


def test_touch_and_update_say_whether_the_session_was_there(store: DynamoDBStore) -> None:
    key, expired = new_key(), new_key()
    now = time.time()
    store.create(key, record({"a": 1}))
    store.create(expired, record({"a": 1}, now=now - 100, lifetime=10))

    assert store.touch(key, now, now + 60) is True
    assert store.touch(new_key(), now, now + 60) is False
    # Expired but not yet removed by TTL: as good as gone, and not brought back.
    assert store.touch(expired, now, now + 60) is False
    assert store.update(expired, delta({"b": 2})) is False
    assert store.load(expired, now - 95) is not None  # unchanged: still its old expiry
    assert store.load(expired, now) is None


# -- the item size limit -----------------------------------------------------------------------
def test_a_session_over_400_kb_fails_with_a_clear_error(store: DynamoDBStore) -> None:
    key = new_key()
    with pytest.raises(DynamoDBItemTooLarge, match="400 KB") as caught:
        store.create(key, record({"blob": "x" * 500_000}))
    assert isinstance(caught.value, SessionKeeperError)
    assert not isinstance(caught.value, StoreUnavailable)  # not an outage: no retry helps
    assert store.load(key, time.time()) is None


def test_a_change_that_would_grow_the_item_past_400_kb_is_refused_whole(
        store: DynamoDBStore) -> None:
    key = new_key()
    store.create(key, record({"first": "a" * 300_000}))

    with pytest.raises(DynamoDBItemTooLarge, match="400 KB"):
        store.update(key, delta({"second": "b" * 200_000, "small": 1}))

    assert values_of(store, key) == {"first": "a" * 300_000}  # nothing half written
    assert store.update(key, delta({"small": 1}))


def test_a_view_storing_too_much_answers_500_and_keeps_the_session(
        make_app: Callable[..., Flask], dropped_tables: list[str]) -> None:
    config = flask_config(PROPAGATE_EXCEPTIONS=False)
    dropped_tables.append(config["SESSION_DYNAMODB_TABLE"])
    app = session_app(make_app, config)
    browser = app.test_client()
    browser.post("/login/alice")

    assert browser.post("/set/big/500000").status_code == 500
    assert browser.get("/read").text == "welcome alice"
    assert browser.post("/set/small/10").status_code == 200


# -- deltas --------------------------------------------------------------------------------
def test_a_delta_too_large_for_one_expression_is_written_whole(store: DynamoDBStore) -> None:
    key = new_key()
    store.create(key, record({"keep": 1, "drop": 2}))
    many = {f"key-{i}": i for i in range(400)}
    assert not delta_expression(delta(many), store.ttl).fits  # over DynamoDB's limits
    assert len(delta_expression(delta(many), store.ttl).update_expression) > EXPRESSION_LIMIT

    assert store.update(key, delta(many, deleted_keys={"drop"}))

    assert values_of(store, key) == {"keep": 1, **many}
    store.delete(key)
    assert store.update(key, delta(many)) is False  # a logout is never undone
    assert store.load(key, time.time()) is None


def test_large_and_small_deltas_racing_on_one_session_lose_nothing(
        store: DynamoDBStore) -> None:
    key = new_key()
    store.create(key, record({"base": 0}))
    start = threading.Barrier(16, timeout=30)

    def save(i: int) -> bool:
        start.wait()
        if i % 2:  # read, merge and write whole, checking the version
            return store.update(key, delta({f"big-{i}-{n}": n for n in range(320)}))
        return store.update(key, delta({f"small-{i}": i}))

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(save, range(16)))

    assert all(results)
    values = values_of(store, key)
    assert values["base"] == 0
    for i in range(16):
        if i % 2:
            assert all(values[f"big-{i}-{n}"] == n for n in range(320)), f"writer {i} lost"
        else:
            assert values[f"small-{i}"] == i, f"writer {i} lost"


# -- the per-user index --------------------------------------------------------------------
def test_users_with_empty_or_very_long_ids_are_indexed(store: DynamoDBStore) -> None:
    for user in ("", "u" * 5000, "ключ 😀"):
        key = new_key()
        store.create(key, record({"n": 1}, user_id=user))
        assert store.keys_for_user(user, time.time()) == [key]
        loaded = store.load(key, time.time())
        assert loaded is not None and loaded.user_id == user


def test_the_index_lists_only_keys_under_the_stores_prefix(store: DynamoDBStore) -> None:
    user = f"user-{secrets.token_hex(4)}"
    mine = DynamoDBStore(store.client, store.table, key_prefix="app:")
    longer = DynamoDBStore(store.client, store.table, key_prefix="app:admin:")
    own, other = new_key("app:"), new_key("app:admin:")
    mine.create(own, record({"n": 1}, user_id=user))
    longer.create(other, record({"n": 2}, user_id=user))

    assert mine.keys_for_user(user, time.time()) == [own]
    assert longer.keys_for_user(user, time.time()) == [other]
    assert sorted(store.keys_for_user(user, time.time())) == sorted([own, other])


def test_a_user_with_many_sessions_is_listed_page_by_page(store: DynamoDBStore) -> None:
    user = f"user-{secrets.token_hex(4)}"
    keys = {new_key() for _ in range(12)}
    for key in keys:
        store.create(key, record({"n": 1}, user_id=user))
    store.page_size = 5

    assert set(store.keys_for_user(user, time.time())) == keys


# -- configuration -------------------------------------------------------------------------
def build(config: dict[str, Any]) -> DynamoDBStore:
    return store_from_settings(Settings.from_mapping({"SESSION_TYPE": "dynamodb", **config}),
                               CODEC)


def test_a_boto3_resource_works_as_flask_session_takes_it(
        make_app: Callable[..., Flask], dropped_tables: list[str]) -> None:
    resource = boto3.resource("dynamodb", endpoint_url=provider.server().endpoint_url,
                              region_name=provider.REGION, aws_access_key_id="dummy",
                              aws_secret_access_key="dummy")
    config = flask_config(SESSION_DYNAMODB=resource)
    dropped_tables.append(config["SESSION_DYNAMODB_TABLE"])
    app = session_app(make_app, config)
    browser = app.test_client()
    browser.post("/login/alice")
    assert browser.get("/read").text == "welcome alice"


def test_an_endpoint_url_builds_a_client_with_short_timeouts(
        monkeypatch: pytest.MonkeyPatch, make_app: Callable[..., Flask],
        dropped_tables: list[str]) -> None:
    for name, value in (("AWS_ACCESS_KEY_ID", "dummy"), ("AWS_SECRET_ACCESS_KEY", "dummy"),
                        ("AWS_DEFAULT_REGION", provider.REGION)):
        monkeypatch.setenv(name, value)
    config = flask_config(SESSION_DYNAMODB=provider.server().endpoint_url,
                          SESSION_DYNAMODB_TIMEOUT=1.5)
    dropped_tables.append(config["SESSION_DYNAMODB_TABLE"])
    store = build(config)
    try:
        assert store.client.meta.config.connect_timeout == 1.5
        assert store.client.meta.config.read_timeout == 1.5
        assert store.client.meta.config.retries["total_max_attempts"] == 2
    finally:
        store.close()
    app = session_app(make_app, config)
    browser = app.test_client()
    browser.post("/login/alice")
    assert browser.get("/read").text == "welcome alice"


def test_unset_means_flask_sessions_local_default(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sessionkeeper"):
        store = build({})
    try:
        assert store.client.meta.endpoint_url == DEFAULT_ENDPOINT
        assert store.table == "Sessions"
        assert store.create_table is True
    finally:
        store.close()
    assert any(DEFAULT_ENDPOINT in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("value", [42, "localhost:8000", object(), ["http://x"]])
def test_other_values_are_rejected_saying_what_is_accepted(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="boto3 DynamoDB resource"):
        build({"SESSION_DYNAMODB": value})


def test_a_client_of_another_service_is_rejected() -> None:
    s3 = boto3.client("s3", region_name="us-east-1", aws_access_key_id="dummy",
                      aws_secret_access_key="dummy")
    with pytest.raises(ConfigurationError, match="not a botocore"):
        build({"SESSION_DYNAMODB": s3})


@pytest.mark.parametrize("config", [
    {"SESSION_DYNAMODB_TABLE": "ab"}, {"SESSION_DYNAMODB_TABLE": "with space"},
    {"SESSION_DYNAMODB_TABLE_EXISTS": "yes"}, {"SESSION_DYNAMODB_TIMEOUT": 0},
])
def test_bad_settings_are_rejected(config: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        build({"SESSION_DYNAMODB": provider.client(), **config})


def test_a_given_client_with_botocores_long_timeouts_is_warned_about(
        caplog: pytest.LogCaptureFixture) -> None:
    slow = boto3.client("dynamodb", endpoint_url=provider.server().endpoint_url,
                        region_name=provider.REGION, aws_access_key_id="dummy",
                        aws_secret_access_key="dummy")
    with caplog.at_level(logging.WARNING, logger="sessionkeeper"):
        build({"SESSION_DYNAMODB": slow})
    assert any("read_timeout" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sessionkeeper"):
        build({"SESSION_DYNAMODB": provider.client()})  # short timeouts: quiet
    assert not caplog.records


# DynamoDB reserved words (ttl, data) and a name no expression may hold as it is
@pytest.mark.parametrize("attribute", ["ttl", "data", "expiry-time"])
def test_a_tables_ttl_attribute_of_any_name_is_written_by_every_change(
        store: DynamoDBStore, attribute: str) -> None:
    store.ttl = TimeToLive(attribute)
    key = new_key()
    store.create(key, record({"a": 1}, user_id="7"))
    assert store.update(key, delta({"a": 2}, user_id="8", user_id_changed=True)) is True
    later = time.time() + 7200
    assert store.touch(key, time.time(), later) is True

    item = raw_item(store, key)
    assert item is not None and item[attribute] == {"N": str(math.ceil(later))}
    assert item["user_id"] == {"S": "8"} and item["version"] == {"N": "1"}
    assert values_of(store, key) == {"a": 2}
    assert store.update(new_key(), delta({"a": 3})) is False  # no item: refused, none made


def test_the_ttl_goes_where_the_tables_ttl_looks() -> None:
    assert TableState(True, None).time_to_live(5).attribute == "expiration"
    assert TableState(True, "ttl").time_to_live(5).attribute == "ttl"
    # One of the layout's own attributes is never written twice.
    assert TableState(True, "expires_at").time_to_live(5).attribute == "expiration"


# -- logs ------------------------------------------------------------------------------------
def test_botocores_wire_log_never_shows_session_keys_or_data(
        store: DynamoDBStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key = new_key()
    secret = f"card-{secrets.token_hex(8)}"
    store.create(key, record({"note": secret}))
    store.update(key, delta({"more": secret}))
    assert store.load(key, time.time()) is not None
    store.delete(key)
    text = "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert "botocore" in {r.name.split(".")[0] for r in caplog.records}  # it did log
    assert key[-64:] not in text and secret not in text

    caplog.clear()  # the app's other calls log as botocore always does
    store.client.describe_table(TableName=store.table)
    assert store.table in "\n".join(r.getMessage() for r in caplog.records)


# -- outages ---------------------------------------------------------------------------------
@pytest.fixture
def own_server() -> Iterator[DynaliteServer]:
    server = start_or_skip(start_dynalite, persistent=True)
    yield server
    server.stop()


def test_an_endpoint_nobody_listens_on_fails_start_up_naming_the_store(
        make_app: Callable[..., Flask]) -> None:
    client = provider.make_client(f"http://127.0.0.1:{unused_port()}", timeout=1)
    with pytest.raises(ConfigurationError, match="dynamodb is unavailable"):
        make_app(flask_config(SESSION_DYNAMODB=client))


def test_a_stopped_server_answers_503_and_the_app_recovers_when_it_is_back(
        make_app: Callable[..., Flask], own_server: DynaliteServer) -> None:
    client = provider.make_client(own_server.endpoint_url, timeout=1)
    app = session_app(make_app, flask_config(SESSION_DYNAMODB=client))
    browser = app.test_client()
    browser.post("/login/alice")

    own_server.kill()
    started = time.monotonic()
    assert browser.get("/read").status_code == 503  # never a silent logout
    assert time.monotonic() - started < 5
    response = browser.post("/login/bob")
    assert response.status_code == 503 and "Set-Cookie" not in response.headers
    assert browser.get("/ping").text == "pong"

    own_server.restart()
    deadline = time.monotonic() + 30
    while (answer := browser.get("/read")).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.2)  # the breaker lets one probe through now and then
    assert answer.text == "welcome alice"  # the same session, kept by the server


def test_every_operation_on_a_stopped_server_is_store_unavailable(
        own_server: DynaliteServer) -> None:
    store = DynamoDBStore(provider.make_client(own_server.endpoint_url, timeout=1), "Sessions")
    store.check()
    key = new_key()
    store.create(key, record({"a": 1}, user_id="u"))
    own_server.kill()
    now = time.time()
    operations: list[Callable[[], object]] = [
        lambda: store.load(key, now), lambda: store.create(new_key(), record()),
        lambda: store.add(new_key(), record()), lambda: store.update(key, delta({"b": 1})),
        lambda: store.touch(key, now, now + 60), lambda: store.delete(key),
        lambda: store.keys_for_user("u", now), lambda: store.delete_expired(now),
        store.check,
    ]
    for operation in operations:
        with pytest.raises(StoreUnavailable):
            operation()


def test_a_frozen_server_times_out_as_store_unavailable(own_server: DynaliteServer) -> None:
    store = DynamoDBStore(provider.make_client(own_server.endpoint_url, timeout=0.5),
                          "Sessions")
    store.check()
    key = new_key()
    store.create(key, record({"a": 1}))
    own_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=r"timeout|timed out"):
            store.load(key, time.time())
        # Two attempts of half a second, and standard mode's backoff (under a second).
        assert time.monotonic() - started < 4
    finally:
        own_server.resume()
    assert values_of(store, key) == {"a": 1}
