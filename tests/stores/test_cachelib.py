"""The cachelib store over real caches: FileSystemCache, RedisCache (the machine's Redis
and throwaway servers), MemcachedCache (a throwaway memcached) and SimpleCache.

Covers what the shared suites cannot: SESSION_CACHELIB and its default, the bytes-only
values (nothing but a bytes object is ever pickled), entries that do not decode, the
per-record lock (also across gunicorn worker processes), outages, the per-user index's
lifetime and cap, and the FileSystemCache specifics (no threshold eviction by default,
a sweep of expired files that never unpickles, lock files the cache never counts).
"""

from __future__ import annotations

import logging
import os
import pickle
import pickletools
import re
import secrets
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from cachelib import FileSystemCache, MemcachedCache, NullCache, RedisCache, SimpleCache
from flask import Flask, session
from providers._shared import random_prefix
from providers.redis import delete_prefixed, machine_client
from pymemcache.client.base import PooledClient
from redis.backoff import NoBackoff
from redis.retry import Retry
from servers import ServerGroup, start_memcached, start_or_skip, start_redis
from test_concurrency import LINGER, REQUEST_TIMEOUT, REQUESTS, gunicorn

from sessionkeeper.breaker import unguarded
from sessionkeeper.errors import ConfigurationError, StoreUnavailable, UndecodableRecord
from sessionkeeper.ids import storage_key
from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.base import SessionRecord, SessionUpdate
from sessionkeeper.stores.cachelib import CachelibStore, cache_key
from sessionkeeper.stores.cachelib_lock import LOCK_SUFFIX, SessionBusy

CODEC = ValueCodec()
LIFETIME = 600.0
MakeApp = Callable[..., Flask]


# -- helpers ---------------------------------------------------------------------------
def new_key() -> str:
    return "session:" + storage_key(secrets.token_urlsafe(32))


def record(values: dict[str, Any] | None = None, *, user_id: str | None = None,
           lifetime: float = LIFETIME) -> SessionRecord:
    now = time.time()
    return SessionRecord(values={k: CODEC.encode(v) for k, v in (values or {}).items()},
                         created_at=now, accessed_at=now, expires_at=now + lifetime,
                         permanent=True, user_id=user_id)


def delta(**values: Any) -> SessionUpdate:
    now = time.time()
    return SessionUpdate(set_values={k: CODEC.encode(v) for k, v in values.items()},
                         deleted_keys=set(), replace=False, accessed_at=now,
                         expires_at=now + LIFETIME, permanent=True)


def values_of(store: CachelibStore, key: str) -> dict[str, Any]:
    loaded = store.load(key, time.time())
    assert loaded is not None, "the record is missing"
    return {k: CODEC.decode(v) for k, v in loaded.values.items()}


def quick_client(port: int) -> redis.Redis:
    """A client that fails at once on a refused connection (redis-py's default retries
    with backoff take seconds)."""
    return redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1,
                       retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)))


@pytest.fixture
def machine_redis() -> Iterator[tuple[redis.Redis, str]]:
    """The machine's Redis and a key prefix of this test's own (cleaned up after)."""
    client = machine_client()
    prefix = random_prefix("cachelib")
    yield client, prefix
    delete_prefixed(client, prefix)
    client.close()


@pytest.fixture
def redis_store(machine_redis: tuple[redis.Redis, str]) -> CachelibStore:
    client, prefix = machine_redis
    return CachelibStore(RedisCache(host=client, key_prefix=prefix), codec=CODEC)


@pytest.fixture
def file_store(tmp_path: Path) -> CachelibStore:
    return CachelibStore(FileSystemCache(str(tmp_path / "cache"), threshold=0), codec=CODEC)


@pytest.fixture(scope="module")
def memcached() -> Iterator[ServerGroup]:
    group = start_or_skip(start_memcached, 1)
    yield group
    group.stop()


def memcached_cache(server: tuple[str, int], **options: Any) -> MemcachedCache:
    options.setdefault("default_noreply", False)
    client = PooledClient(server, connect_timeout=2, timeout=2, **options)
    return MemcachedCache(client, key_prefix=random_prefix("cachelib"))


def app_with_views(make_app: MakeApp, **config: Any) -> Flask:
    app = make_app(SESSION_TYPE="cachelib", **config)

    @app.post("/set/<key>/<value>")
    def set_value(key: str, value: str) -> str:
        session[key] = value
        return "set"

    @app.get("/get/<key>")
    def get_value(key: str) -> str:
        return str(session.get(key, "-"))

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    return app


# -- SESSION_CACHELIB --------------------------------------------------------------------
def test_unset_session_cachelib_keeps_sessions_in_flask_session_without_eviction(
    make_app: MakeApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Flask-Session's default is FileSystemCache("flask_session", threshold=500): the
    # 501st session evicts a live one. Here the same directory keeps them all.
    monkeypatch.chdir(tmp_path)
    app = app_with_views(make_app)
    store = unguarded(app.extensions["sessionkeeper"].backend.store)
    assert isinstance(store, CachelibStore) and store.folder is not None
    assert isinstance(store.cache, FileSystemCache)
    assert Path(store.folder.path) == tmp_path / "flask_session"

    first = app.test_client()
    assert first.post("/set/user/alice").status_code == 200
    for i in range(520):
        store.create(new_key(), record({"n": i}))

    assert first.get("/get/user").text == "alice"
    files = [p for p in (tmp_path / "flask_session").iterdir()
             if not p.name.endswith(".__wz_cache")]
    assert len(files) == 521


@pytest.mark.parametrize("value", ["redis://127.0.0.1:6379", {"host": "x"}, 42])
def test_session_cachelib_must_be_a_cache(make_app: MakeApp, value: object) -> None:
    with pytest.raises(ValueError, match="SESSION_CACHELIB must be a cachelib cache"):
        make_app(SESSION_TYPE="cachelib", SESSION_CACHELIB=value)


def test_a_cache_that_keeps_nothing_is_refused_at_start_up(make_app: MakeApp) -> None:
    with pytest.raises(ConfigurationError, match="keeps nothing"):
        make_app(SESSION_TYPE="cachelib", SESSION_CACHELIB=NullCache())


def test_a_memcached_client_that_does_not_wait_for_replies_is_refused(
    make_app: MakeApp, memcached: ServerGroup,
) -> None:
    # pymemcache's default: add() answers True before the server says the key exists,
    # so the lock would let every writer in.
    cache = memcached_cache(memcached[0], default_noreply=True)
    with pytest.raises(ConfigurationError, match="default_noreply"):
        make_app(SESSION_TYPE="cachelib", SESSION_CACHELIB=cache)


def test_an_unreachable_cache_stops_start_up(make_app: MakeApp) -> None:
    server = start_or_skip(start_redis)
    server.stop()
    cache = RedisCache(host=quick_client(server.port))
    with pytest.raises(ConfigurationError, match="cachelib is unavailable"):
        make_app(SESSION_TYPE="cachelib", SESSION_CACHELIB=cache)


def test_caches_that_cannot_keep_sessions_safely_are_named_at_start_up(
    make_app: MakeApp, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="sessionkeeper"):
        make_app(SESSION_TYPE="cachelib",
                 SESSION_CACHELIB=FileSystemCache(str(tmp_path / "c"), threshold=500))
        make_app(SESSION_TYPE="cachelib", SESSION_CACHELIB=SimpleCache())
        make_app(SESSION_TYPE="cachelib", SESSION_CACHELIB=RedisCache(
            host=redis.Redis(port=6379, socket_timeout=None)))
    text = caplog.text
    assert "threshold=500) deletes live sessions" in text
    assert "SimpleCache keeps sessions in this process only" in text
    assert "no socket_timeout" in text


@pytest.mark.parametrize("kind", ["simple", "memcached"])
def test_any_cachelib_cache_keeps_sessions(make_app: MakeApp, kind: str,
                                           memcached: ServerGroup) -> None:
    cache = SimpleCache() if kind == "simple" else memcached_cache(memcached[0])
    app = app_with_views(make_app, SESSION_CACHELIB=cache)
    browser = app.test_client()

    assert browser.post("/set/city/paris").status_code == 200
    assert browser.post("/set/lang/fr").status_code == 200

    assert browser.get("/get/city").text == "paris"
    assert browser.get("/get/lang").text == "fr"


# -- what is stored ----------------------------------------------------------------------
def test_redis_holds_a_pickled_bytes_object_and_nothing_else(
    redis_store: CachelibStore, machine_redis: tuple[redis.Redis, str],
) -> None:
    client, prefix = machine_redis
    key = new_key()
    redis_store.create(key, record({"cart": [1, 2], "user": "alice"}, user_id="u1"))
    assert redis_store.update(key, delta(city="paris"))

    raw_keys = [k.decode() for k in client.scan_iter(match=f"{prefix}*")]
    assert sorted(raw_keys) == sorted([prefix + key, prefix + redis_store._index_key("u1")])
    for raw_key in raw_keys:
        raw = client.get(raw_key)
        assert raw is not None and raw.startswith(b"!")  # cachelib's pickle marker
        opcodes = {op.name for op, _arg, _pos in pickletools.genops(raw[1:])}
        # A pickle that can only build a bytes object: no imports, no calls.
        assert not opcodes & {"GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "INST", "OBJ",
                              "NEWOBJ", "NEWOBJ_EX"}, opcodes
        assert type(pickle.loads(raw[1:])) is bytes
    assert 0 < client.ttl(prefix + key) <= LIFETIME


def test_the_cache_timeout_follows_expiry_and_keep_expired(
    machine_redis: tuple[redis.Redis, str],
) -> None:
    client, prefix = machine_redis
    store = CachelibStore(RedisCache(host=client, key_prefix=prefix), keep_expired=100)
    key = new_key()
    store.create(key, record(lifetime=50))

    assert 145 <= client.ttl(prefix + key) <= 151
    now = time.time()
    assert store.touch(key, now, now + 1000)
    assert 1095 <= client.ttl(prefix + key) <= 1101


def test_odd_key_prefixes_still_give_valid_memcached_keys(memcached: ServerGroup) -> None:
    store = CachelibStore(memcached_cache(memcached[0]), codec=CODEC)
    for prefix in ("my app: ", "sessions/é/", "x" * 300):
        key = prefix + storage_key(secrets.token_urlsafe(32))
        store.create(key, record({"prefix": prefix}))
        assert store.update(key, delta(more=1))
        assert values_of(store, key) == {"prefix": prefix, "more": 1}
    assert cache_key("a b") != "a b" and cache_key("session:abc") == "session:abc"


# -- entries that do not decode ---------------------------------------------------------
FLASK_SESSION_RECORD = b"!" + pickle.dumps({"_permanent": True, "user": "alice"})
GARBAGE = {
    # a value another program wrote without cachelib: cachelib hands back the bytes
    "raw bytes": b"not a record",
    # a Flask-Session 0.8 cachelib record: a pickled dict
    "pickled dict": FLASK_SESSION_RECORD,
    # an integer, which cachelib stores as plain digits
    "integer": b"12345",
    # a pickle naming a module that does not exist: unpickling raises ImportError
    "pickle of a missing class": b"!\x80\x04cno_such_module_here\nThing\n)\x81.",
}


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
def test_an_entry_that_is_no_record_is_undecodable(
    redis_store: CachelibStore, machine_redis: tuple[redis.Redis, str], garbage: bytes,
) -> None:
    client, prefix = machine_redis
    key = new_key()
    client.set(prefix + key, garbage)

    with pytest.raises(UndecodableRecord):
        redis_store.load(key, time.time())
    # Neither changed nor revived by a delta or a refresh; a claim replaces it.
    assert redis_store.update(key, delta(a=1)) is False
    assert redis_store.touch(key, time.time(), time.time() + 60) is False
    assert client.get(prefix + key) == garbage
    assert redis_store.add(key, record({"fresh": True}))
    assert values_of(redis_store, key) == {"fresh": True}


def test_a_garbage_entry_is_a_fresh_session_and_is_removed(
    make_app: MakeApp, machine_redis: tuple[redis.Redis, str],
) -> None:
    client, prefix = machine_redis
    app = app_with_views(make_app, SESSION_CACHELIB=RedisCache(host=client, key_prefix=prefix))
    browser = app.test_client()
    assert browser.post("/set/user/alice").status_code == 200
    (stored,) = [k for k in client.scan_iter(match=f"{prefix}*")]
    client.set(stored, FLASK_SESSION_RECORD)

    assert browser.get("/get/user").text == "-"
    assert client.get(stored) is None


# -- locks -------------------------------------------------------------------------------
def test_concurrent_claims_of_one_key_on_a_filesystem_cache_have_one_winner(
    file_store: CachelibStore,
) -> None:
    # FileSystemCache.add checks, then writes: two threads can both "add". The store
    # claims under its flock instead.
    for _ in range(5):
        key = new_key()
        start = threading.Barrier(16, timeout=30)

        def claim(i: int, key: str = key, start: threading.Barrier = start) -> bool:
            start.wait()
            return file_store.add(key, record({"winner": i}))

        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(claim, range(16)))
        assert results.count(True) == 1
        assert values_of(file_store, key) == {"winner": results.index(True)}


@pytest.mark.parametrize("kind", ["simple", "memcached"])
def test_24_concurrent_writers_lose_nothing_on_other_caches(kind: str,
                                                            memcached: ServerGroup) -> None:
    cache = SimpleCache() if kind == "simple" else memcached_cache(memcached[0])
    store = CachelibStore(cache, codec=CODEC)
    key = new_key()
    store.create(key, record({"base": 0}))
    start = threading.Barrier(24, timeout=30)

    def save(i: int) -> bool:
        start.wait()
        return store.update(key, delta(**{f"k{i}": i}))

    with ThreadPoolExecutor(max_workers=24) as pool:
        assert all(pool.map(save, range(24)))
    assert values_of(store, key) == {"base": 0, **{f"k{i}": i for i in range(24)}}


def test_a_lock_held_by_a_stuck_request_blocks_only_its_session_and_only_a_while(
    machine_redis: tuple[redis.Redis, str],
) -> None:
    client, prefix = machine_redis
    store = CachelibStore(RedisCache(host=client, key_prefix=prefix), lock_wait=0.5)
    stuck, other = new_key(), new_key()
    store.create(stuck, record({"a": 1}))
    store.create(other, record({"b": 1}))
    with store.locks.hold(stuck):
        began = time.monotonic()
        with pytest.raises(SessionBusy):
            store.update(stuck, delta(a=2))
        assert time.monotonic() - began < 2
        assert store.update(other, delta(b=2))
    assert store.update(stuck, delta(a=3))
    assert values_of(store, stuck) == {"a": 3}
    assert client.get(prefix + stuck + LOCK_SUFFIX) is None  # released


def test_a_lock_that_lost_its_timeout_is_removed_by_the_next_writer(
    machine_redis: tuple[redis.Redis, str],
) -> None:
    # RedisCache.add is SETNX, then EXPIRE: a process that dies in between leaves a lock
    # without a timeout. Its value says when it ran out.
    client, prefix = machine_redis
    store = CachelibStore(RedisCache(host=client, key_prefix=prefix))
    key = new_key()
    store.create(key, record({"a": 1}))
    ran_out = os.urandom(8) + struct.pack(">d", time.time() - 60)
    client.set(prefix + key + LOCK_SUFFIX, b"!" + pickle.dumps(ran_out))

    began = time.monotonic()
    assert store.update(key, delta(a=2))
    assert time.monotonic() - began < 3
    assert values_of(store, key) == {"a": 2}


def test_lock_files_are_never_counted_pruned_or_cleared_by_the_cache(tmp_path: Path) -> None:
    cache = FileSystemCache(str(tmp_path / "c"), threshold=50)
    store = CachelibStore(cache, codec=CODEC)
    keys = [new_key() for _ in range(10)]
    for key in keys:
        store.create(key, record({"n": 1}))
        assert store.update(key, delta(n=2))
    locks = list((tmp_path / "c").glob("sessionkeeper-lock-*"))

    assert locks
    assert cache._file_count == 10
    assert cache.clear()
    assert all(lock.exists() for lock in locks)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["filesystem", "redis"])
def test_concurrent_requests_of_one_session_keep_every_key_across_processes(
    kind: str, tmp_path: Path, machine_redis: tuple[redis.Redis, str],
) -> None:
    _client, prefix = machine_redis
    settings = ({"CACHELIB_DIR": str(tmp_path / "cache")} if kind == "filesystem" else
                {"CACHELIB_REDIS_URL": "redis://127.0.0.1:6379/0", "CACHELIB_PREFIX": prefix})
    with gunicorn(settings, tmp_path / "gunicorn.log", app="cachelib_app:app") as url:
        started = requests.post(f"{url}/start", timeout=REQUEST_TIMEOUT)
        assert started.status_code == 200
        token = started.cookies["session"]
        keys = [f"key-{i:02d}" for i in range(REQUESTS)]

        def set_key(key: str) -> requests.Response:
            return requests.post(f"{url}/set/{key}", params={"linger": LINGER},
                                 cookies={"session": token}, timeout=REQUEST_TIMEOUT)

        with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
            responses = list(pool.map(set_key, keys, timeout=REQUEST_TIMEOUT * 2))

        assert [r.status_code for r in responses] == [200] * REQUESTS, \
            [r.text[:200] for r in responses if r.status_code != 200]
        stored = requests.get(f"{url}/keys", cookies={"session": token},
                              timeout=REQUEST_TIMEOUT).json()
        assert stored == sorted(["started", *keys]), sorted(set(keys) - set(stored))
        pids = requests.get(f"{url}/pids", cookies={"session": token},
                            timeout=REQUEST_TIMEOUT).json()
        assert len(set(pids.values())) >= 2, "the writes should come from several processes"


# -- outages -----------------------------------------------------------------------------
def test_a_stopped_redis_is_an_outage_not_a_logout(make_app: MakeApp) -> None:
    server = start_or_skip(start_redis)
    try:
        client = quick_client(server.port)
        store = CachelibStore(RedisCache(host=client), codec=CODEC)
        key = new_key()
        store.create(key, record({"a": 1}))
        app = app_with_views(make_app, SESSION_CACHELIB=RedisCache(host=client),
                             SESSION_BREAKER_SECONDS=0)
        browser = app.test_client()
        assert browser.post("/set/user/alice").status_code == 200
        cookie = browser.get_cookie("session")
        assert cookie is not None

        server.stop()
        for operation in (lambda: store.load(key, time.time()),
                          lambda: store.create(new_key(), record()),
                          lambda: store.update(key, delta(a=2)),
                          lambda: store.touch(key, time.time(), time.time() + 60),
                          lambda: store.add(new_key(), record()),
                          lambda: store.delete(key),
                          lambda: store.keys_for_user("u1", time.time())):
            with pytest.raises(StoreUnavailable):
                operation()
        assert browser.get("/ping").status_code == 200
        assert browser.get("/get/user").status_code == 503
        response = browser.post("/set/user/bob")
        assert response.status_code == 503
        assert "Set-Cookie" not in response.headers

        server.restart()  # empty: the session is gone, and the app works again
        assert browser.get("/get/user").text == "-"
        assert browser.post("/set/user/carol").status_code == 200
        assert browser.get("/get/user").text == "carol"
    finally:
        server.stop()


def test_a_stopped_memcached_is_an_outage() -> None:
    group = start_or_skip(start_memcached, 1)
    store = CachelibStore(memcached_cache(group[0]), codec=CODEC)
    key = new_key()
    store.create(key, record({"a": 1}))
    group.stop()
    with pytest.raises(StoreUnavailable):
        store.load(key, time.time())
    with pytest.raises(StoreUnavailable):
        store.update(key, delta(a=2))


# -- the per-user index ------------------------------------------------------------------
def test_a_refresh_keeps_the_user_index_alive_as_long_as_the_session(
    machine_redis: tuple[redis.Redis, str],
) -> None:
    client, prefix = machine_redis
    store = CachelibStore(RedisCache(host=client, key_prefix=prefix), codec=CODEC)
    key = new_key()
    store.create(key, record(user_id="u1", lifetime=60))
    index = prefix + store._index_key("u1")
    assert 100 <= client.ttl(index) <= 121  # twice the session's remaining life

    now = time.time()
    assert store.touch(key, now, now + 10_000)
    assert client.ttl(index) >= 19_000
    # This process knows the index lives long enough: the next refresh leaves it alone.
    client.expire(index, 5000)
    assert store.touch(key, now, now + 10_100)
    assert client.ttl(index) <= 5000
    # Another process (that knows nothing) extends it again.
    store._index_until.clear()
    assert store.touch(key, now, now + 10_200)
    assert client.ttl(index) >= 19_000
    assert store.keys_for_user("u1", time.time()) == [key]


def test_a_user_past_the_session_cap_loses_the_oldest_session(file_store: CachelibStore) -> None:
    file_store.max_sessions_per_user = 3
    keys = [new_key() for _ in range(5)]
    for key in keys:
        file_store.create(key, record({"k": key}, user_id="u1"))

    assert file_store.keys_for_user("u1", time.time()) == keys[2:]
    assert file_store.load(keys[0], time.time()) is None
    assert file_store.load(keys[1], time.time()) is None


# -- FileSystemCache's expired files ---------------------------------------------------
def creates_file(path: Path) -> bytes:
    """A pickle that, when unpickled, calls open(path, "w")."""
    return b"cbuiltins\nopen\n(V" + str(path).encode() + b"\nVw\ntR."


def test_expired_files_are_swept_without_unpickling_them(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    cache = FileSystemCache(str(folder), threshold=0)
    store = CachelibStore(cache, codec=CODEC)
    live = new_key()
    store.create(live, record({"a": 1}))
    # An expired entry whose pickle would create a file if anything unpickled it.
    canary, marker = tmp_path / "canary", tmp_path / "unpickled"
    pickle.loads(creates_file(canary)).close()
    assert canary.exists()  # the pickle is live
    poisoned = folder / ("f" * 64)
    poisoned.write_bytes(struct.pack("I", int(time.time()) - 10) + creates_file(marker))

    assert store.delete_expired(time.time()) == 1

    assert not poisoned.exists()
    assert not marker.exists()
    assert values_of(store, live) == {"a": 1}


def test_new_sessions_sweep_expired_files_a_batch_at_a_time(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    store = CachelibStore(FileSystemCache(str(folder), threshold=0), codec=CODEC)
    assert store._sweeper is not None
    store._sweeper.interval = 0.0
    store._sweeper._next_pass = 0.0
    store._sweeper.batch = 10
    for _ in range(30):
        store.create(new_key(), record(lifetime=-5))  # expired at once
    time.sleep(2.1)  # cachelib's timeouts are whole seconds

    for _ in range(6):
        store.create(new_key(), record())
    remaining = [p for p in folder.iterdir() if not p.name.endswith(".__wz_cache")]
    assert len(remaining) == 6


# -- the documentation -----------------------------------------------------------------
DOC = Path(__file__).parents[2] / "docs" / "stores" / "cachelib.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)


@pytest.mark.parametrize("number", range(1, len(EXAMPLES) + 1))
def test_documentation_examples_run(number: int, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # their cache directories land in the test's folder
    code = compile(EXAMPLES[number - 1], f"{DOC.name}, example {number}", "exec")
    exec(code, {"__name__": "docs_example"})
