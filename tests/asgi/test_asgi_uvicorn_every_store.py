"""Every server store behind the ASGI middleware, through uvicorn (two worker processes)
on loopback, as browsers use it: 50 concurrent requests of one session, each setting its
own key, lose nothing; a logout that finishes while a slow request of the same session
is still running stays a logout; bad cookies give a fresh session, never a 500; and a
store whose server stops answers 503 while requests without a session keep working.

Each store gets servers or tables of its own (private Redis, Sentinel, memcached and
dynalite, random SQL tables, a temporary directory), so no test sees another's data.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from providers import sqlalchemy_mariadb, sqlalchemy_postgresql
from providers.mongodb import NO_SERVER as NO_MONGODB
from servers import (
    mongodb_url,
    start_dynalite,
    start_memcached,
    start_or_skip,
    start_redis,
    start_redis_sentinel,
)
from test_asgi_uvicorn import REQUEST_TIMEOUT, uvicorn

WRITERS = 50
LINGER = 1.5  # seconds each writer holds its stale session before saving
AWS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
       "AWS_DEFAULT_REGION": "us-east-1"}  # dynalite takes any credentials
KINDS = ["redis", "redis-sentinel", "memcached", "postgresql", "mariadb",
         "sqlalchemy-sqlite", "file", "dynamodb", "mongodb"]
#: the stores whose server is the test's own, to stop (the databases are shared; SQLite
#: and files are local, their failures are tested in test_asgi_uvicorn.py)
STOPPABLE = ["redis", "memcached", "dynamodb"]

pytestmark = pytest.mark.slow


@dataclass
class Served:
    """The app on one store under uvicorn, and how to stop and start its server (None:
    a shared server the tests leave alone)."""

    kind: str
    url: str
    stop: Callable[[], None] | None = None
    start: Callable[[], None] | None = None


def _dropped_afterwards(stack: ExitStack, server_url: str, table: str) -> None:
    def drop() -> None:
        engine = sa.create_engine(server_url)
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()

    stack.callback(drop)


def _store(kind: str, stack: ExitStack, workdir: Path) -> Served:
    """The store URL for ``kind`` (as a Served without its app URL yet)."""
    table = f"sk_{secrets.token_hex(4)}"
    if kind == "redis":
        redis = start_or_skip(start_redis)
        stack.callback(redis.stop)
        return Served(kind, redis.url, redis.stop, redis.restart)
    if kind == "redis-sentinel":
        sentinel = start_or_skip(start_redis_sentinel)
        stack.callback(sentinel.stop)
        host, port, name = sentinel
        return Served(kind, f"redis+sentinel://{host}:{port}/{name}")
    if kind == "memcached":
        [(host, port)] = servers = start_or_skip(start_memcached, 1)
        stack.callback(lambda: servers.stop())

        def restart() -> None:
            nonlocal servers
            servers = start_memcached(1, port=port)

        return Served(kind, f"memcached://{host}:{port}", lambda: servers.stop(), restart)
    if kind in ("postgresql", "mariadb"):
        provider = sqlalchemy_postgresql if kind == "postgresql" else sqlalchemy_mariadb
        server_url = provider.url()
        _dropped_afterwards(stack, server_url, table)
        return Served(kind, f"{server_url}?table={table}")
    if kind == "sqlalchemy-sqlite":
        return Served(kind, f"sqlite+pysqlite:///{workdir}/sessions.sqlite3")
    if kind == "file":
        return Served(kind, f"file://{workdir}/sessions")
    if kind == "dynamodb":
        dynalite = start_or_skip(start_dynalite)
        stack.callback(dynalite.stop)
        # (restarted in memory it would come back without the table: stop only)
        return Served(kind, f"dynamodb://127.0.0.1:{dynalite.port}?table=Sessions",
                      dynalite.kill)
    url = mongodb_url()
    if url is None:  # the one server CI may lack: no package source ships mongod
        pytest.skip(NO_MONGODB)
    return Served(kind, f"{url.rstrip('/')}/sk_{secrets.token_hex(4)}")


@pytest.fixture(scope="module", params=KINDS)
def served(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp(str(request.param))
    with ExitStack() as stack:
        store = _store(str(request.param), stack, workdir)
        settings = {"SK_STORE": store.url, "SK_BREAKER_SECONDS": "0", **AWS}
        with uvicorn(settings, workdir / "uvicorn.log") as url:
            store.url = url
            yield store


def new_session(url: str, **values: object) -> str:
    answer = requests.post(f"{url}/set", json=values or {"start": True},
                           timeout=REQUEST_TIMEOUT)
    assert answer.status_code == 200, answer.text
    return answer.cookies["session"]


def view(url: str, token: str) -> requests.Response:
    return requests.get(f"{url}/view", cookies={"session": token}, timeout=REQUEST_TIMEOUT)


def test_fifty_concurrent_writers_of_one_session_lose_nothing(served: Served) -> None:
    token = new_session(served.url)
    keys = [f"key-{i:02d}" for i in range(WRITERS)]

    def set_key(key: str) -> requests.Response:
        return requests.post(f"{served.url}/set/{key}", params={"linger": LINGER},
                             cookies={"session": token}, timeout=REQUEST_TIMEOUT)

    with ThreadPoolExecutor(max_workers=WRITERS) as pool:
        answers = list(pool.map(set_key, keys, timeout=REQUEST_TIMEOUT * 2))

    assert [a.status_code for a in answers] == [200] * WRITERS
    assert {a.cookies.get("session", token) for a in answers} == {token}
    assert sorted(view(served.url, token).json()["session"]) == sorted([*keys, "start"])


def test_a_logout_during_a_slow_request_stays_a_logout(served: Served) -> None:
    browser = requests.Session()
    browser.post(f"{served.url}/login", json={"user": "laowang"}, timeout=REQUEST_TIMEOUT)
    token = browser.cookies["session"]
    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(browser.post, f"{served.url}/set/late",  # a slow XHR
                           params={"linger": LINGER}, timeout=REQUEST_TIMEOUT)
        time.sleep(LINGER / 3)  # it has read the session and is working
        assert browser.post(f"{served.url}/logout", timeout=REQUEST_TIMEOUT).ok
        late = slow.result()
    assert late.status_code == 200
    # What the browser ends with: signed out, its old token dead, nothing resurrected.
    assert browser.get(f"{served.url}/view").json() == {"session": {}, "user": None}
    assert view(served.url, token).json() == {"session": {}, "user": None}


def test_bad_cookies_give_a_fresh_session(served: Served) -> None:
    token = new_session(served.url, secret="mine")
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (forged, "%%%;garbled", "x" * 4500, secrets.token_urlsafe(32), ""):
        answer = requests.get(f"{served.url}/view", timeout=REQUEST_TIMEOUT,
                              headers={"Cookie": f"session={bad}"})
        assert answer.status_code == 200, (bad[:20], answer.text[:200])
        assert answer.json() == {"session": {}, "user": None}
    assert view(served.url, token).json()["session"] == {"secret": "mine"}  # untouched


@pytest.mark.parametrize("served", STOPPABLE, indirect=True)
def test_a_stopped_store_answers_503_and_requests_without_a_session_keep_working(
        served: Served) -> None:
    assert served.stop is not None
    token = new_session(served.url)
    served.stop()
    try:
        started = time.monotonic()
        down = view(served.url, token)
        assert down.status_code == 503 and "set-cookie" not in down.headers
        assert time.monotonic() - started < 10
        assert requests.get(f"{served.url}/health", timeout=REQUEST_TIMEOUT).text == "ok"
    finally:
        if served.start is not None:
            served.start()
    if served.start is None:
        return
    deadline = time.monotonic() + 15
    while (fresh := requests.post(f"{served.url}/set", json={"c": 3},
                                  timeout=REQUEST_TIMEOUT)).status_code == 503:
        assert time.monotonic() < deadline, "still 503 after the store came back"
        time.sleep(0.2)
    assert fresh.status_code == 200 and "session" in fresh.cookies
