"""End to end under a real ASGI server: uvicorn (two worker processes) on loopback.

On Starlette's cookie, the SQLite store and Redis: a login is kept across requests and a
logout ends it; 24 concurrent requests of one session, each setting its own key from the
same stale state, lose nothing; a store outage answers 503 (and the app recovers).
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from servers import RedisServer, require, start_or_skip, start_redis

APP_DIR = Path(__file__).parent
STARTUP_TIMEOUT = 30.0
REQUEST_TIMEOUT = 30.0
REQUESTS = 24
LINGER = 1.5  # seconds each concurrent request holds its stale session before saving
_RUNNING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")

_libc = ctypes.CDLL(None) if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with_test_process() -> None:
    if _libc is not None:  # one libc call in the forked child
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@contextmanager
def uvicorn(settings: dict[str, str], log_path: Path, workers: int = 2,
            target: str = "asgi_app:app") -> Iterator[str]:
    """Serve ``target`` of tests/asgi/ (asgi_app.py's app) on a free loopback port;
    yields its base URL."""
    require(subprocess.run([sys.executable, "-m", "uvicorn", "--version"],
                           capture_output=True).returncode == 0, "uvicorn")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SK_")}
    env.update(settings, SK_SECRET_KEY=os.urandom(16).hex(), PYTHONUNBUFFERED="1")
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", target, "--app-dir", str(APP_DIR),
             "--host", "127.0.0.1", "--port", "0", "--workers", str(workers),
             "--no-access-log", "--timeout-graceful-shutdown", "5"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_test_process,
        )
    try:
        yield _wait_until_serving(server, log_path)
    finally:
        _stop(server)


def _wait_until_serving(server: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"uvicorn exited at start-up:\n{log_path.read_text()[-3000:]}")
        found = _RUNNING.search(log_path.read_text(errors="replace"))
        if found:
            url = f"http://127.0.0.1:{found.group(1)}"
            try:
                if requests.get(f"{url}/health", timeout=5).text == "ok":
                    return url
            except requests.RequestException:
                pass  # workers still starting
        time.sleep(0.1)
    pytest.fail(f"uvicorn did not answer within {STARTUP_TIMEOUT:.0f}s:\n"
                f"{log_path.read_text()[-3000:]}")


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)  # uvicorn and its workers: their own group
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = start_or_skip(start_redis)
    yield server
    server.stop()


@pytest.fixture(params=["cookie", "sqlite", "redis"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """(kind, base URL) of the app on that store; a Redis of the test's own."""
    kind = str(request.param)
    store: Any = "cookie"
    if kind == "sqlite":
        store = f"sqlite:///{tmp_path}/sessions.sqlite3"
    elif kind == "redis":
        store = request.getfixturevalue("redis_server").url
    with uvicorn({"SK_STORE": store}, tmp_path / "uvicorn.log") as url:
        yield kind, url


@pytest.mark.slow
def test_a_login_is_kept_across_requests_and_a_logout_ends_it(
        served: tuple[str, str]) -> None:
    kind, url = served
    browser = requests.Session()
    assert browser.post(f"{url}/set", json={"theme": "dark"}).status_code == 200
    logged_in = browser.post(f"{url}/login", json={"user": "laowang"})
    assert logged_in.json() == {"session": {"theme": "dark"}, "user": "laowang"}
    token = browser.cookies["session"]
    for _ in range(3):  # on either worker process
        assert browser.get(f"{url}/view").json() == {"session": {"theme": "dark"},
                                                      "user": "laowang"}

    logged_out = browser.post(f"{url}/logout")
    assert logged_out.headers["set-cookie"].startswith("session=null; path=/; expires=")
    assert "session" not in browser.cookies
    assert browser.get(f"{url}/view").json() == {"session": {}, "user": None}
    if kind != "cookie":  # a server-side session is gone, whoever replays its cookie
        replayed = requests.get(f"{url}/view", cookies={"session": token})
        assert replayed.json() == {"session": {}, "user": None}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_concurrent_writers_of_one_session_lose_nothing(kind: str, tmp_path: Path,
                                                        request: pytest.FixtureRequest) -> None:
    store = (f"sqlite:///{tmp_path}/sessions.sqlite3" if kind == "sqlite"
             else request.getfixturevalue("redis_server").url)
    with uvicorn({"SK_STORE": store}, tmp_path / "uvicorn.log") as url:
        token = requests.post(f"{url}/set", json={"start": True}).cookies["session"]
        keys = [f"key-{i:02d}" for i in range(REQUESTS)]

        def set_key(key: str) -> requests.Response:
            return requests.post(f"{url}/set/{key}", params={"linger": LINGER},
                                 cookies={"session": token}, timeout=REQUEST_TIMEOUT)

        with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
            begun = time.monotonic()
            responses = list(pool.map(set_key, keys, timeout=REQUEST_TIMEOUT * 2))
            took = time.monotonic() - begun

        assert took < 2 * LINGER, f"{REQUESTS} requests took {took:.2f}s: they queued"
        assert [r.status_code for r in responses] == [200] * REQUESTS
        assert {r.cookies.get("session", token) for r in responses} == {token}
        stored = requests.get(f"{url}/view", cookies={"session": token}).json()["session"]
        assert sorted(stored) == sorted([*keys, "start"])


@pytest.mark.slow
def test_a_redis_outage_answers_503_and_the_app_recovers(redis_server: RedisServer,
                                                         tmp_path: Path) -> None:
    settings = {"SK_STORE": redis_server.url, "SK_BREAKER_SECONDS": "1"}
    with uvicorn(settings, tmp_path / "uvicorn.log") as url:
        token = requests.post(f"{url}/set", json={"a": 1}).cookies["session"]
        redis_server.stop()
        loading = requests.get(f"{url}/view", cookies={"session": token})
        assert loading.status_code == 503 and "set-cookie" not in loading.headers
        saving = requests.post(f"{url}/set", json={"b": 2})
        assert saving.status_code == 503 and "set-cookie" not in saving.headers
        assert requests.get(f"{url}/health").text == "ok"  # no session, no store

        redis_server.restart()  # empty: the old session is gone, new ones work
        deadline = time.monotonic() + 10
        while (fresh := requests.post(f"{url}/set", json={"c": 3})).status_code == 503:
            assert time.monotonic() < deadline, "still 503 after the store came back"
            time.sleep(0.2)
        assert fresh.status_code == 200 and "session" in fresh.cookies


@pytest.mark.slow
def test_a_locked_sqlite_database_answers_503(tmp_path: Path) -> None:
    path = tmp_path / "sessions.sqlite3"
    settings = {"SK_STORE": f"sqlite:///{path}", "SK_SQLITE_TIMEOUT": "0.3",
                "SK_BREAKER_SECONDS": "0"}
    with uvicorn(settings, tmp_path / "uvicorn.log") as url:
        token = requests.post(f"{url}/set", json={"a": 1}).cookies["session"]
        locker = sqlite3.connect(path, isolation_level=None)
        try:
            locker.execute("BEGIN EXCLUSIVE")
            locked = requests.post(f"{url}/set", json={"b": 2}, cookies={"session": token})
            assert locked.status_code == 503 and "set-cookie" not in locked.headers
        finally:
            locker.close()
        after = requests.get(f"{url}/view", cookies={"session": token}).json()["session"]
        assert after == {"a": 1}
