"""The Redis store's own connections (stores/redis_direct.py) against a real redis-server:
they reach the server, database and protocol the app's client names, survive a restart
and a flushed script cache, and are never shared with a forked child."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
import redis
from servers import RedisServer, start_or_skip, start_redis

from sessionkeeper.errors import UndecodableRecord
from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.base import SessionRecord, SessionUpdate
from sessionkeeper.stores.redis import RedisStore

CODEC = ValueCodec()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = start_or_skip(start_redis)
    yield server
    server.stop()


def record(name: str, now: float, user: str | None = None) -> SessionRecord:
    return SessionRecord({"name": CODEC.encode(name)}, now, now, now + 600, True, user)


def rename(store: RedisStore, key: str, name: str, now: float) -> bool:
    return store.update(key, SessionUpdate({"name": CODEC.encode(name)}, set(), False,
                                           now, now + 600, True))


def name_in(store: RedisStore, key: str, now: float) -> str | None:
    found = store.load(key, now)
    return None if found is None else CODEC.decode(found.values["name"])


@pytest.mark.parametrize("protocol", [2, 3])
def test_reads_and_writes_in_the_clients_database_and_protocol(
        redis_server: RedisServer, protocol: int) -> None:
    client = redis.Redis(host=redis_server.host, port=redis_server.port, db=3,
                         protocol=protocol)
    store = RedisStore(client, key_prefix="direct:")
    now = time.time()
    store.create("direct:a", record("laowang", now, user="7"))
    assert rename(store, "direct:a", "xiaoming", now)
    found = store.load("direct:a", now)
    assert found is not None and found.user_id == "7" and found.permanent
    assert CODEC.decode(found.values["name"]) == "xiaoming"
    # the data is where the client points, not in database 0
    assert redis.Redis(host=redis_server.host, port=redis_server.port, db=3).exists("direct:a")
    assert not redis.Redis(host=redis_server.host, port=redis_server.port).exists("direct:a")
    store.delete("direct:a")
    assert store.load("direct:a", now) is None


def test_a_flushed_script_cache_is_reloaded(redis_server: RedisServer) -> None:
    client = redis.Redis(host=redis_server.host, port=redis_server.port)
    store = RedisStore(client, key_prefix="flush:")
    now = time.time()
    store.create("flush:a", record("one", now))
    assert rename(store, "flush:a", "two", now)
    client.script_flush()  # as after a server restart or failover
    assert rename(store, "flush:a", "three", now)
    store.touch("flush:a", now, now + 900)
    assert name_in(store, "flush:a", now) == "three"


def test_a_restarted_server_is_reached_again_without_an_error(redis_server: RedisServer) -> None:
    client = redis.Redis(host=redis_server.host, port=redis_server.port)
    store = RedisStore(client, key_prefix="restart:")
    now = time.time()
    store.create("restart:a", record("before", now))
    assert name_in(store, "restart:a", now) == "before"  # a connection is now kept open
    redis_server.restart()  # empty again: the kept connection is dead
    assert name_in(store, "restart:a", now) is None  # answered on a new connection
    store.create("restart:a", record("after", now))
    assert rename(store, "restart:a", "again", now)
    assert name_in(store, "restart:a", now) == "again"


def test_an_error_reply_leaves_the_connection_usable(redis_server: RedisServer) -> None:
    client = redis.Redis(host=redis_server.host, port=redis_server.port)
    store = RedisStore(client, key_prefix="wrongtype:")
    client.set("wrongtype:a", b"not a hash")
    with pytest.raises(UndecodableRecord, match="WRONGTYPE"):  # not a session
        store.load("wrongtype:a", time.time())
    now = time.time()
    store.create("wrongtype:b", record("fine", now))
    assert name_in(store, "wrongtype:b", now) == "fine"


def test_a_forked_child_uses_connections_of_its_own(redis_server: RedisServer) -> None:
    """A worker forked from a process that already used the store (gunicorn --preload)
    must not share its parent's socket: replies would cross between the two."""
    client = redis.Redis(host=redis_server.host, port=redis_server.port)
    store = RedisStore(client, key_prefix="fork:")
    now = time.time()
    store.create("fork:parent", record("parent", now))
    store.create("fork:child", record("child", now))
    assert name_in(store, "fork:parent", now) == "parent"  # the parent holds a connection
    rounds = 300
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 only if every reply was its own
        code = 1
        try:
            good = all(name_in(store, "fork:child", now) == "child" for _ in range(rounds))
            code = 0 if good else 3
        finally:
            os._exit(code)
    mine = [name_in(store, "fork:parent", now) for _ in range(rounds)]
    _, status = os.waitpid(pid, 0)
    assert mine == ["parent"] * rounds
    assert os.waitstatus_to_exitcode(status) == 0
