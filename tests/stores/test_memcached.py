"""The memcached store, against real throwaway memcached servers.

Covers what the shared suites cannot: the SESSION_MEMCACHED forms, the work each request
costs on the server (read from memcached's own ``stats``), CAS under concurrent writers,
server TTLs (memcached reads expiries over 30 days as unix times), safe keys, the item
size limit, and outages of a server that later comes back.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

import msgspec
import pytest
from flask import Flask, session
from providers import memcached as provider
from pymemcache.client.base import Client, PooledClient
from pymemcache.client.hash import HashClient
from servers import ServerGroup, start_memcached, start_or_skip, unused_port

from sessionkeeper.errors import (
    ConfigurationError,
    SessionKeeperError,
    StoreUnavailable,
    UndecodableRecord,
)
from sessionkeeper.ids import storage_key
from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.base import RecordCodec, SessionRecord, SessionUpdate
from sessionkeeper.stores.memcached import (
    INDEX_PRUNE_AT,
    MAX_KEY_LENGTH,
    MAX_RELATIVE_TTL,
    MAX_SESSIONS_PER_USER,
    MemcachedItemTooLarge,
    MemcachedStore,
    build_client,
    client_from_setting,
    memcached_key,
    parse_address,
)

DAY = 24 * 3600
CODEC = ValueCodec()
T = TypeVar("T")
COUNTED = ("cmd_get", "cmd_set", "cmd_touch", "cas_hits", "cas_badval", "cas_misses")


# -- servers and helpers ---------------------------------------------------------------
@pytest.fixture(scope="module")
def shared() -> ServerGroup:
    """The provider's two servers (8 MB items), shared with the other suites."""
    return provider.servers()


@pytest.fixture
def dedicated() -> Iterator[ServerGroup]:
    """One server of this test's own, so its stats count only this test's work."""
    group = start_or_skip(start_memcached, 1)
    yield group
    group.stop()


def address(server: tuple[str, int]) -> str:
    return f"{server[0]}:{server[1]}"


def stats(server: tuple[str, int]) -> dict[str, int]:
    client = Client(server, connect_timeout=5, timeout=5)
    try:
        raw = client.stats()
    finally:
        client.close()
    return {name: int(raw[name.encode()]) for name in (*COUNTED, "curr_items")}


def ops_during(server: tuple[str, int], action: Callable[[], Any]) -> dict[str, int]:
    """What ``action`` made the server do: deltas of its command counters."""
    before = stats(server)
    action()
    after = stats(server)
    return {name: after[name] - before[name] for name in COUNTED}


def no_ops(**counts: int) -> dict[str, int]:
    return {name: counts.get(name, 0) for name in COUNTED}


def server_ttl(server: tuple[str, int], key: str) -> int | None:
    """The remaining TTL memcached holds for ``key`` (meta get), None when absent."""
    with socket.create_connection(server, timeout=5) as conn:
        conn.sendall(f"mg {key} t\r\n".encode())
        reply = conn.recv(4096).decode()
    if reply.startswith("EN"):
        return None
    assert reply.startswith("HD"), reply
    return int(reply.split()[1][1:])


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

    @app.route("/set/<key>", methods=["POST"])
    def set_value(key: str) -> str:
        session[key] = key.upper()
        return "ok"

    @app.route("/keys")
    def keys() -> str:
        return ",".join(sorted(session.keys()))

    @app.route("/bind/<user_id>", methods=["POST"])
    def bind(user_id: str) -> str:
        session.login(user_id)  # type: ignore[attr-defined]
        return "ok"

    return app


def cookie_of(response: Any) -> str:
    header = response.headers["Set-Cookie"]
    return str(header.split(";", 1)[0].split("=", 1)[1])


def record(values: dict[str, bytes] | None = None, lifetime: float = 3600,
           user_id: str | None = None) -> SessionRecord:
    now = time.time()
    return SessionRecord(values=values or {}, created_at=now, accessed_at=now,
                         expires_at=now + lifetime, permanent=True, user_id=user_id)


def delta(set_values: dict[str, bytes] | None = None, **fields: Any) -> SessionUpdate:
    now = time.time()
    base: dict[str, Any] = dict(set_values=set_values or {}, deleted_keys=set(),
                                replace=False, accessed_at=now, expires_at=now + 3600,
                                permanent=True)
    base.update(fields)
    return SessionUpdate(**base)


@pytest.fixture
def store(shared: ServerGroup) -> Iterator[MemcachedStore]:
    with provider.store(ValueCodec()) as made:
        yield made


# -- SESSION_MEMCACHED -----------------------------------------------------------------
@pytest.mark.parametrize(("given", "expected"), [
    ("10.0.0.5:11300", ("10.0.0.5", 11300)),
    ("cache.internal", ("cache.internal", 11211)),
    (" cache:11212 ", ("cache", 11212)),
    ("[::1]:11300", ("::1", 11300)),
    ("[::1]", ("::1", 11211)),
    (("cache", 11213), ("cache", 11213)),
    (("cache", "11214"), ("cache", 11214)),
    ("/run/memcached.sock", "/run/memcached.sock"),
    ("unix:/run/memcached.sock", "/run/memcached.sock"),
])
def test_addresses_are_read_like_pymemcache_reads_them(given: Any, expected: Any) -> None:
    assert parse_address(given) == expected


@pytest.mark.parametrize("given", [
    "cache:eleven", "cache:0", "cache:70000", "::1:11211", "", "   ", ":11211",
    ("cache", True), ("cache", 1.5), 11211,
])
def test_bad_addresses_fail_with_a_message(given: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"memcached|SESSION_MEMCACHED"):
        parse_address(given)


@pytest.mark.parametrize("given", [42, {"host": "cache"}, object(), b"127.0.0.1:11211"])
def test_other_types_are_rejected_at_start_up_saying_what_is_accepted(
        make_app: Callable[..., Flask], given: Any) -> None:
    with pytest.raises(ConfigurationError) as caught:
        make_app(SESSION_TYPE="memcached", SESSION_MEMCACHED=given)
    message = str(caught.value)
    assert "SESSION_MEMCACHED must be a pymemcache Client, PooledClient or HashClient" in message
    assert "host:port" in message and "list of addresses" in message


def test_an_empty_address_list_is_rejected(make_app: Callable[..., Flask]) -> None:
    with pytest.raises(ConfigurationError, match="at least one address"):
        make_app(SESSION_TYPE="memcached", SESSION_MEMCACHED=[])


def test_a_server_nobody_runs_fails_start_up_naming_it(make_app: Callable[..., Flask]) -> None:
    where = f"127.0.0.1:{unused_port()}"
    with pytest.raises(ConfigurationError) as caught:
        make_app(SESSION_TYPE="memcached", SESSION_MEMCACHED=where)
    assert "memcached" in str(caught.value)
    assert where.split(":")[1] in str(caught.value)


def test_a_bad_timeout_is_rejected(make_app: Callable[..., Flask], shared: ServerGroup) -> None:
    with pytest.raises(ConfigurationError, match="SESSION_MEMCACHED_TIMEOUT"):
        make_app(SESSION_TYPE="memcached", SESSION_MEMCACHED=address(shared[0]),
                 SESSION_MEMCACHED_TIMEOUT="fast")


def test_the_timeout_reaches_the_client(make_app: Callable[..., Flask],
                                        shared: ServerGroup) -> None:
    app = make_app(SESSION_TYPE="memcached", SESSION_MEMCACHED=address(shared[0]),
                   SESSION_MEMCACHED_TIMEOUT=timedelta(milliseconds=2500))
    client = app.extensions["sessionkeeper"].backend.store.client
    assert (client.timeout, client.connect_timeout) == (2.5, 2.5)


def test_unset_means_the_local_default_server() -> None:
    client = client_from_setting(None)
    assert isinstance(client, PooledClient)
    assert client.server == ("127.0.0.1", 11211)


def test_built_clients_are_pooled_with_nodelay_and_short_timeouts() -> None:
    single = client_from_setting("cache:11211", timeout=0.5)
    assert isinstance(single, PooledClient)
    assert single.no_delay and single.timeout == 0.5 and single.connect_timeout == 0.5

    several = client_from_setting(["cache-a:11211", ("cache-b", 11212)])
    assert isinstance(several, HashClient) and several.use_pooling
    servers = list(several.clients.values())
    assert {s.server for s in servers} == {("cache-a", 11211), ("cache-b", 11212)}
    for server in servers:
        assert isinstance(server, PooledClient)
        assert server.no_delay and server.timeout == 1.0 and server.connect_timeout == 1.0


def test_a_given_client_without_nodelay_is_used_but_warned_about(
        make_app: Callable[..., Flask], shared: ServerGroup,
        caplog: pytest.LogCaptureFixture) -> None:
    client = Client(shared[0], connect_timeout=5, timeout=5)
    with caplog.at_level(logging.WARNING, logger="sessionkeeper"):
        app = make_app(SESSION_TYPE="memcached", SESSION_MEMCACHED=client)
    assert "no_delay=False" in caplog.text
    assert app.extensions["sessionkeeper"].backend.store.client is client


def login_read_logout(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/read").text == "please log in"
    client.post("/login/laowang")
    assert client.get("/read").text == "welcome laowang"
    client.get("/ping")
    client.delete_cookie("session")
    assert client.get("/read").text == "please log in"


def test_a_plain_client_is_used_as_given(make_app: Callable[..., Flask],
                                         shared: ServerGroup) -> None:
    client = Client(shared[0], connect_timeout=5, timeout=5, no_delay=True)
    prefix = "mc-plain:"
    app = session_app(make_app, {"SESSION_TYPE": "memcached", "SESSION_MEMCACHED": client,
                                 "SESSION_KEY_PREFIX": prefix})
    browser = app.test_client()
    sid = cookie_of(browser.post("/login/laowang"))
    assert browser.get("/read").text == "welcome laowang"
    # The record is on that server, under the prefix and the hash of the id.
    assert client.get(prefix + storage_key(sid)) is not None
    login_read_logout(app)


def test_a_hash_client_spreads_sessions_over_both_servers(
        make_app: Callable[..., Flask], shared: ServerGroup) -> None:
    client = HashClient(list(shared), use_pooling=True, no_delay=True,
                        connect_timeout=5, timeout=5)
    prefix = "mc-hash:"
    app = session_app(make_app, {"SESSION_TYPE": "memcached", "SESSION_MEMCACHED": client,
                                 "SESSION_KEY_PREFIX": prefix})
    keys = []
    for n in range(24):
        browser = app.test_client()
        keys.append(prefix + storage_key(cookie_of(browser.post(f"/login/user{n}"))))
        assert browser.get("/read").text == f"welcome user{n}"
    per_server = [Client(server, connect_timeout=5, timeout=5).get_many(keys)
                  for server in shared]
    assert all(per_server), "every server holds some sessions"
    assert sum(len(found) for found in per_server) == len(keys), "each session is on one"


@pytest.mark.parametrize("form", ["strings", "tuples", "comma-separated", "one string",
                                  "one tuple"])
def test_addresses_work_in_every_form(make_app: Callable[..., Flask], shared: ServerGroup,
                                      form: str) -> None:
    setting: Any = {
        "strings": [address(s) for s in shared],
        "tuples": list(shared),
        "comma-separated": ",".join(address(s) for s in shared),
        "one string": address(shared[0]),
        "one tuple": tuple(shared[0]),
    }[form]
    app = session_app(make_app, {"SESSION_TYPE": "memcached", "SESSION_MEMCACHED": setting,
                                 "SESSION_MEMCACHED_TIMEOUT": 5})
    login_read_logout(app)


# -- what each request costs on the server ---------------------------------------------
def test_server_work_per_request(make_app: Callable[..., Flask],
                                 dedicated: ServerGroup) -> None:
    server = dedicated[0]
    app = session_app(make_app, {"SESSION_TYPE": "memcached",
                                 "SESSION_MEMCACHED": address(server)})
    browser = app.test_client()

    assert ops_during(server, lambda: browser.get("/ping")) == no_ops()
    assert ops_during(server, lambda: browser.post("/login/laowang")) == no_ops(cmd_set=1)
    assert ops_during(server, lambda: browser.get("/read")) == no_ops(cmd_get=1)
    # A change reuses the CAS token of the request's own read: one gets, one cas.
    assert ops_during(server, lambda: browser.post("/set/theme")) == no_ops(
        cmd_get=1, cmd_set=1, cas_hits=1)
    assert ops_during(server, lambda: browser.get("/ping")) == no_ops()
    assert browser.get("/keys").text == "theme,user"


def test_login_lists_the_session_under_its_user(make_app: Callable[..., Flask],
                                                dedicated: ServerGroup) -> None:
    server = dedicated[0]
    app = session_app(make_app, {"SESSION_TYPE": "memcached",
                                 "SESSION_MEMCACHED": address(server)})
    store = app.extensions["sessionkeeper"].backend.store
    phone, laptop = app.test_client(), app.test_client()
    phone.post("/login/laowang")
    laptop.post("/login/laowang")
    # The request's read and a second one (a write that landed meanwhile moves too), the
    # user's list (gets + add), the new id (set), the old id's forward record (add), the
    # old id gone.
    assert ops_during(server, lambda: phone.post("/bind/42")) == no_ops(cmd_get=3, cmd_set=3)
    laptop.post("/bind/42")
    keys = {"session:" + storage_key(browser.get_cookie("session").value)  # type: ignore[union-attr]
            for browser in (phone, laptop)}
    assert set(store.keys_for_user("42", time.time())) == keys
    assert phone.get("/read").text == "welcome laowang"


def test_a_refresh_is_one_cas(make_app: Callable[..., Flask], dedicated: ServerGroup) -> None:
    server = dedicated[0]
    app = session_app(make_app, {"SESSION_TYPE": "memcached",
                                 "SESSION_MEMCACHED": address(server),
                                 "SESSION_REFRESH_FRACTION": 0})  # refresh on every read
    browser = app.test_client()
    browser.post("/login/laowang")
    assert ops_during(server, lambda: browser.get("/read")) == no_ops(
        cmd_get=1, cmd_set=1, cas_hits=1)


@pytest.mark.filterwarnings("ignore:The 'session' cookie is too large")
def test_a_hostile_cookie_never_reaches_memcached(make_app: Callable[..., Flask],
                                                  dedicated: ServerGroup) -> None:
    server = dedicated[0]
    app = session_app(make_app, {"SESSION_TYPE": "memcached",
                                 "SESSION_MEMCACHED": address(server)})
    browser = app.test_client()
    for value in ("x" * 5000, "a b\r\nset evil 0 0 1", "\x00" * 40):
        browser.set_cookie("session", value)
        response = None

        def visit(value: str = value) -> None:
            nonlocal response
            response = browser.get("/read")

        assert ops_during(server, visit) == no_ops()
        assert response is not None and response.status_code == 200
        assert response.text == "please log in"


# -- concurrency -----------------------------------------------------------------------
def test_concurrent_writers_of_distinct_keys_lose_nothing(
        make_app: Callable[..., Flask], shared: ServerGroup) -> None:
    app = session_app(make_app, {"SESSION_TYPE": "memcached",
                                 "SESSION_MEMCACHED": [address(s) for s in shared],
                                 "SESSION_MEMCACHED_TIMEOUT": 5})
    first = app.test_client()
    token = cookie_of(first.post("/login/laowang"))
    writers = 50
    start = threading.Barrier(writers)
    statuses: list[int] = []

    def write(n: int) -> None:
        browser = app.test_client()
        browser.set_cookie("session", token)
        start.wait()
        statuses.append(browser.post(f"/set/k{n:02d}").status_code)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * writers
    expected = sorted([f"k{n:02d}" for n in range(writers)] + ["user"])
    assert first.get("/keys").text == ",".join(expected)


def test_a_write_between_read_and_save_is_merged_not_lost(store: MemcachedStore) -> None:
    key = "session:" + "a" * 64
    store.create(key, record({"a": b"1"}))
    loaded = store.load(key, time.time())  # its version holds the CAS token
    assert loaded is not None
    other = MemcachedStore(store.client)
    result: list[bool] = []
    writer = threading.Thread(target=lambda: result.append(other.update(key, delta({"b": b"2"}))))
    writer.start()
    writer.join()
    assert result == [True]
    # A stale token: re-read, merge, retry.
    assert store.update(key, delta({"c": b"3"}, version=loaded.version))
    assert values_of(store, key) == {"a": b"1", "b": b"2", "c": b"3"}


# Load and save of one request may run on different threads (ASGI, a thread pool), and
# many requests may interleave on one thread (an event loop): the CAS token travels with
# the loaded record's version, so the save is still one cas and never a re-read.
def on_another_thread(action: Callable[[], T]) -> T:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(action).result()


def values_of(store: MemcachedStore, key: str) -> dict[str, bytes]:
    loaded = store.load(key, time.time())
    assert loaded is not None, f"{key} is gone"
    return loaded.values


def loaded_version(store: MemcachedStore, key: str) -> Any:
    loaded = store.load(key, time.time())
    assert loaded is not None
    return loaded.version


def test_a_save_on_another_thread_than_its_load_is_one_cas(dedicated: ServerGroup) -> None:
    server = dedicated[0]
    store = MemcachedStore(build_client([server]))
    key = "session:" + "c" * 64
    store.create(key, record({"a": b"1"}))
    version = loaded_version(store, key)

    saved = ops_during(server, lambda: on_another_thread(
        lambda: store.update(key, delta({"b": b"2"}, version=version))))
    assert saved == no_ops(cmd_set=1, cas_hits=1)  # the load's token: no re-read
    assert values_of(store, key) == {"a": b"1", "b": b"2"}

    version = loaded_version(store, key)
    now = time.time()
    refreshed = ops_during(server, lambda: on_another_thread(
        lambda: store.touch(key, now, now + 7200, version=version)))
    assert refreshed == no_ops(cmd_set=1, cas_hits=1)
    assert store.load(key, now + 3600) is not None  # extended


def test_two_sessions_loaded_in_turn_on_one_thread_each_save_with_one_cas(
        dedicated: ServerGroup) -> None:
    server = dedicated[0]
    store = MemcachedStore(build_client([server]))
    first, second = "session:" + "d" * 64, "session:" + "e" * 64
    store.create(first, record({"n": b"1"}))
    store.create(second, record({"n": b"2"}))
    # Two requests on one event loop: both load, then both save.
    first_version = loaded_version(store, first)
    second_version = loaded_version(store, second)

    def save_both() -> None:
        assert store.update(first, delta({"x": b"5"}, version=first_version))
        assert store.update(second, delta({"x": b"6"}, version=second_version))

    assert ops_during(server, save_both) == no_ops(cmd_set=2, cas_hits=2)
    assert values_of(store, first) == {"n": b"1", "x": b"5"}
    assert values_of(store, second) == {"n": b"2", "x": b"6"}


def test_a_write_landing_between_load_and_a_save_on_another_thread_is_kept(
        dedicated: ServerGroup) -> None:
    server = dedicated[0]
    store = MemcachedStore(build_client([server]))
    key = "session:" + "f" * 64
    store.create(key, record({"a": b"1"}))
    slow = loaded_version(store, key)  # a slow request loads ...
    quick = loaded_version(store, key)  # ... a quick one loads and saves meanwhile
    assert on_another_thread(lambda: store.update(key, delta({"b": b"2"}, version=quick)))

    saved = ops_during(server, lambda: on_another_thread(
        lambda: store.update(key, delta({"c": b"3"}, version=slow))))
    # The slow request's token is stale: its cas is refused, then it re-reads and merges.
    assert saved == no_ops(cmd_set=2, cas_badval=1, cmd_get=1, cas_hits=1)
    assert values_of(store, key) == {"a": b"1", "b": b"2", "c": b"3"}


def test_a_version_of_another_key_is_not_used(dedicated: ServerGroup) -> None:
    server = dedicated[0]
    store = MemcachedStore(build_client([server]))
    loaded, other = "session:" + "1" * 64, "session:" + "2" * 64
    store.create(loaded, record({"a": b"1"}))
    store.create(other, record({"b": b"2"}))
    version = loaded_version(store, loaded)
    # As after an id rotation: the delta goes to another key, whose record is read first.
    saved = ops_during(server, lambda: store.update(other, delta({"c": b"3"},
                                                                 version=version)))
    assert saved == no_ops(cmd_get=1, cmd_set=1, cas_hits=1)
    assert values_of(store, other) == {"b": b"2", "c": b"3"}
    assert values_of(store, loaded) == {"a": b"1"}


# -- store behaviour -------------------------------------------------------------------
def test_update_and_touch_never_recreate_a_deleted_record(store: MemcachedStore) -> None:
    key = "session:" + "b" * 64
    store.create(key, record({"a": b"1"}))
    assert store.load(key, time.time()) is not None
    store.delete(key)
    assert store.update(key, delta({"b": b"2"})) is False
    assert store.touch(key, time.time(), time.time() + 3600) is False
    assert store.load(key, time.time()) is None
    store.delete(key)  # deleting what is gone is fine


def server_clock(server: tuple[str, int]) -> int:
    """The memcached server's own unix time (``stats`` ``time``): it reads absolute
    expiries by this clock, which keeps ticking steadily when the machine's wall clock
    is stepped (NTP), so the two can differ by the size of the step."""
    client = Client(server, connect_timeout=5, timeout=5)
    try:
        return int(client.stats()[b"time"])
    finally:
        client.close()


@pytest.mark.parametrize("clock_step", [0.0, 13.0, -13.0])
def test_server_ttls_follow_expiry_even_past_thirty_days(
        shared: ServerGroup, monkeypatch: pytest.MonkeyPatch, clock_step: float) -> None:
    server = shared[0]
    # The wall clock stepped by clock_step since memcached started (as NTP does).
    wall_clock = time.time
    monkeypatch.setattr(time, "time", lambda: wall_clock() + clock_step)
    prefix = f"mc-ttl-{time.monotonic_ns()}:"
    store = MemcachedStore(build_client([server], timeout=5, key_prefix=prefix))
    cases = {"hour": 3600, "thirty-days": 30 * DAY, "forty-days": 40 * DAY, "a-year": 365 * DAY}
    records = {name: record({"v": b"1"}, lifetime=lifetime) for name, lifetime in cases.items()}
    for name, stored in records.items():
        store.create(name, stored)
    for name, lifetime in cases.items():
        ttl = server_ttl(server, prefix + name)
        # Up to 30 days memcached takes a duration; past that, a unix time it reads by
        # its own clock.
        expected = (lifetime if lifetime <= MAX_RELATIVE_TTL
                    else records[name].expires_at - server_clock(server))
        # memcached's clock ticks in whole seconds and absolute times are rounded up.
        assert ttl is not None and expected - 5 <= ttl <= expected + 5, (name, ttl, expected)
        assert store.load(name, time.time()) is not None
    # A touch moves the server TTL too.
    store.touch("hour", time.time(), time.time() + 2 * 3600)
    ttl = server_ttl(server, prefix + "hour")
    assert ttl is not None and 2 * 3600 - 5 <= ttl <= 2 * 3600 + 5
    # An already expired record is dropped by the server, not just hidden by load().
    store.create("gone", record({"v": b"1"}, lifetime=-10))
    assert server_ttl(server, prefix + "gone") is None
    store.close()


def test_load_hides_records_past_their_expiry(store: MemcachedStore) -> None:
    key = "session:" + "c" * 64
    store.create(key, record({"a": b"1"}, lifetime=60))
    assert store.load(key, time.time()) is not None
    assert store.load(key, time.time() + 61) is None


def damaged_blobs() -> dict[str, bytes]:
    now = time.time()
    fields = {"v": {}, "c": now, "a": now, "e": now + 600, "p": True}
    return {
        "not a record": b"\xff not a record",
        "empty": b"",
        "JSON format": RecordCodec(ValueCodec("json")).dumps(record({"a": b"1"})),
        "wrong field type": msgspec.msgpack.encode({**fields, "c": "yesterday"}),
        "metadata missing": msgspec.msgpack.encode({"v": {}, "p": True}),
        "a list": msgspec.msgpack.encode([1, 2, 3]),
    }


@pytest.mark.parametrize("damage", list(damaged_blobs()))
def test_a_damaged_record_raises_undecodable_record(store: MemcachedStore,
                                                    damage: str) -> None:
    key = "session:" + "d" * 64
    store.client.set(key, damaged_blobs()[damage], noreply=False)
    with pytest.raises(UndecodableRecord) as caught:
        store.load(key, time.time())
    assert caught.value.store == "memcached"
    # Writes treat it as gone (its load removes it): never a 500, never revived.
    assert store.update(key, delta({"a": b"1"})) is False
    assert store.touch(key, time.time(), time.time() + 600) is False
    store.delete(key)
    assert store.load(key, time.time()) is None


def test_a_damaged_session_of_a_user_is_left_out_of_the_list(store: MemcachedStore) -> None:
    kept, damaged = "session:" + "1" * 64, "session:" + "2" * 64
    store.create(kept, record({"a": b"1"}, user_id="42"))
    store.create(damaged, record({"a": b"1"}, user_id="42"))
    store.client.set(damaged, b"\xff garbage", noreply=False)
    assert store.keys_for_user("42", time.time()) == [kept]


# -- add and touch ---------------------------------------------------------------------
def test_add_claims_a_key_once(store: MemcachedStore) -> None:
    key = "session:" + "3" * 64
    assert store.add(key, record({"n": b"1"}, user_id="42")) is True
    assert store.add(key, record({"n": b"2"}, user_id="7")) is False
    loaded = store.load(key, time.time())
    assert loaded is not None and loaded.values == {"n": b"1"} and loaded.user_id == "42"
    assert store.keys_for_user("42", time.time()) == [key]


def test_add_replaces_an_expired_or_damaged_record(store: MemcachedStore) -> None:
    keeping = MemcachedStore(store.client, keep_expired=300)
    expired, damaged = "session:" + "4" * 64, "session:" + "5" * 64
    keeping.create(expired, record({"n": b"1"}, lifetime=-1))  # kept 300 s past expiry
    assert store.client.get(expired) is not None
    assert keeping.add(expired, record({"n": b"2"})) is True
    assert keeping.load(expired, time.time()).values == {"n": b"2"}  # type: ignore[union-attr]

    store.client.set(damaged, b"\xff garbage", noreply=False)
    assert store.add(damaged, record({"n": b"3"})) is True
    assert store.load(damaged, time.time()).values == {"n": b"3"}  # type: ignore[union-attr]


def test_concurrent_adds_of_one_key_let_exactly_one_win(store: MemcachedStore) -> None:
    claimants = 16
    for attempt in range(10):  # a race lost once in a while must still show up
        key = f"session:{attempt:064x}"
        start = threading.Barrier(claimants)

        def claim(n: int, key: str = key, start: threading.Barrier = start) -> bool:
            start.wait(timeout=30)
            return store.add(key, record({"n": CODEC.encode(n)}))

        with ThreadPoolExecutor(claimants) as pool:
            won = [n for n, ok in zip(range(claimants), pool.map(claim, range(claimants)),
                                      strict=True) if ok]
        assert len(won) == 1, f"{len(won)} claims of one key succeeded"
        stored = store.load(key, time.time())
        assert stored is not None and stored.values == {"n": CODEC.encode(won[0])}


def test_touch_says_whether_the_session_was_there(store: MemcachedStore) -> None:
    missing, key, expired = ("session:" + c * 64 for c in "678")
    now = time.time()
    assert store.touch(missing, now, now + 600) is False
    assert store.client.get(missing) is None  # nothing created

    store.create(key, record({"a": b"1"}, lifetime=60))
    assert store.touch(key, now, now + 900) is True
    assert store.load(key, now + 600) is not None

    keeping = MemcachedStore(store.client, keep_expired=300)
    keeping.create(expired, record({"a": b"1"}, lifetime=-1))
    assert keeping.touch(expired, now, now + 600) is False  # kept, but never revived
    assert keeping.load(expired, now) is None


def test_sessions_of_a_user_are_listed_and_follow_changes(store: MemcachedStore) -> None:
    now = time.time()
    phone, laptop, other = ("session:" + c * 64 for c in "efg")
    store.create(phone, record({"a": b"1"}, user_id="42"))
    store.create(laptop, record({"a": b"1"}, user_id="42"))
    store.create(other, record({"a": b"1"}))
    assert sorted(store.keys_for_user("42", now)) == sorted([phone, laptop])
    assert store.keys_for_user("7", now) == []

    assert store.update(other, delta(user_id="42", user_id_changed=True))
    assert store.update(laptop, delta(user_id="7", user_id_changed=True))
    store.delete(phone)
    assert store.keys_for_user("42", now) == [other]
    assert store.keys_for_user("7", now) == [laptop]
    assert store.keys_for_user("42", now + 7200) == []  # expired by then


def test_a_long_lived_user_index_stays_small(store: MemcachedStore) -> None:
    keys = [f"session:{n:064x}" for n in range(40)]
    for key in keys:
        store.create(key, record({"a": b"1"}, user_id="busy"))
        store.delete(key)  # logged out again at once
    index_key = "session:user:" + hashlib.sha256(b"busy").hexdigest()
    index = msgspec.msgpack.decode(store.client.get(index_key))["k"]
    assert 1 <= len(index) <= INDEX_PRUNE_AT  # pruned as it grew, not 40 entries
    assert store.keys_for_user("busy", time.time()) == []


def index_key(store: MemcachedStore, user_id: str) -> str:
    return f"{store.key_prefix}user:" + hashlib.sha256(user_id.encode()).hexdigest()


def index_of(store: MemcachedStore, user_id: str) -> list[str]:
    blob = store.client.get(index_key(store, user_id))
    return [] if blob is None else list(msgspec.msgpack.decode(blob)["k"])


def test_a_login_past_the_cap_revokes_the_oldest_session(store: MemcachedStore) -> None:
    capped = MemcachedStore(store.client, max_sessions_per_user=3)
    laptop, phone, tablet, desk, tv = ("session:" + c * 64 for c in "abcde")
    for key in (laptop, phone, tablet):
        capped.create(key, record({"a": b"1"}, user_id="42"))
    capped.delete(phone)  # signed out: its index entry is stale until checked
    capped.create(desk, record({"a": b"1"}, user_id="42"))
    # Three live sessions: the stale entry made room, nobody was signed out.
    assert index_of(capped, "42") == [laptop, tablet, desk]
    assert capped.load(laptop, time.time()) is not None

    capped.create(tv, record({"a": b"1"}, user_id="42"))  # a fourth live one
    assert capped.load(laptop, time.time()) is None  # the oldest was revoked
    assert index_of(capped, "42") == [tablet, desk, tv]
    assert sorted(capped.keys_for_user("42", time.time())) == sorted([tablet, desk, tv])


@pytest.mark.parametrize("cap", [0, -1, "5", 2.5, True])
def test_a_bad_cap_is_refused(store: MemcachedStore, cap: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_sessions_per_user"):
        MemcachedStore(store.client, max_sessions_per_user=cap)


def test_a_user_with_fourteen_thousand_sessions_logs_in_cheaply(
        make_app: Callable[..., Flask], dedicated: ServerGroup) -> None:
    """A script that logs in without keeping its cookie piles up live sessions; their
    index, kept by an earlier version as a bare list, is at memcached's 1 MB item limit."""
    server = dedicated[0]  # memcached's default 1 MB item limit
    app = session_app(make_app, {"SESSION_TYPE": "memcached",
                                 "SESSION_MEMCACHED": address(server)})
    store = app.extensions["sessionkeeper"].backend.store
    first = app.test_client()
    first.post("/login/laowang")
    first.post("/bind/42")
    first_key = "session:" + storage_key(first.get_cookie("session").value)  # type: ignore[union-attr]
    piled = [f"session:{n:064x}" for n in range(14_100)]
    blob = store.records.dumps(record({"user": CODEC.encode("bot")}, user_id="42"))
    raw = Client(server, connect_timeout=5, timeout=30)
    for start in range(0, len(piled), 1000):
        assert not raw.set_many({k: blob for k in piled[start:start + 1000]}, expire=3600,
                                noreply=False)
    assert raw.set(index_key(store, "42"), msgspec.msgpack.encode([first_key, *piled]),
                   noreply=False)
    raw.close()

    latest = app.test_client()
    assert latest.post("/bind/42").status_code == 200  # checks the old index once
    statuses: list[int] = []

    def log_in_many() -> None:
        for _ in range(100):
            browser = app.test_client()
            statuses.append(browser.post("/bind/42").status_code)

    work = ops_during(server, log_in_many)
    assert statuses == [200] * 100
    assert work["cmd_get"] <= 5 * 100  # a few reads a login, not one per session
    # The oldest sessions were revoked to fit the cap; the newest stay signed in.
    assert first.get("/read").text == "please log in"
    assert store.load(piled[0], time.time()) is None
    assert store.load(piled[-1], time.time()) is not None
    assert len(index_of(store, "42")) == store.max_sessions_per_user == MAX_SESSIONS_PER_USER


@pytest.mark.parametrize("prefix", ["my app:", "sess\tion:", "séance:", "p" * 300])
def test_any_key_prefix_gives_valid_memcached_keys(make_app: Callable[..., Flask],
                                                   shared: ServerGroup, prefix: str) -> None:
    app = session_app(make_app, {"SESSION_TYPE": "memcached",
                                 "SESSION_MEMCACHED": [address(s) for s in shared],
                                 "SESSION_MEMCACHED_TIMEOUT": 5, "SESSION_KEY_PREFIX": prefix})
    login_read_logout(app)


@pytest.mark.parametrize("key", ["a b", "a\x01b", "ключ", "k" * 251, "", "x\r\nget y"])
def test_keys_memcached_would_refuse_become_fixed_length_hashes(key: str) -> None:
    safe = memcached_key(key)
    assert len(safe) <= MAX_KEY_LENGTH and safe.isascii() and safe.isprintable()
    assert " " not in safe and safe != key


def test_plain_keys_are_kept_readable() -> None:
    key = "session:" + storage_key("abc")
    assert memcached_key(key) == key


# -- the item size limit ---------------------------------------------------------------
def test_a_record_over_the_item_limit_raises_a_clear_error(dedicated: ServerGroup) -> None:
    store = MemcachedStore(build_client(list(dedicated), timeout=5))
    big = {"blob": ValueCodec().encode("x" * (2 * 1024 * 1024))}
    with pytest.raises(MemcachedItemTooLarge, match="-I") as caught:
        store.create("session:big", record(big))
    assert isinstance(caught.value, SessionKeeperError)
    store.create("session:small", record({"a": b"1"}))  # the server is still fine
    assert store.load("session:small", time.time()) is not None
    store.close()


def test_a_server_started_with_a_larger_limit_keeps_large_sessions(
        store: MemcachedStore) -> None:
    key = "session:" + "h" * 64
    big = ValueCodec().encode("0123456789abcdef" * (3 * 65536))  # 3 MB, encoded as the core does
    store.create(key, record({"blob": big}))
    assert store.update(key, delta({"more": big}))
    loaded = store.load(key, time.time())
    assert loaded is not None and loaded.values == {"blob": big, "more": big}


# -- outages ---------------------------------------------------------------------------
Answer = tuple[int, str]


class Traffic:
    """A browser tab requesting ``paths`` in a loop while the test breaks servers.

    Answers are counted per path as (status, text); an exception escaping the app (which
    TESTING propagates) counts as a 500.
    """

    def __init__(self, app: Flask, cookie: str, paths: tuple[str, ...] = ("/ping", "/read"),
                 ) -> None:
        self.client = app.test_client()
        self.client.set_cookie("session", cookie)
        self.paths = paths
        self._seen = {path: Counter[Answer]() for path in paths}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for path in self.paths:
                try:
                    response = self.client.get(path)
                    answer = (response.status_code, response.text)
                except Exception as exc:
                    answer = (500, repr(exc))
                with self._lock:
                    self._seen[path][answer] += 1
            time.sleep(0.005)

    def take(self) -> dict[str, Counter[Answer]]:
        """The answers counted since the last take."""
        with self._lock:
            seen, self._seen = self._seen, {path: Counter() for path in self.paths}
        return seen

    def wait_for(self, path: str, status: int, text: str | None = None) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with self._lock:
                if any(s == status and text in (None, t) for s, t in self._seen[path]):
                    return
            time.sleep(0.01)
        raise AssertionError(f"no {status} {text or ''} on {path} within 30 s: {self._seen}")

    def __enter__(self) -> Traffic:
        self._thread.start()
        self.wait_for(self.paths[-1], 200)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def statuses(answers: Counter[Answer]) -> set[int]:
    return {status for status, _ in answers}


def test_an_outage_under_traffic_answers_503_and_the_app_recovers(
        make_app: Callable[..., Flask], dedicated: ServerGroup) -> None:
    server = dedicated[0]
    app = session_app(make_app, {"SESSION_TYPE": "memcached",
                                 "SESSION_MEMCACHED": address(server)})
    browser = app.test_client()
    cookie = cookie_of(browser.post("/login/laowang"))
    with Traffic(app, cookie) as traffic:
        before = traffic.take()
        dedicated.stop()  # mid-traffic
        traffic.wait_for("/read", 503)
        assert browser.get("/read").status_code == 503
        response = browser.post("/set/theme")
        assert response.status_code == 503
        assert "Set-Cookie" not in response.headers  # no new session handed out
        assert browser.get("/ping").text == "pong"
        during = traffic.take()

        back = start_or_skip(start_memcached, 1, port=server[1])
        try:
            # memcached keeps nothing across a restart: the session is gone, not broken,
            # and the same app serves again.
            traffic.wait_for("/read", 200, "please log in")
            browser.post("/login/laowang")
            assert browser.get("/read").text == "welcome laowang"
            after = traffic.take()
        finally:
            back.stop()

    assert set(before["/read"]) == {(200, "welcome laowang")}
    for phase in (before, during, after):
        assert set(phase["/ping"]) == {(200, "pong")}  # views without the session: always
    # Once the server is gone: 503 (never a 500), and never a silent logout.
    assert statuses(during["/read"]) <= {200, 503}
    assert (200, "please log in") not in during["/read"]
    assert statuses(after["/read"]) <= {200, 503}
    assert (200, "welcome laowang") not in after["/read"]  # the restart emptied it


def test_a_dead_server_under_traffic_leaves_the_other_servers_sessions_intact(
        make_app: Callable[..., Flask], dedicated: ServerGroup) -> None:
    doomed, survivor = dedicated[0], start_or_skip(start_memcached, 1)
    try:
        app = session_app(make_app, {"SESSION_TYPE": "memcached",
                                     "SESSION_MEMCACHED": [address(doomed),
                                                           address(survivor[0])]})
        client = app.extensions["sessionkeeper"].backend.store.client
        assert isinstance(client, HashClient)
        client.dead_timeout = 1  # pymemcache's ring takes a dead server back after this
        browsers = []
        for n in range(16):
            browser = app.test_client()
            sid = cookie_of(browser.post(f"/login/user{n}"))
            browsers.append((n, browser, sid, "session:" + storage_key(sid)))
        kept = set(Client(survivor[0], connect_timeout=5, timeout=5).get_many(
            [key for *_, key in browsers]))
        assert 0 < len(kept) < len(browsers), "sessions landed on both servers"
        safe = next(b for b in browsers if b[3] in kept)
        lost = next(b for b in browsers if b[3] not in kept)

        with Traffic(app, safe[2]) as on_survivor, \
                Traffic(app, lost[2], paths=("/read",)) as on_doomed:
            dedicated.stop()  # mid-traffic
            on_doomed.wait_for("/read", 503)
            # After three failures pymemcache drops the server from its ring (see
            # docs/stores/memcached.md): its sessions then read as logged out.
            on_doomed.wait_for("/read", 200, "please log in")
            for n, browser, _, key in browsers:
                if key in kept:
                    response = browser.get("/read")
                    assert (response.status_code, response.text) == (200, f"welcome user{n}")
            outage = on_survivor.take(), on_doomed.take()

            back = start_or_skip(start_memcached, 1, port=doomed[1])
            try:
                time.sleep(1.2)  # dead_timeout: the ring takes the server back
                fresh = []
                for n in range(16):
                    browser = app.test_client()
                    sid = cookie_of(browser.post(f"/login/new{n}"))
                    fresh.append((n, browser, "session:" + storage_key(sid)))
                on_back = Client(back[0], connect_timeout=5, timeout=5).get_many(
                    [key for *_, key in fresh])
                assert on_back, "new sessions land on the restarted server again"
                for n, browser, _ in fresh:
                    assert browser.get("/read").text == f"welcome new{n}"
            finally:
                back.stop()
            after = on_survivor.take()

        survivor_side, doomed_side = outage
        assert set(survivor_side["/ping"]) == set(after["/ping"]) == {(200, "pong")}
        # The surviving server's session answered throughout, unchanged.
        assert set(survivor_side["/read"]) == set(after["/read"]) == {
            (200, f"welcome user{safe[0]}")}
        assert statuses(doomed_side["/read"]) <= {200, 503}  # never a 500
        assert (200, f"welcome user{safe[0]}") not in doomed_side["/read"]
    finally:
        survivor.stop()


def test_a_quick_server_restart_costs_no_failed_request(make_app: Callable[..., Flask],
                                                        dedicated: ServerGroup) -> None:
    server = dedicated[0]
    app = session_app(make_app, {"SESSION_TYPE": "memcached",
                                 "SESSION_MEMCACHED": address(server)})
    browser = app.test_client()
    browser.post("/login/laowang")
    assert browser.get("/read").text == "welcome laowang"
    dedicated.stop()  # restarted while no request needed it: pooled connections are stale
    back = start_or_skip(start_memcached, 1, port=server[1])
    try:
        response = browser.get("/read")
        assert (response.status_code, response.text) == (200, "please log in")
    finally:
        back.stop()


@pytest.mark.parametrize("setting", ["addresses", "a HashClient with pymemcache defaults"])
def test_a_dead_server_fails_its_own_sessions_only(make_app: Callable[..., Flask],
                                                   dedicated: ServerGroup, setting: str) -> None:
    doomed, survivor = dedicated[0], start_or_skip(start_memcached, 1)
    servers = [doomed, survivor[0]]
    try:
        app = session_app(make_app, {
            "SESSION_TYPE": "memcached",
            "SESSION_MEMCACHED": ([address(s) for s in servers] if setting == "addresses" else
                                  HashClient(servers, use_pooling=True, no_delay=True,
                                             connect_timeout=5, timeout=5)),
        })
        browsers = []
        for n in range(16):
            browser = app.test_client()
            sid = cookie_of(browser.post(f"/login/user{n}"))
            browsers.append((n, browser, "session:" + storage_key(sid)))
        kept = set(Client(survivor[0], connect_timeout=5, timeout=5).get_many(
            [key for _, _, key in browsers]))
        assert 0 < len(kept) < len(browsers), "sessions landed on both servers"

        dedicated.stop()
        for n, browser, key in browsers:
            if key in kept:
                response = browser.get("/read")
                assert (response.status_code, response.text) == (200, f"welcome user{n}")
        n, browser, key = next(b for b in browsers if b[2] not in kept)
        for _ in range(2):  # the second finds the server marked as failing by the first
            response = browser.get("/read")
            # Unreachable is a 503, not a silent logout: no new session is issued.
            assert response.status_code == 503
            assert "Set-Cookie" not in response.headers
    finally:
        survivor.stop()


def test_store_calls_wrap_connection_errors() -> None:
    store = MemcachedStore(build_client([("127.0.0.1", unused_port())], timeout=1))
    for call in (lambda: store.load("k", time.time()), store.check,
                 lambda: store.create("k", record()), lambda: store.delete("k")):
        with pytest.raises(StoreUnavailable) as caught:
            call()
        assert caught.value.store == "memcached"
