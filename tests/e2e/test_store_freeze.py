"""A frozen store under load: the circuit breaker keeps the rest of the app serving.

gunicorn runs the race app in one worker of 8 threads; Redis is frozen (SIGSTOP) while 16 clients
keep using their sessions and one client keeps calling a view that never touches the
session. Without the breaker every session request holds a thread for the whole store
timeout and the session-free view queues behind them; with it, session requests answer
503 at once after the first timeout, and everything recovers on its own.
"""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from servers import RedisServer, start_or_skip, start_redis
from test_concurrency import gunicorn

CLIENTS = 16
FREEZE = 6.0  # seconds Redis stays frozen
STORE_TIMEOUT = 1.0
BREAKER = 2.0
THINK = 0.05  # a client's pause between requests


def _pid(server: RedisServer) -> int:
    return server._processes.procs[server.port].pid  # type: ignore[attr-defined]


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = start_or_skip(start_redis)
    yield server
    os.kill(_pid(server), signal.SIGCONT)  # a stopped process cannot act on SIGTERM
    server.stop()


def _load(url: str, cookies: list[str], until: float,
          ) -> tuple[list[float], list[tuple[int, float]]]:
    """Hammer the app until ``until``: session-free latencies, (status, latency) of
    session requests."""
    free: list[float] = []
    used: list[tuple[int, float]] = []
    lock = threading.Lock()

    def session_client(cookie: str) -> None:
        while time.monotonic() < until:
            began = time.monotonic()
            try:
                status = requests.get(f"{url}/read", cookies={"session": cookie},
                                      timeout=10).status_code
            except requests.RequestException:
                status = 0
            with lock:
                used.append((status, time.monotonic() - began))
            time.sleep(THINK)

    def free_client() -> None:
        while time.monotonic() < until:
            began = time.monotonic()
            requests.get(f"{url}/health", timeout=30)
            free.append(time.monotonic() - began)
            time.sleep(0.01)

    with ThreadPoolExecutor(CLIENTS + 1) as pool:
        jobs = [pool.submit(session_client, cookie) for cookie in cookies]
        jobs.append(pool.submit(free_client))
        for job in jobs:
            job.result()
    return free, used


@pytest.mark.slow
def test_a_frozen_store_does_not_starve_views_without_the_session(
        redis_server: RedisServer, tmp_path: Path) -> None:
    settings = {"SESSION_TYPE": "redis", "SESSION_REDIS": redis_server.url,
                "SESSION_REDIS_TIMEOUT": str(STORE_TIMEOUT),
                "SESSION_BREAKER_SECONDS": str(BREAKER)}
    with gunicorn(settings, tmp_path / "gunicorn.log", "race_app:app",
                  workers=1) as url:
        # One worker of THREADS threads, fewer than the session clients: the shape in
        # which a frozen store starves everything else.
        cookies = []
        for _ in range(CLIENTS):
            response = requests.post(f"{url}/login/ida", timeout=10)
            cookies.append(response.cookies["session"])

        os.kill(_pid(redis_server), signal.SIGSTOP)
        try:
            free, used = _load(url, cookies, time.monotonic() + FREEZE)
        finally:
            os.kill(_pid(redis_server), signal.SIGCONT)

        # Views without the session kept their pace while the store was frozen.
        assert len(free) >= FREEZE / 0.1, f"only {len(free)} session-free requests served"
        assert statistics.median(free) < 0.05, statistics.median(free)
        assert max(free) < 2 * STORE_TIMEOUT + 0.5, max(free)
        # Session requests failed with the documented 503, nearly all of them at once.
        statuses = {status for status, _ in used}
        assert statuses == {503}, statuses
        # Only the requests already waiting when a worker's circuit opened (or probed)
        # waited for the store timeout; the rest were answered at once.
        latencies = [took for _, took in used]
        assert statistics.median(latencies) < 0.05, statistics.median(latencies)
        assert max(latencies) < STORE_TIMEOUT + 1.0, max(latencies)
        assert len(used) > CLIENTS * FREEZE / (4 * THINK), len(used)

        # The store is back: after one breaker period every session works again, and
        # nobody was logged out by the outage.
        time.sleep(BREAKER + 0.5)
        for cookie in cookies:
            deadline = time.monotonic() + 5
            while True:
                response = requests.get(f"{url}/me", cookies={"session": cookie}, timeout=10)
                if response.status_code == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert response.status_code == 200
            assert response.json()["user"] == "ida"
