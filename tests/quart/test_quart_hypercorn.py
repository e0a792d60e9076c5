"""End to end under a real ASGI server: Hypercorn (Quart's own server), two worker
processes on loopback, on the SQLite store and on Redis: a login is kept across
requests whichever worker answers, and a logout ends it."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from providers._shared import random_prefix
from providers.redis import URL, delete_prefixed, machine_client
from servers import unused_port

TESTS = Path(__file__).parents[1]
STARTUP_TIMEOUT = 30.0


@contextmanager
def hypercorn(settings: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """Serve quart_app.py's app with two workers; yields its base URL."""
    port = unused_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SK_")}
    env.update(settings, SK_SECRET_KEY=secrets.token_hex(16), SK_INSTANCE_PATH=str(tmp_path),
               PYTHONPATH=os.pathsep.join([str(TESTS / "quart"), str(TESTS)]))
    log_path = tmp_path / "hypercorn.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "hypercorn", "quart_app:app", "--bind",
             f"127.0.0.1:{port}", "--workers", "2"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield _wait_until_serving(server, f"http://127.0.0.1:{port}", log_path)
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # hypercorn and its workers
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


def _wait_until_serving(server: subprocess.Popen[bytes], url: str, log_path: Path) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"hypercorn exited at start-up:\n{log_path.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/health", timeout=5).text == "ok":
                return url
        except requests.RequestException:
            time.sleep(0.1)  # workers still starting
    pytest.fail(f"hypercorn did not answer within {STARTUP_TIMEOUT:.0f}s:\n"
                f"{log_path.read_text()[-3000:]}")


@pytest.fixture(params=["sqlite", "redis"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    kind = str(request.param)
    if kind == "sqlite":
        with hypercorn({"SK_SESSION_TYPE": "sqlite",
                        "SK_SESSION_SQLITE_PATH": str(tmp_path / "sessions.sqlite3")},
                       tmp_path) as url:
            yield url
        return
    client = machine_client()
    prefix = random_prefix("quart")
    try:
        with hypercorn({"SK_SESSION_TYPE": "redis", "SK_SESSION_REDIS": URL,
                        "SK_SESSION_KEY_PREFIX": prefix}, tmp_path) as url:
            yield url
    finally:
        delete_prefixed(client, prefix)
        client.close()


@pytest.mark.slow
def test_a_login_is_kept_across_requests_and_a_logout_ends_it(served: str) -> None:
    url = served
    browser = requests.Session()
    assert browser.post(f"{url}/set", json={"theme": "dark"}).status_code == 200
    logged_in = browser.post(f"{url}/login/laowang")
    assert logged_in.json() == {"session": {"theme": "dark"}, "user": "laowang"}
    token = browser.cookies["session"]
    for _ in range(6):  # on either worker process
        assert browser.get(f"{url}/view").json() == {"session": {"theme": "dark"},
                                                      "user": "laowang"}
    browser.post(f"{url}/logout")
    assert "session" not in browser.cookies
    assert browser.get(f"{url}/view").json() == {"session": {}, "user": None}
    replayed = requests.get(f"{url}/view", cookies={"session": token})
    assert replayed.json() == {"session": {}, "user": None}
