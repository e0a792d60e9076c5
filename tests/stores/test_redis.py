"""The Redis store as users meet it: every accepted SESSION_REDIS, what each request costs
the server, the seed's configuration, large and concurrent sessions, and outages.

Every test talks to a real redis-server: throwaway ones from tests/servers.py (plus a
persistent one defined here), or the machine's Redis under a random key prefix.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import providers.redis_cluster as cluster_provider
import pytest
import redis
import redis.asyncio
from flask import Flask, jsonify, request, session
from providers._shared import random_prefix
from providers.redis import delete_prefixed, machine_client
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

# _Processes and friends are the building blocks of the throwaway servers; the
# persistent server below needs a command line servers.py does not offer.
from servers import (
    HOST,
    RedisSentinel,
    RedisServer,
    _binary,
    _Processes,
    _redis_pings,
    start_or_skip,
    start_redis,
    start_redis_sentinel,
    unused_port,
)

from sessionkeeper.errors import ConfigurationError, UndecodableRecord
from sessionkeeper.flask import Session
from sessionkeeper.forwarding import forward_key
from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.base import SessionRecord, SessionUpdate
from sessionkeeper.stores.redis import RedisClient, RedisStore

MakeApp = Callable[..., Flask]
CODEC = ValueCodec()
T = TypeVar("T")


# -- servers -----------------------------------------------------------------------------
class RedisWithData:
    """A throwaway redis-server that keeps its data across stop() and start().

    Every write goes to an append-only file in the server's directory, so a stopped
    server comes back with the sessions it had; pause() freezes it (SIGSTOP) instead.
    """

    def __init__(self, unix_socket: bool = False) -> None:
        self._binary = _binary("redis-server")
        self._processes = _Processes("redis-persistent")
        self.socket_path = os.path.join(self._processes.dir, "redis.sock") if unix_socket else ""
        try:
            self.port = self._processes.launch(self._argv, _redis_pings)
        except BaseException:
            self._processes.stop()
            raise

    def _argv(self, port: int) -> list[str]:
        args = [self._binary, "--port", str(port), "--bind", HOST, "--dir", self._processes.dir,
                "--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        if self.socket_path:
            args += ["--unixsocket", self.socket_path, "--unixsocketperm", "700"]
        return args

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def stop(self) -> None:
        self._processes.kill(self.port)  # SIGTERM: redis flushes its append-only file

    def start(self) -> None:
        self._processes.launch(self._argv, _redis_pings, port=self.port)

    def pause(self) -> None:
        os.kill(self._processes.procs[self.port].pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self._processes.procs[self.port].pid, signal.SIGCONT)

    def close(self) -> None:
        if self.port in self._processes.procs:
            self.resume()  # a stopped process cannot act on SIGTERM
        self._processes.stop()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = start_or_skip(start_redis)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sentinel() -> Iterator[RedisSentinel]:
    handle = start_or_skip(start_redis_sentinel)
    yield handle
    handle.stop()


@pytest.fixture
def cluster_client() -> Iterator[RedisCluster]:
    client = cluster_provider.cluster_client()
    yield client
    client.close()


def db_url(server: RedisServer, db: int) -> str:
    return f"redis://{server.host}:{server.port}/{db}"


def inspector(server: RedisServer, db: int = 0) -> redis.Redis:
    return redis.Redis(host=server.host, port=server.port, db=db)


# -- a small app -------------------------------------------------------------------------
def with_routes(app: Flask) -> Flask:
    @app.route("/ping")
    def ping() -> str:
        return "pong"  # never touches the session

    @app.route("/read")
    def read() -> str:
        return str(session.get("name", "anonymous"))

    @app.route("/write", methods=["POST"])
    def write() -> str:
        session[request.args.get("key", "name")] = request.args.get("value", "laowang")
        return "ok"

    @app.route("/big", methods=["POST"])
    def big() -> str:
        session["blob"] = request.get_data(as_text=True)
        return "ok"

    @app.route("/keys")
    def keys() -> Any:
        return jsonify({key: session[key] for key in session})

    @app.route("/login", methods=["POST"])
    def login() -> str:
        session.login(request.args.get("user", "42"))
        return "ok"

    @app.route("/logout", methods=["POST"])
    def logout() -> str:
        session.clear()
        return "bye"

    return app


def session_id(app: Flask, client: Any) -> str:
    """The id in the client's session cookie (without its signature, if signed)."""
    value = client.get_cookie(app.config.get("SESSION_COOKIE_NAME", "session")).value
    return value.rsplit(".", 1)[0] if app.config.get("SESSION_USE_SIGNER") else value


def storage_key(prefix: str, sid: str) -> str:
    return prefix + hashlib.sha256(sid.encode()).hexdigest()


def log_in_and_read_back(app: Flask) -> Any:
    client = app.test_client()
    assert client.get("/read").text == "anonymous"
    assert client.post("/write?value=laowang").status_code == 200
    assert client.get("/read").text == "laowang"
    return client


def stored_value(client: RedisClient, key: str, name: str) -> Any:
    data = client.hget(key, f"v:{name}")
    assert data is not None, f"{key} has no field v:{name}"
    return CODEC.decode(data)


# -- SESSION_REDIS: what is accepted -----------------------------------------------------
def test_a_redis_client_object(make_app: MakeApp, redis_server: RedisServer) -> None:
    client = redis.Redis(host=redis_server.host, port=redis_server.port, db=2)
    app = with_routes(make_app(SESSION_TYPE="redis", SESSION_REDIS=client))
    browser = log_in_and_read_back(app)
    key = storage_key("session:", session_id(app, browser))
    assert stored_value(inspector(redis_server, 2), key, "name") == "laowang"


def test_a_url(make_app: MakeApp, redis_server: RedisServer) -> None:
    app = with_routes(make_app(SESSION_TYPE="redis", SESSION_REDIS=db_url(redis_server, 3)))
    browser = log_in_and_read_back(app)
    key = storage_key("session:", session_id(app, browser))
    assert stored_value(inspector(redis_server, 3), key, "name") == "laowang"


def test_a_unix_socket_url(make_app: MakeApp) -> None:
    server = start_or_skip(RedisWithData, unix_socket=True)
    try:
        url = f"unix://{server.socket_path}?db=1"
        app = with_routes(make_app(SESSION_TYPE="redis", SESSION_REDIS=url))
        browser = log_in_and_read_back(app)
        key = storage_key("session:", session_id(app, browser))
        assert stored_value(redis.Redis(unix_socket_path=server.socket_path, db=1), key,
                            "name") == "laowang"
    finally:
        server.close()


def test_unset_means_the_local_redis_database_0(make_app: MakeApp) -> None:
    local = machine_client()  # skips when 127.0.0.1:6379 is not running
    prefix = random_prefix("redis-default")
    try:
        app = with_routes(make_app(SESSION_TYPE="redis", SESSION_KEY_PREFIX=prefix))
        browser = log_in_and_read_back(app)
        key = storage_key(prefix, session_id(app, browser))
        assert stored_value(local, key, "name") == "laowang"
    finally:
        delete_prefixed(local, prefix)
        local.close()


def test_a_cluster_client(make_app: MakeApp, cluster_client: RedisCluster) -> None:
    prefix = random_prefix("redis-cluster")
    try:
        app = with_routes(make_app(SESSION_TYPE="redis", SESSION_REDIS=cluster_client,
                                   SESSION_KEY_PREFIX=prefix))
        keys = []
        for _ in range(12):
            browser = log_in_and_read_back(app)
            keys.append(storage_key(prefix, session_id(app, browser)))
        assert all(stored_value(cluster_client, key, "name") == "laowang" for key in keys)
        # Sessions really spread over the masters: each one is a key of its own.
        assert len({cluster_client.get_node_from_key(key).name for key in keys}) > 1
    finally:
        delete_prefixed(cluster_client, prefix)


def test_a_sentinel_master_client(make_app: MakeApp, sentinel: RedisSentinel) -> None:
    host, port, name = sentinel
    master = Sentinel([(str(host), int(port))], socket_timeout=2).master_for(
        str(name), socket_timeout=2)
    app = with_routes(make_app(SESSION_TYPE="redis", SESSION_REDIS=master))
    browser = log_in_and_read_back(app)
    key = storage_key("session:", session_id(app, browser))
    on_master = redis.Redis(host=str(host), port=sentinel.master_port)
    assert stored_value(on_master, key, "name") == "laowang"


def test_sentinel_settings_build_the_client(make_app: MakeApp, sentinel: RedisSentinel) -> None:
    host, port, name = sentinel
    app = with_routes(make_app(SESSION_TYPE="redis", SESSION_REDIS_SENTINELS=[f"{host}:{port}"],
                               SESSION_REDIS_MASTER_NAME=name))
    browser = log_in_and_read_back(app)
    key = storage_key("session:", session_id(app, browser))
    on_master = redis.Redis(host=str(host), port=sentinel.master_port)
    assert stored_value(on_master, key, "name") == "laowang"


class LookalikeClient:
    """A client of another library: Redis-like methods, but not a redis-py client."""

    def get(self, key: str) -> bytes | None:
        return None

    def set(self, key: str, value: bytes) -> bool:
        return True

    def hgetall(self, key: str) -> dict[bytes, bytes]:
        return {}


ACCEPTED = r"redis\.Redis client .*RedisCluster client, or a URL"


@pytest.mark.parametrize(("value", "message"), [
    ({"host": "127.0.0.1", "port": 6379}, ACCEPTED),
    (6379, ACCEPTED),
    (LookalikeClient(), ACCEPTED + r".*LookalikeClient"),
    ("127.0.0.1:6379", ACCEPTED),
    ("http://127.0.0.1:6379/0", ACCEPTED),
    ("redis://127.0.0.1:notaport/0", "not a valid Redis URL"),
    (Sentinel([("127.0.0.1", 1)]), r"master_for"),
    (redis.Redis(decode_responses=True), "decode_responses"),
], ids=["dict", "int", "lookalike", "no-scheme", "http-url", "bad-port", "sentinel", "decoding"])
def test_anything_else_fails_at_start_up_saying_what_is_accepted(
        make_app: MakeApp, value: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make_app(SESSION_TYPE="redis", SESSION_REDIS=value)


def test_an_asyncio_client_is_refused(make_app: MakeApp) -> None:
    client = redis.asyncio.Redis()
    with pytest.raises(ConfigurationError, match=ACCEPTED + r".*asyncio"):
        make_app(SESSION_TYPE="redis", SESSION_REDIS=client)


@pytest.mark.parametrize(("settings", "message"), [
    ({"SESSION_REDIS_TIMEOUT": "fast"}, "SESSION_REDIS_TIMEOUT"),
    ({"SESSION_REDIS_TIMEOUT": 0}, "SESSION_REDIS_TIMEOUT"),
    ({"SESSION_REDIS_SENTINELS": ["127.0.0.1:26379"]}, "SESSION_REDIS_MASTER_NAME"),
    ({"SESSION_REDIS_SENTINELS": ["nowhere"], "SESSION_REDIS_MASTER_NAME": "m"}, "host:port"),
    ({"SESSION_REDIS_SENTINELS": 26379, "SESSION_REDIS_MASTER_NAME": "m"}, "list"),
    ({"SESSION_REDIS_SENTINELS": ["127.0.0.1:26379"], "SESSION_REDIS_MASTER_NAME": "m",
      "SESSION_REDIS": "redis://127.0.0.1:6379/0"}, "not both"),
], ids=["timeout-text", "timeout-zero", "no-master-name", "bad-address", "not-a-list", "both"])
def test_bad_redis_settings_fail_at_start_up(make_app: MakeApp, settings: dict[str, Any],
                                             message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make_app(SESSION_TYPE="redis", **settings)


def test_an_unreachable_server_fails_at_start_up(make_app: MakeApp) -> None:
    port = unused_port()
    with pytest.raises(ConfigurationError, match="session store redis is unavailable"):
        make_app(SESSION_TYPE="redis", SESSION_REDIS=f"redis://{HOST}:{port}/0")


def test_closing_the_store_leaves_the_apps_own_client_open(redis_server: RedisServer) -> None:
    client = inspector(redis_server)
    RedisStore(client).close()
    assert client.ping()


# -- what each request costs the server --------------------------------------------------
class CommandStats:
    """Commands a Redis server ran, from its own INFO commandstats (server-wide)."""

    def __init__(self, server: RedisServer) -> None:
        self.client = inspector(server)
        self.client.ping()  # connect now: connecting sends commands of its own

    def totals(self) -> Counter[str]:
        stats = self.client.info("commandstats")
        return Counter({name.removeprefix("cmdstat_"): int(value["calls"])
                        for name, value in stats.items()})

    @contextmanager
    def during(self) -> Iterator[Counter[str]]:
        delta: Counter[str] = Counter()
        before = self.totals()
        yield delta
        delta.update(self.totals() - before)
        del delta["info"]  # our own measurement


# Commands the update script runs inside Redis: the server counts them, but they cost
# no extra round trip (the client sent one EVALSHA).
UPDATE_SCRIPT_WORK = Counter({"exists": 1, "hset": 1, "pexpireat": 1})
TOUCH_SCRIPT_WORK = Counter({"exists": 1, "hmget": 1, "hset": 1, "pexpireat": 1})
INDEX_EXTENSION_WORK = Counter({"pttl": 1, "time": 1, "pexpireat": 1})
ADD_SCRIPT_WORK = Counter({"type": 1, "hset": 1, "pexpireat": 1})


def test_redis_commands_per_request(make_app: MakeApp, redis_server: RedisServer) -> None:
    app = with_routes(make_app(SESSION_TYPE="redis", SESSION_REDIS=redis_server.url,
                               PERMANENT_SESSION_LIFETIME=3600))
    backend = app.extensions["sessionkeeper"].backend
    # Warm up: the first connection introduces itself and the first run of each script
    # loads it (SCRIPT LOAD); neither is part of what a request costs.
    warm = app.test_client()
    warm.post("/write")
    warm.post("/write?value=again")
    backend.clock = lambda: time.time() + 600
    warm.get("/read")
    backend.clock = time.time
    warm.post("/login?user=warm-up")  # loads the add script (another user's index)
    stats = CommandStats(redis_server)
    browser = app.test_client()

    with stats.during() as new_session:
        browser.post("/write?value=laowang")
    with stats.during() as ping:
        assert browser.get("/ping").text == "pong"
    with stats.during() as read:
        assert browser.get("/read").text == "laowang"
    with stats.during() as write:
        browser.post("/write?key=city&value=beijing")
    backend.clock = lambda: time.time() + 600  # past 10% of the lifetime: due a refresh
    with stats.during() as refresh:
        assert browser.get("/read").text == "laowang"
    backend.clock = time.time
    with stats.during() as login:
        browser.post("/login")
    backend.clock = lambda: time.time() + 60  # each step moves the expiry: no tie
    with stats.during() as user_write:
        browser.post("/write?key=city&value=shanghai")
    backend.clock = lambda: time.time() + 1200
    with stats.during() as user_refresh:
        assert browser.get("/read").text == "laowang"
    backend.clock = time.time
    with stats.during() as logout:
        browser.post("/logout")

    assert new_session == Counter({"multi": 1, "del": 1, "hset": 1, "pexpireat": 1, "exec": 1})
    assert ping == Counter()
    assert read == Counter({"hgetall": 1})
    assert write == Counter({"hgetall": 1, "evalsha": 1}) + UPDATE_SCRIPT_WORK
    assert refresh == Counter({"hgetall": 1, "evalsha": 1}) + TOUCH_SCRIPT_WORK
    # The record read again (a write that landed meanwhile moves too); a new id bound
    # to the user, written with its index entry (a new SET, given the session's
    # expiry); the old id's forward record claimed in one script; the old id retired.
    assert login == Counter({"hgetall": 2, "multi": 1, "del": 1, "hset": 1, "pexpireat": 2,
                             "eval": 1, "sadd": 1, "pttl": 1, "scard": 1, "exec": 1,
                             "evalsha": 1, "unlink": 1}) + ADD_SCRIPT_WORK
    # Writes and refreshes of a logged-in session extend its user's index too, inside
    # the same script: still one round trip each.
    assert user_write == (Counter({"hgetall": 1, "evalsha": 1}) + UPDATE_SCRIPT_WORK
                          + INDEX_EXTENSION_WORK)
    assert user_refresh == (Counter({"hgetall": 1, "evalsha": 1})
                            + TOUCH_SCRIPT_WORK + INDEX_EXTENSION_WORK)
    assert logout == Counter({"hgetall": 1, "unlink": 1})


# -- the seed's configuration ------------------------------------------------------------
def test_seed_000_config_works_with_only_the_import_changed(redis_server: RedisServer) -> None:
    # As the tutorial writes it, except the server's port (a throwaway server's).
    f_session = Session()
    app = Flask(__name__)
    app.config['SECRET_KEY'] = 'laowangaigebi'
    app.config['SESSION_USE_SIGNER'] = True
    app.config['SESSION_TYPE'] = 'redis'
    app.config['SESSION_KEY_PREFIX'] = 'session:'
    app.config['PERMANENT_SESSION_LIFETIME'] = 7200
    app.config['SESSION_REDIS'] = redis.Redis(host='127.0.0.1', port=str(redis_server.port),
                                              db=4)
    f_session.init_app(app)

    @app.route("/")
    def index() -> str:
        session['xingming'] = 'laozhao'
        return '存session'

    browser = app.test_client()
    response = browser.get("/")
    assert response.text == '存session'
    assert "Max-Age=7200" in response.headers["Set-Cookie"]
    token = browser.get_cookie("session").value
    sid, signature = token.rsplit(".", 1)  # SESSION_USE_SIGNER: "<id>.<signature>"
    assert signature
    key = storage_key("session:", sid)
    db4 = inspector(redis_server, 4)
    assert stored_value(db4, key, "xingming") == "laozhao"
    assert 7_190_000 <= db4.pttl(key) <= 7_200_000
    assert not inspector(redis_server, 0).exists(key)


def dump(client: redis.Redis, key: bytes) -> list[bytes]:
    """A key's name and everything stored under it."""
    kind = client.type(key)
    if kind == b"hash":
        contents = [part for pair in client.hgetall(key).items() for part in pair]
    elif kind == b"set":
        contents = list(client.smembers(key))
    else:
        contents = [client.dump(key) or b""]
    return [key, *contents]


def test_the_cookies_id_appears_nowhere_in_redis(make_app: MakeApp,
                                                 redis_server: RedisServer) -> None:
    app = with_routes(make_app(SESSION_TYPE="redis", SESSION_REDIS=db_url(redis_server, 5),
                               SESSION_KEY_PREFIX="app:"))
    browser = app.test_client()
    browser.post("/write?value=laowang")
    old_sid = session_id(app, browser)
    browser.post("/login?user=u42")
    sid = session_id(app, browser)
    db5 = inspector(redis_server, 5)
    keys = sorted(db5.keys("*"))
    # The session, its user's index, and the old id's short-lived forward record.
    assert keys == sorted([storage_key("app:", sid).encode(), b"app:user:u42",
                           forward_key("app:", old_sid).encode()])
    assert all(re.fullmatch(rb"app:([0-9a-f]{64}|user:u42)", key) for key in keys)
    stored = b"".join(part for key in keys for part in dump(db5, key))
    assert sid.encode() not in stored and old_sid.encode() not in stored
    assert app.extensions["sessionkeeper"].backend.store.keys_for_user("u42", time.time()) == [
        storage_key("app:", sid)]


def test_a_value_over_a_megabyte(make_app: MakeApp, redis_server: RedisServer) -> None:
    app = with_routes(make_app(SESSION_TYPE="redis", SESSION_REDIS=redis_server.url))
    blob = "喵" * 400_000 + "end"  # 1.2 MB in UTF-8
    browser = app.test_client()
    assert browser.post("/big", data=blob.encode()).status_code == 200
    assert browser.get("/keys").json == {"blob": blob}


# -- concurrency: standalone and cluster -------------------------------------------------
@pytest.fixture(params=["standalone", "cluster"])
def redis_config(request: pytest.FixtureRequest,
                 redis_server: RedisServer) -> Iterator[dict[str, Any]]:
    prefix = random_prefix("redis-concurrency")
    if request.param == "standalone":
        yield {"SESSION_REDIS": redis_server.url, "SESSION_KEY_PREFIX": prefix}
        return
    client = cluster_provider.cluster_client()
    try:
        yield {"SESSION_REDIS": client, "SESSION_KEY_PREFIX": prefix}
    finally:
        delete_prefixed(client, prefix)
        client.close()


def test_fifty_concurrent_writers_to_one_session_lose_nothing(
        make_app: MakeApp, redis_config: dict[str, Any]) -> None:
    app = with_routes(make_app(SESSION_TYPE="redis", **redis_config))
    browser = app.test_client()
    browser.post("/write?value=laowang")
    cookie = browser.get_cookie("session").value
    writers = 50
    start = threading.Barrier(writers)

    def write(i: int) -> int:
        tab = app.test_client()  # one browser tab per thread, same session cookie
        tab.set_cookie("session", cookie)
        start.wait(timeout=30)
        return tab.post(f"/write?key=k{i}&value=v{i}").status_code

    with ThreadPoolExecutor(writers) as pool:
        statuses = list(pool.map(write, range(writers)))
    assert statuses == [200] * writers
    stored = browser.get("/keys").json
    assert stored == {"name": "laowang", **{f"k{i}": f"v{i}" for i in range(writers)}}


# -- the store itself: standalone and cluster --------------------------------------------
@pytest.fixture(params=["standalone", "cluster"])
def redis_store(request: pytest.FixtureRequest,
               redis_server: RedisServer) -> Iterator[RedisStore]:
    client: RedisClient = (inspector(redis_server, 6) if request.param == "standalone"
                           else cluster_provider.cluster_client())
    prefix = random_prefix("redis-users")
    try:
        yield RedisStore(client, key_prefix=prefix)
    finally:
        delete_prefixed(client, prefix)
        client.close()


def make_session(store: RedisStore, user: str | None, now: float) -> str:
    key = storage_key(store.key_prefix, os.urandom(16).hex())
    store.create(key, SessionRecord({"name": CODEC.encode("laowang")}, now, now, now + 600,
                                    True, user))
    return key


def test_a_session_past_its_time_is_never_served(redis_store: RedisStore) -> None:
    # Redis expires the key by its own clock; an app server whose clock runs ahead
    # still never serves, nor refreshes, a session its own clock says has ended.
    now = time.time()
    key = make_session(redis_store, None, now)
    assert redis_store.load(key, now + 599) is not None
    assert redis_store.load(key, now + 601) is None


def test_the_user_index_drops_sessions_that_are_gone(redis_store: RedisStore) -> None:
    now = time.time()
    alice = [make_session(redis_store, "alice", now) for _ in range(3)]
    bob = make_session(redis_store, "bob", now)
    redis_store.delete(alice[0])
    index = f"{redis_store.key_prefix}user:alice"
    assert redis_store.client.scard(index) == 3  # deleting a session costs the index nothing
    assert sorted(redis_store.keys_for_user("alice", now)) == sorted(alice[1:])
    assert redis_store.client.scard(index) == 2  # the stale entry went with that read
    assert redis_store.keys_for_user("bob", now) == [bob]
    assert redis_store.keys_for_user("carol", now) == []


def test_logins_sweep_a_large_user_index(redis_store: RedisStore) -> None:
    now = time.time()
    index = f"{redis_store.key_prefix}user:alice"
    old = [make_session(redis_store, "alice", now) for _ in range(redis_store.index_prune_from - 1)]
    for key in old[1:]:
        redis_store.delete(key)  # logged out everywhere but one device
    assert redis_store.client.scard(index) == redis_store.index_prune_from - 1
    newest = make_session(redis_store, "alice", now)  # the index reaches the sweep size
    assert sorted(redis_store.client.smembers(index)) == sorted([old[0].encode(),
                                                                 newest.encode()])


def bound_session(store: RedisStore, user: str, now: float, expires_at: float) -> str:
    key = storage_key(store.key_prefix, os.urandom(16).hex())
    store.create(key, SessionRecord({}, now, now, expires_at, True, user))
    return key


def index_expires_in(store: RedisStore, user: str) -> float:
    """Seconds until the user's index SET expires (negative: no expiry, or no index)."""
    return int(store.client.pttl(f"{store.key_prefix}user:{user}")) / 1000


#: the store rounds an expiry up to Redis' milliseconds (never early): PTTL read within
#: the same millisecond can be one over the whole seconds asked for
ONE_MS = 0.001


def test_a_user_index_lives_as_long_as_its_longest_lived_session(
        redis_store: RedisStore) -> None:
    now = time.time()
    laptop = bound_session(redis_store, "alice", now, now + 1200)
    phone = bound_session(redis_store, "alice", now, now + 600)  # shorter: changes nothing
    assert 1190 < index_expires_in(redis_store, "alice") <= 1200 + ONE_MS

    redis_store.touch(phone, now, now + 1800)  # a refresh of a read-only request
    assert 1790 < index_expires_in(redis_store, "alice") <= 1800 + ONE_MS

    assert redis_store.update(laptop, SessionUpdate({"x": b"1"}, set(), False, now, now + 2400,
                                                    True, user_id="alice"))  # a write
    assert 2390 < index_expires_in(redis_store, "alice") <= 2400 + ONE_MS

    tablet = make_session(redis_store, None, now)  # anonymous, then logged in in place
    assert redis_store.update(tablet, SessionUpdate({}, set(), False, now, now + 3000, True,
                                                    user_id="alice", user_id_changed=True))
    assert 2990 < index_expires_in(redis_store, "alice") <= 3000 + ONE_MS
    assert sorted(redis_store.keys_for_user("alice", now)) == sorted([laptop, phone, tablet])


def loaded_version(store: RedisStore, key: str, now: float) -> Any:
    loaded = store.load(key, now)
    assert loaded is not None
    return loaded.version


def test_a_refresh_extends_the_index_of_the_user_the_session_has_now(
        redis_store: RedisStore) -> None:
    """A refresh after a load extends the loaded user's index in the same script; if
    the session was bound to someone else in between, that user's index is extended."""
    now = time.time()
    phone = bound_session(redis_store, "alice", now, now + 600)
    version = loaded_version(redis_store, phone, now)  # loaded as alice's
    redis_store.touch(phone, now, now + 1800, version=version)
    assert 1790 < index_expires_in(redis_store, "alice") <= 1800 + ONE_MS

    bound_session(redis_store, "bob", now, now + 600)  # bob has an index of his own
    version = loaded_version(redis_store, phone, now)  # loaded as alice's ...
    assert redis_store.update(phone, SessionUpdate({}, set(), False, now, now + 600, True,
                                                   user_id="bob", user_id_changed=True))
    redis_store.touch(phone, now, now + 2400, version=version)  # ... refreshed as bob's
    assert 2390 < index_expires_in(redis_store, "bob") <= 2400
    assert 1790 < index_expires_in(redis_store, "alice") <= 1800 + ONE_MS  # alice's left as it was


def test_a_version_of_another_session_extends_nobody_elses_index(
        redis_store: RedisStore) -> None:
    now = time.time()
    phone = bound_session(redis_store, "alice", now, now + 600)
    laptop = bound_session(redis_store, "bob", now, now + 600)
    version = loaded_version(redis_store, phone, now)
    assert redis_store.touch(laptop, now, now + 1800, version=version)  # not phone's
    assert 1790 < index_expires_in(redis_store, "bob") <= 1800
    assert 590 < index_expires_in(redis_store, "alice") <= 600


# Load and save of one request may run on different threads (ASGI, a thread pool), and
# many requests may interleave on one thread (an event loop): what a refresh needs of
# the load travels with the loaded record's version, so it stays one round trip.
def on_another_thread(action: Callable[[], T]) -> T:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(action).result()


def test_a_save_on_another_thread_than_its_load_keeps_a_write_that_landed_meanwhile(
        redis_store: RedisStore) -> None:
    now = time.time()
    key = make_session(redis_store, "alice", now)
    slow = loaded_version(redis_store, key, now)  # a slow request loads ...
    assert redis_store.update(key, SessionUpdate({"quick": b"1"}, set(), False, now,
                                                 now + 600, True, user_id="alice"))
    assert on_another_thread(lambda: redis_store.update(key, SessionUpdate(
        {"slow": b"2"}, set(), False, now, now + 900, True, user_id="alice", version=slow)))
    stored = redis_store.load(key, now)
    assert stored is not None
    assert stored.values == {"name": CODEC.encode("laowang"), "quick": b"1", "slow": b"2"}
    assert 890 < index_expires_in(redis_store, "alice") <= 900


@pytest.fixture
def counted_store(redis_server: RedisServer) -> Iterator[RedisStore]:
    """A store on the throwaway server, whose command counts only this test moves;
    every script loaded already, so that counts show round trips only."""
    client = inspector(redis_server, 7)
    prefix = random_prefix("redis-versions")
    made = RedisStore(client, key_prefix=prefix)
    now = time.time()
    warm = bound_session(made, "warm-up", now, now + 600)
    made.touch(warm, now, now + 900)  # the touch and index scripts
    made.touch(warm, now, now + 900, version=loaded_version(made, warm, now))
    try:
        yield made
    finally:
        delete_prefixed(client, prefix)
        client.close()


def test_a_refresh_on_another_thread_than_its_load_is_one_call(
        counted_store: RedisStore, redis_server: RedisServer) -> None:
    now = time.time()
    phone = bound_session(counted_store, "alice", now, now + 600)
    version = loaded_version(counted_store, phone, now)
    with CommandStats(redis_server).during() as refresh:
        assert on_another_thread(
            lambda: counted_store.touch(phone, now, now + 1800, version=version))
    assert refresh == Counter({"evalsha": 1}) + TOUCH_SCRIPT_WORK + INDEX_EXTENSION_WORK
    assert 1790 < index_expires_in(counted_store, "alice") <= 1800


def test_two_sessions_loaded_in_turn_on_one_thread_are_each_refreshed_in_one_call(
        counted_store: RedisStore, redis_server: RedisServer) -> None:
    now = time.time()
    phone = bound_session(counted_store, "alice", now, now + 600)
    laptop = bound_session(counted_store, "bob", now, now + 600)
    # Two requests on one event loop: both load, then both refresh.
    phone_version = loaded_version(counted_store, phone, now)
    laptop_version = loaded_version(counted_store, laptop, now)
    with CommandStats(redis_server).during() as refreshes:
        assert counted_store.touch(phone, now, now + 1800, version=phone_version)
        assert counted_store.touch(laptop, now, now + 2400, version=laptop_version)
    work = TOUCH_SCRIPT_WORK + INDEX_EXTENSION_WORK
    assert refreshes == Counter({"evalsha": 2}) + work + work
    assert 1790 < index_expires_in(counted_store, "alice") <= 1800
    assert 2390 < index_expires_in(counted_store, "bob") <= 2400


def test_a_user_index_goes_when_all_its_sessions_have_expired(
        redis_store: RedisStore) -> None:
    now = time.time()
    index = f"{redis_store.key_prefix}user:alice"
    bound_session(redis_store, "alice", now, now + 0.6)
    last = bound_session(redis_store, "alice", now, now + 1.2)

    time.sleep(max(0.0, now + 0.9 - time.time()))
    assert redis_store.client.exists(index) == 1  # one session is still alive
    time.sleep(max(0.0, now + 1.5 - time.time()))
    assert redis_store.client.exists(last, index) == 0  # the user left nothing behind


def test_deltas_of_thousands_of_keys(redis_store: RedisStore) -> None:
    # More fields than one Lua unpack() can take: the script works in batches.
    now = time.time()
    key = make_session(redis_store, None, now)
    many = {f"k{i}": CODEC.encode(i) for i in range(5000)}
    assert redis_store.update(key, SessionUpdate(many, {"name"}, False, now, now + 600, True))
    assert redis_store.load(key, now).values == many  # type: ignore[union-attr]
    fewer = {f"k{i}": CODEC.encode(-i) for i in range(0, 5000, 2)}
    gone = {f"k{i}" for i in range(1, 5000, 2)}
    assert redis_store.update(key, SessionUpdate(fewer, gone, False, now, now + 600, True))
    assert redis_store.load(key, now).values == fewer  # type: ignore[union-attr]
    assert redis_store.update(key, SessionUpdate({"x": b"1"}, set(), True, now, now + 600, True))
    assert redis_store.load(key, now).values == {"x": b"1"}  # type: ignore[union-attr]


# -- damaged hashes, add, touch ----------------------------------------------------------
def stored_fields(store: RedisStore, now: float, **changes: bytes | None) -> dict[str, bytes]:
    """The fields of a healthy session hash, with ``changes`` (None: field left out)."""
    fields = {"v:name": CODEC.encode("laowang"), "created": repr(now).encode(),
              "accessed": repr(now).encode(), "expires": repr(now + 600).encode(),
              "permanent": b"1"}
    for name, value in changes.items():
        fields.pop(name, None)
        if value is not None:
            fields[name] = value
    return fields


@pytest.mark.parametrize("damage", [
    {"created": None, "accessed": None, "expires": None},  # values only, no metadata
    {"expires": None},
    {"expires": b"tomorrow"},
    {"created": b"nan"},
    {"accessed": b"inf"},
    {"permanent": b"yes"},
    {"permanent": None},
    {"user": b"\xff\xfe"},  # a user id that is not UTF-8
])
def test_a_damaged_session_hash_raises_undecodable_record(
        redis_store: RedisStore, damage: dict[str, bytes | None]) -> None:
    now = time.time()
    key = storage_key(redis_store.key_prefix, os.urandom(16).hex())
    redis_store.client.hset(key, mapping=stored_fields(redis_store, now, **damage))
    with pytest.raises(UndecodableRecord) as caught:
        redis_store.load(key, now)
    assert caught.value.store == "redis"


def test_a_value_field_name_that_is_not_utf8_raises_undecodable_record(
        redis_store: RedisStore) -> None:
    now = time.time()
    key = storage_key(redis_store.key_prefix, os.urandom(16).hex())
    redis_store.client.hset(key, mapping={**stored_fields(redis_store, now),
                                          b"v:\xc3(": CODEC.encode(1)})
    with pytest.raises(UndecodableRecord):
        redis_store.load(key, now)


def test_another_type_under_a_session_key_raises_undecodable_record(
        redis_store: RedisStore) -> None:
    now = time.time()
    key = storage_key(redis_store.key_prefix, os.urandom(16).hex())
    redis_store.client.set(key, b"\x80\x04 not a hash")
    with pytest.raises(UndecodableRecord):
        redis_store.load(key, now)
    redis_store.delete(key)  # what the core does next: the key is free again
    assert redis_store.load(key, now) is None


def test_a_damaged_session_of_a_user_is_left_out_of_the_list_not_fatal(
        redis_store: RedisStore) -> None:
    now = time.time()
    kept = make_session(redis_store, "alice", now)
    damaged = make_session(redis_store, "alice", now)
    redis_store.client.hset(damaged, "expires", b"soon")
    other_type = make_session(redis_store, "alice", now)
    redis_store.client.delete(other_type)
    redis_store.client.set(other_type, b"garbage")
    assert redis_store.keys_for_user("alice", now) == [kept]


def test_add_claims_a_key_once(redis_store: RedisStore) -> None:
    now = time.time()
    key = storage_key(redis_store.key_prefix, os.urandom(16).hex())
    first = SessionRecord({"n": CODEC.encode(1)}, now, now, now + 600, True, "alice")
    second = SessionRecord({"n": CODEC.encode(2)}, now, now, now + 600, True, "bob")
    assert redis_store.add(key, first) is True
    assert redis_store.add(key, second) is False
    loaded = redis_store.load(key, now)
    assert loaded is not None and loaded.values == {"n": CODEC.encode(1)}
    assert loaded.user_id == "alice"
    assert redis_store.keys_for_user("alice", now) == [key]  # indexed like create()
    assert redis_store.keys_for_user("bob", now) == []
    assert 590 < redis_store.client.pttl(key) / 1000 <= 600


def test_add_replaces_an_expired_or_damaged_record(redis_store: RedisStore) -> None:
    now = time.time()
    keeping = RedisStore(redis_store.client, key_prefix=redis_store.key_prefix,
                         keep_expired=300)
    expired = storage_key(redis_store.key_prefix, os.urandom(16).hex())
    keeping.create(expired, SessionRecord({"n": b"1"}, now - 900, now - 900, now - 1, True))
    assert keeping.client.exists(expired) == 1  # kept past its expiry (SESSION_KEEP_EXPIRED)
    assert keeping.add(expired, SessionRecord({"n": b"2"}, now, now, now + 60, True)) is True
    assert keeping.load(expired, now).values == {"n": b"2"}  # type: ignore[union-attr]

    damaged = storage_key(redis_store.key_prefix, os.urandom(16).hex())
    redis_store.client.hset(damaged, mapping={"expires": b"never", "v:x": b"1"})
    assert redis_store.add(damaged, SessionRecord({"n": b"3"}, now, now, now + 60, True))
    assert redis_store.load(damaged, now).values == {"n": b"3"}  # type: ignore[union-attr]

    other_type = storage_key(redis_store.key_prefix, os.urandom(16).hex())
    redis_store.client.rpush(other_type, b"x")
    assert redis_store.add(other_type, SessionRecord({"n": b"4"}, now, now, now + 60, True))
    assert redis_store.load(other_type, now).values == {"n": b"4"}  # type: ignore[union-attr]


def test_concurrent_adds_of_one_key_let_exactly_one_win(redis_store: RedisStore) -> None:
    now = time.time()
    claimants = 16
    for _ in range(10):  # a race lost once in a while must still show up
        key = storage_key(redis_store.key_prefix, os.urandom(16).hex())
        start = threading.Barrier(claimants)

        def claim(n: int, key: str = key, start: threading.Barrier = start) -> bool:
            start.wait(timeout=30)
            return redis_store.add(key, SessionRecord({"n": CODEC.encode(n)}, now, now,
                                                      now + 600, True))

        with ThreadPoolExecutor(claimants) as pool:
            won = [n for n, ok in zip(range(claimants), pool.map(claim, range(claimants)),
                                      strict=True) if ok]
        assert len(won) == 1, f"{len(won)} claims of one key succeeded"
        stored = redis_store.load(key, now)
        assert stored is not None and stored.values == {"n": CODEC.encode(won[0])}


def test_touch_says_whether_the_session_was_there(redis_store: RedisStore) -> None:
    now = time.time()
    missing = storage_key(redis_store.key_prefix, os.urandom(16).hex())
    assert redis_store.touch(missing, now, now + 600) is False
    assert redis_store.client.exists(missing) == 0  # nothing created

    key = make_session(redis_store, "alice", now)
    assert redis_store.touch(key, now + 10, now + 900) is True
    assert redis_store.load(key, now + 700) is not None

    keeping = RedisStore(redis_store.client, key_prefix=redis_store.key_prefix,
                         keep_expired=300)
    expired = storage_key(redis_store.key_prefix, os.urandom(16).hex())
    keeping.create(expired, SessionRecord({}, now - 900, now - 900, now - 1, True))
    assert keeping.touch(expired, now, now + 600) is False  # kept, but never revived
    assert keeping.load(expired, now) is None


# -- outages -----------------------------------------------------------------------------
class Traffic:
    """Requests from another browser tab, in a loop, while the test breaks things."""

    def __init__(self, app: Flask, cookie: str) -> None:
        self.client = app.test_client()
        self.client.set_cookie("session", cookie)
        self.statuses: dict[str, Counter[int]] = {"/ping": Counter(), "/read": Counter()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for path, seen in self.statuses.items():
                seen[self.client.get(path).status_code] += 1
            time.sleep(0.01)

    def __enter__(self) -> Traffic:
        self._thread.start()
        deadline = time.monotonic() + 30
        while sum(self.statuses["/read"].values()) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.mark.parametrize("outage", ["stopped", "hung"])
def test_an_outage_answers_503_keeps_the_data_and_recovers(make_app: MakeApp,
                                                           outage: str) -> None:
    server = start_or_skip(RedisWithData)
    down, up = (server.stop, server.start) if outage == "stopped" else (server.pause,
                                                                        server.resume)
    try:
        app = with_routes(make_app(SESSION_TYPE="redis", SESSION_REDIS=server.url,
                                   SESSION_REDIS_TIMEOUT=0.5, SESSION_BREAKER_SECONDS=1))
        browser = log_in_and_read_back(app)
        cookie = browser.get_cookie("session").value
        with Traffic(app, cookie) as traffic:
            down()
            assert browser.get("/ping").status_code == 200
            response = browser.get("/read")
            assert response.status_code == 503
            response = browser.post("/write?key=city&value=beijing")
            assert response.status_code == 503
            assert "Set-Cookie" not in response.headers
            assert browser.get_cookie("session").value == cookie  # still the same session
            up()
            # Same app, same client: no restart; the session written before is back
            # (after a timeout, once the circuit breaker's next probe finds the server).
            deadline = time.monotonic() + 10
            while (answer := browser.get("/read")).status_code == 503:
                assert time.monotonic() < deadline, "the app did not recover"
                time.sleep(0.05)
            assert answer.text == "laowang"
        assert browser.get("/keys").json == {"name": "laowang"}  # the failed write left nothing
        assert set(traffic.statuses["/ping"]) == {200}
        assert set(traffic.statuses["/read"]) <= {200, 503}  # never a 500
        assert traffic.statuses["/read"][200] > 0
    finally:
        server.close()


def test_a_restart_between_two_requests_goes_unnoticed(make_app: MakeApp) -> None:
    server = start_or_skip(RedisWithData)
    try:
        app = with_routes(make_app(SESSION_TYPE="redis", SESSION_REDIS=server.url))
        browser = log_in_and_read_back(app)
        server.stop()
        server.start()
        # The pooled connection died with the old process; the client reconnects at once.
        response = browser.get("/read")
        assert (response.status_code, response.text) == (200, "laowang")
    finally:
        server.close()
