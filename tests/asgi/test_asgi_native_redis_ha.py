"""On asyncio, a Sentinel-managed Redis and a Redis Cluster serve the store's read, delta
update and refresh from the event loop (redis.asyncio) as a single server does: such
requests are served while every store thread is busy, 50 concurrent writers of one
session lose nothing, and on trio the calls go back to the threads. Through Sentinel
the master is looked up as the sync client looks it up: a master that is down answers
503 at once, one that is frozen after the store's timeout, and after a failover the new
master is found. Connections close with their event loop."""

from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
import redis
from native_redis import (
    answers_as_on_asyncio_and_trio,
    fifty_writers,
    served_while_the_store_threads_are_busy,
    session_app,
)
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel
from servers import RedisSentinel, ServerGroup, start_or_skip, start_redis_cluster
from starlette.testclient import TestClient

from sessionkeeper.stores.redis import DEFAULT_TIMEOUT


@pytest.fixture(scope="module")
def sentinel() -> Iterator[RedisSentinel]:
    server = start_or_skip(RedisSentinel)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[ServerGroup]:
    servers = start_or_skip(start_redis_cluster)
    try:
        yield servers
    finally:
        servers.stop()


def sentinel_url(server: RedisSentinel) -> str:
    return f"redis+sentinel://{server.host}:{server.port}/{server.master_name}"


def sentinel_client(server: RedisSentinel) -> redis.Redis:
    """A client the app built itself: the master of database 1 (the native calls must
    find the records the threads wrote there)."""
    return Sentinel([(server.host, server.port)], socket_timeout=2).master_for(
        server.master_name, socket_timeout=2, db=1)


def cluster_client(servers: ServerGroup) -> RedisCluster:
    host, port = servers[0]
    return RedisCluster(host=host, port=port, socket_timeout=2)


@pytest.fixture(params=["sentinel-url", "sentinel-client", "cluster"])
def store(request: pytest.FixtureRequest) -> Any:
    """A store of each kind: what ``store=`` is given."""
    if request.param == "cluster":
        return cluster_client(request.getfixturevalue("cluster"))
    server = request.getfixturevalue("sentinel")
    return sentinel_url(server) if request.param == "sentinel-url" else sentinel_client(server)


# (method, path, seconds waited first): a read; a change; a refresh (max_age=10: a read
# more than a second, a tenth, after the last write refreshes)
REQUESTS = {"read": ("GET", "/view", 0.0), "change": ("POST", "/set", 0.0),
            "refresh": ("GET", "/view", 1.2)}


@pytest.mark.parametrize("request_kind", list(REQUESTS))
def test_served_while_the_only_store_thread_is_busy(store: Any, request_kind: str) -> None:
    app = session_app(store, store_threads=1, max_age=10)
    assert anyio.run(served_while_the_store_threads_are_busy, app,
                     *REQUESTS[request_kind]) == 200


def test_on_trio_the_calls_wait_for_the_store_thread(store: Any) -> None:
    # The contrast that shows the test above can fail: redis.asyncio needs asyncio.
    app = session_app(store, store_threads=1)
    assert anyio.run(served_while_the_store_threads_are_busy, app, backend="trio") == 0
    assert anyio.run(served_while_the_store_threads_are_busy, app, backend="trio") == 0


def test_fifty_concurrent_writers_of_one_session_lose_nothing(store: Any) -> None:
    session = anyio.run(fifty_writers, session_app(store))
    assert session == {"start": True, **{f"k{n}": True for n in range(50)}}


def test_a_login_and_a_logout_answer_as_on_one_server(store: Any) -> None:
    answers_as_on_asyncio_and_trio(session_app(store))


def test_connections_close_with_their_event_loop(sentinel: RedisSentinel,
                                                 cluster: ServerGroup) -> None:
    name = f"sk-ha-loops-{secrets.token_hex(4)}"
    sentinel_master = Sentinel([(sentinel.host, sentinel.port)]).master_for(
        sentinel.master_name, client_name=name)
    host, port = cluster[0]
    for store, ports in ((sentinel_master, [sentinel.master_port]),
                         (RedisCluster(host=host, port=port, client_name=name),
                          [node_port for _, node_port in cluster])):
        app = session_app(store)
        for _ in range(6):  # loops one after the other, as test clients make them
            assert anyio.run(served_while_the_store_threads_are_busy, app) == 200
        time.sleep(0.2)  # the server notices a closed connection promptly, not at once
        named = sum(client["name"] == name for node_port in ports
                    for client in redis.Redis(sentinel.host, node_port).client_list())
        assert named <= len(ports)  # the threads' connections, kept for reuse


# -- Sentinel failover ----------------------------------------------------------------
@pytest.fixture
def replicated() -> Iterator[RedisSentinel]:
    """A Sentinel whose master has a replica: a failover can happen."""
    server = start_or_skip(RedisSentinel, replicas=1)
    try:
        yield server
    finally:
        server.stop()


def replicated_to_all(server: RedisSentinel) -> None:
    assert redis.Redis(server.host, server.master_port).execute_command("WAIT", 1, 5000) == 1


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    return call(), time.monotonic() - started


@pytest.mark.parametrize("store_of", [sentinel_url, sentinel_client])
def test_a_master_that_is_down_answers_503_at_once_then_the_new_one_serves(
        replicated: RedisSentinel, store_of: Callable[[RedisSentinel], Any]) -> None:
    app = session_app(store_of(replicated), breaker_seconds=0)
    with TestClient(app) as browser:  # one event loop: its connections are reused
        browser.post("/set", json={"a": 1})
        assert browser.get("/view").json()["session"] == {"a": 1}
        replicated_to_all(replicated)
        replicated.kill_master()
        down, waited = timed(lambda: browser.get("/view"))
        assert down.status_code == 503 and "temporarily unavailable" in down.text
        assert waited < 1.0  # refused: no timeout waited for
        replicated.failover()
        back = browser.get("/view")  # the record, replicated before the outage
        assert back.status_code == 200 and back.json()["session"] == {"a": 1}
        assert browser.post("/set", json={"b": 2}).status_code == 200  # a master: writable
        assert browser.get("/view").json()["session"] == {"a": 1, "b": 2}


def test_a_failover_while_the_master_runs_is_followed(replicated: RedisSentinel) -> None:
    app = session_app(sentinel_url(replicated), breaker_seconds=0)
    with TestClient(app) as browser:
        browser.post("/set", json={"a": 1})
        assert browser.get("/view").json()["session"] == {"a": 1}
        replicated_to_all(replicated)
        previous = replicated.master_port
        replicated.failover()  # the old master becomes a replica of the new one
        assert replicated.master_port != previous
        assert browser.post("/set", json={"b": 2}).status_code == 200
        assert browser.get("/view").json()["session"] == {"a": 1, "b": 2}
        new_master = redis.Redis(replicated.host, replicated.master_port)
        assert new_master.info("replication")["role"] == "master"
        assert new_master.dbsize() == 1  # the session was written there


def test_a_frozen_master_answers_503_after_the_timeout_and_recovers() -> None:
    server = start_or_skip(RedisSentinel)
    process = server._processes.procs[server.master_port]
    try:
        app = session_app(sentinel_url(server), breaker_seconds=0)
        with TestClient(app) as browser:
            browser.post("/set", json={"a": 1})
            assert browser.get("/view").json()["session"] == {"a": 1}
            process.send_signal(signal.SIGSTOP)  # connections stay open; nothing answers
            try:
                frozen, waited = timed(lambda: browser.get("/view"))
            finally:
                process.send_signal(signal.SIGCONT)
            assert frozen.status_code == 503 and "temporarily unavailable" in frozen.text
            assert DEFAULT_TIMEOUT - 0.5 < waited < DEFAULT_TIMEOUT + 3  # one deadline
            assert browser.get("/view").json()["session"] == {"a": 1}  # a new connection
    finally:
        server.stop()
