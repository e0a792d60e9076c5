"""Every server store behind the ASGI middleware through uvicorn (two worker processes) on
loopback: what test_asgi_uvicorn_every_store.py does not cover.

- cachelib on Redis (a ``RedisCache`` object) gets the whole set: 50 concurrent writers
  of one session lose nothing, a logout during a slow request stays a logout, bad cookies
  give a fresh session, a stopped Redis answers 503 and the app recovers;
- every store kind: cookies signed with another secret key (the store's ids are not
  signed: Starlette's and Flask-Session's signed cookies), expired cookies and any
  header text a client can send (hypothesis) answer 200 with a fresh session, never 500;
- every store whose server is the test's own (Redis, Sentinel's Redis master, memcached,
  cachelib's Redis, dynalite): stopped, a request with a session answers 503 within
  ``OUTAGE_ANSWER`` seconds, requests without a session cookie still answer 200, and
  once the server is back new sessions work again.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
import requests
import test_asgi_uvicorn_every_store as every_store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import (
    _binary,
    _redis_argv,
    _redis_pings,
    start_dynalite,
    start_memcached,
    start_or_skip,
    start_redis,
    start_redis_sentinel,
)
from test_asgi_uvicorn import REQUEST_TIMEOUT, uvicorn
from test_asgi_uvicorn_every_store import AWS, KINDS, Served, _store, new_session, view

from sessionkeeper.signing import IdSigner, KeyRing
from sessionkeeper.starlette.timestamp_signer import TimestampSigner

MAX_AGE = 3  # seconds a session lives: short, so that an expired cookie is quick to get
OUTAGE_ANSWER = 5.0  # seconds a request may take to answer 503 once the store is down
FRESH = {"session": {}, "user": None}
#: what an HTTP header value may carry (uvicorn answers 400 to control characters itself)
HEADER_TEXT = st.text(st.sampled_from(
    ["\t", *map(chr, range(0x20, 0x7F)), *map(chr, range(0x80, 0x100))]), max_size=300)

pytestmark = pytest.mark.slow


def _own_server(kind: str, stack: ExitStack) -> Served:
    """The store URL of ``kind`` on a server of the test's own that can be stopped and
    started again (as a Served without its app URL yet)."""
    if kind in ("redis", "cachelib-redis"):
        redis = start_or_skip(start_redis)
        stack.callback(redis.stop)
        scheme = "cachelib+redis" if kind == "cachelib-redis" else "redis"
        return Served(kind, f"{scheme}://{redis.host}:{redis.port}/0", redis.stop,
                      redis.restart)
    if kind == "redis-sentinel":
        sentinel = start_or_skip(start_redis_sentinel)
        stack.callback(sentinel.stop)
        processes, port = sentinel._processes, sentinel.master_port

        def restart_master() -> None:  # the same port: the sentinel still names it
            processes.launch(_redis_argv(_binary("redis-server"), processes.dir), _redis_pings,
                             port=port)

        host, sentinel_port, name = sentinel
        return Served(kind, f"redis+sentinel://{host}:{sentinel_port}/{name}",
                      lambda: processes.kill(port), restart_master)
    if kind == "memcached":
        [(host, port)] = servers = start_or_skip(start_memcached, 1)
        stack.callback(lambda: servers.stop())

        def restart() -> None:
            nonlocal servers
            servers = start_memcached(1, port=port)

        return Served(kind, f"memcached://{host}:{port}", lambda: servers.stop(), restart)
    assert kind == "dynamodb"
    dynalite = start_or_skip(start_dynalite, persistent=True)  # keeps its table
    stack.callback(dynalite.stop)
    return Served(kind, f"dynamodb://127.0.0.1:{dynalite.port}?table=Sessions",
                  dynalite.kill, dynalite.restart)


STOPPABLE = ["redis", "redis-sentinel", "memcached", "cachelib-redis", "dynamodb"]


@pytest.fixture(scope="module", params=[*KINDS, "cachelib-redis"])
def served(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    kind = str(request.param)
    workdir = tmp_path_factory.mktemp(kind)
    with ExitStack() as stack:
        store = (_own_server(kind, stack) if kind in STOPPABLE
                 else _store(kind, stack, workdir))
        settings = {"SK_STORE": store.url, "SK_BREAKER_SECONDS": "0",
                    "SK_MAX_AGE": str(MAX_AGE), **AWS}
        with uvicorn(settings, workdir / "uvicorn.log") as url:
            store.url = url
            yield store


#: the other stores get these in test_asgi_uvicorn_every_store.py
on_cachelib = pytest.mark.parametrize("served", ["cachelib-redis"], indirect=True)


@on_cachelib
def test_cachelib_fifty_concurrent_writers_lose_nothing(served: Served) -> None:
    every_store.test_fifty_concurrent_writers_of_one_session_lose_nothing(served)


@on_cachelib
def test_cachelib_a_logout_during_a_slow_request_stays_a_logout(served: Served) -> None:
    every_store.test_a_logout_during_a_slow_request_stays_a_logout(served)


@on_cachelib
def test_cachelib_bad_cookies_give_a_fresh_session(served: Served) -> None:
    every_store.test_bad_cookies_give_a_fresh_session(served)


def _fresh(answer: requests.Response, sent: str) -> None:
    assert answer.status_code == 200, (sent[:40], answer.text[:300])
    assert answer.json() == FRESH, sent[:40]


def test_cookies_signed_with_another_key_give_a_fresh_session(served: Served) -> None:
    """Server stores put a bare id in the cookie; what a signing app under another key
    leaves in browsers (Starlette's signed session cookie, Flask-Session's signed id
    made from this very session's id) must not open anything."""
    token = new_session(served.url, secret="mine")
    other_key = secrets.token_hex(16)
    payload = base64.b64encode(json.dumps({"user": "admin"}).encode())
    for forged in (TimestampSigner([other_key]).sign(payload).decode(),
                   IdSigner(KeyRing(other_key)).sign(token)):
        _fresh(requests.get(f"{served.url}/view", headers={"Cookie": f"session={forged}"},
                            timeout=REQUEST_TIMEOUT), forged)
    assert view(served.url, token).json()["session"] == {"secret": "mine"}  # untouched


def test_an_expired_cookie_gives_a_fresh_session(served: Served) -> None:
    token = new_session(served.url, secret="mine")
    assert view(served.url, token).json()["session"] == {"secret": "mine"}
    time.sleep(MAX_AGE + 1)
    _fresh(view(served.url, token), token)


def test_any_cookie_header_answers_200_with_a_fresh_session(served: Served) -> None:
    token = new_session(served.url)

    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(junk=HEADER_TEXT, cut=st.integers(min_value=1, max_value=len(token) - 1))
    def any_header(junk: str, cut: int) -> None:
        for value in (junk, token[:cut] + junk, junk + token[cut:]):
            if value == token:
                continue
            sent = f"session={value}".encode("latin-1")
            answer = requests.get(f"{served.url}/view", headers={"Cookie": sent},
                                  timeout=REQUEST_TIMEOUT)
            _fresh(answer, value)

    any_header()


@pytest.mark.parametrize("served", STOPPABLE, indirect=True)
def test_a_stopped_server_answers_503_fast_and_session_free_requests_200(
        served: Served) -> None:
    assert served.stop is not None and served.start is not None
    token = new_session(served.url)
    served.stop()
    try:
        started = time.monotonic()
        down = view(served.url, token)
        took = time.monotonic() - started
        assert down.status_code == 503 and "set-cookie" not in down.headers
        assert took < OUTAGE_ANSWER, f"503 after {took:.1f}s"
        saving = requests.post(f"{served.url}/set", json={"b": 2}, timeout=REQUEST_TIMEOUT)
        assert saving.status_code == 503 and "set-cookie" not in saving.headers
        assert requests.get(f"{served.url}/health", timeout=REQUEST_TIMEOUT).text == "ok"
        cookieless = requests.get(f"{served.url}/view", timeout=REQUEST_TIMEOUT)
        assert cookieless.status_code == 200 and cookieless.json() == FRESH
    finally:
        served.start()
    deadline = time.monotonic() + 15
    while (fresh := requests.post(f"{served.url}/set", json={"c": 3},
                                  timeout=REQUEST_TIMEOUT)).status_code == 503:
        assert time.monotonic() < deadline, "still 503 after the store came back"
        time.sleep(0.2)
    assert fresh.status_code == 200, fresh.text
    assert view(served.url, fresh.cookies["session"]).json()["session"] == {"c": 3}
