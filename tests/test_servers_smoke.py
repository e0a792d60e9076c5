"""Prove the throwaway-server helpers in tests/servers.py give real, working servers."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest
from providers import redis_cluster as redis_cluster_provider
from servers import (
    RedisSentinel,
    RedisServer,
    ServerGroup,
    mongodb_url,
    require,
    start_memcached,
    start_or_skip,
    start_redis,
    start_redis_sentinel,
)


def need_module(name: str) -> None:
    require(importlib.util.find_spec(name), f"Python package {name!r}")


@pytest.fixture(scope="module")
def memcached() -> Iterator[ServerGroup]:
    servers = start_or_skip(start_memcached, 2)
    yield servers
    servers.stop()


@pytest.fixture(scope="module")
def redis_cluster() -> ServerGroup:
    # The run's one cluster (started by start_redis_cluster on first use): a second
    # cluster just for this check would cost seconds and prove nothing more.
    return redis_cluster_provider.cluster()


@pytest.fixture(scope="module")
def sentinel() -> Iterator[RedisSentinel]:
    handle = start_or_skip(start_redis_sentinel)
    yield handle
    handle.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = start_or_skip(start_redis)
    yield server
    server.stop()


def test_require_skips_or_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    require(True, "anything")  # a met condition is a no-op
    monkeypatch.delenv("SESSIONKEEPER_REQUIRE_SERVERS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="frobnicator"):
        require(False, "frobnicator")
    monkeypatch.setenv("SESSIONKEEPER_REQUIRE_SERVERS", "1")
    with pytest.raises(pytest.fail.Exception, match="frobnicator"):
        require(None, "frobnicator")


def test_memcached_two_independent_servers(memcached: ServerGroup) -> None:
    need_module("pymemcache")
    from pymemcache.client.base import Client

    assert len(set(memcached)) == 2
    first, second = (Client(addr, connect_timeout=2, timeout=2) for addr in memcached)
    first.set("k", b"one")
    second.set("k", b"two")
    assert first.get("k") == b"one"
    assert second.get("k") == b"two"


def test_redis_cluster_spreads_keys_over_masters(redis_cluster: ServerGroup) -> None:
    need_module("redis")
    from redis.cluster import ClusterNode, RedisCluster

    assert len(redis_cluster) == 3
    client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in redis_cluster])
    try:
        assert len(client.get_primaries()) == 3
        keys = [f"session:{i}" for i in range(30)]
        for key in keys:
            client.set(key, key.encode())
        assert all(client.get(key) == key.encode() for key in keys)
        # The keys really live on different slots and different nodes.
        assert len({client.keyslot(key) for key in keys}) > 1
        assert len({client.get_node_from_key(key).name for key in keys}) == 3
    finally:
        client.close()


def test_redis_sentinel_discovers_master(sentinel: RedisSentinel) -> None:
    need_module("redis")
    from redis.sentinel import Sentinel

    host, port, name = sentinel
    client = Sentinel([(str(host), int(port))], socket_timeout=2)
    assert client.discover_master(str(name)) == ("127.0.0.1", sentinel.master_port)
    master = client.master_for(str(name), socket_timeout=2)
    master.set("k", b"v")
    assert master.get("k") == b"v"


def test_standalone_redis_restarts_on_same_port(redis_server: RedisServer) -> None:
    need_module("redis")
    import redis

    client = redis.Redis.from_url(redis_server.url, socket_timeout=2)
    client.set("k", b"v")
    port = redis_server.port
    redis_server.stop()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    redis_server.restart()
    assert redis_server.port == port
    assert client.ping()  # the same client reconnects
    assert client.get("k") is None  # no persistence: restarted empty
    client.set("k", b"again")
    assert client.get("k") == b"again"


def test_mongodb_answers() -> None:
    url = start_or_skip(mongodb_url)
    if url is None:
        # A plain skip, tolerated in CI: no package source of this project ships mongod.
        pytest.skip("no MongoDB server: set MONGODB_URL to a real server")
    need_module("pymongo")
    import pymongo

    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        url, serverSelectionTimeoutMS=10000
    )
    try:
        assert client.admin.command("ping")["ok"] == 1
    finally:
        client.close()
