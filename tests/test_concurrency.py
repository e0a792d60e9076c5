"""Concurrent requests of one session under a real multi-process server lose nothing.

gunicorn runs tests/apps/concurrency_app.py in four worker processes of eight threads
each; 24 requests carrying the same session cookie each set a distinct key at the same
time, every one of them saving from the same stale state. Afterwards every key is there.
"""

from __future__ import annotations

import ctypes
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from servers import require

APP_DIR = Path(__file__).parent / "apps"
WORKERS = 4
# Room for every request at once; a process takes no more connections than it has
# threads, so none waits behind another in its queue and at least 3 processes serve.
THREADS = 8
REQUESTS = 24
LINGER = 1.5  # seconds each request holds its stale session before saving
STARTUP_TIMEOUT = 30.0
REQUEST_TIMEOUT = 30.0
_LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")

# Loaded before any fork: the child makes only this one libc call.
_libc = ctypes.CDLL(None) if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with_test_process() -> None:
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@contextmanager
def gunicorn(settings: dict[str, str], log_path: Path,
             app: str = "concurrency_app:app", workers: int = WORKERS) -> Iterator[str]:
    """Serve an app of tests/apps on a free loopback port; yields its base URL."""
    require(subprocess.run([sys.executable, "-m", "gunicorn", "--version"],
                           capture_output=True).returncode == 0, "gunicorn")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_")}
    env.update(settings, SECRET_KEY=secrets.token_hex(16), PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(APP_DIR.parents[1]),
                                                         env.get("PYTHONPATH")])))
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--chdir", str(APP_DIR), "-w", str(workers),
             "-k", "gthread", "--threads", str(THREADS), "--worker-connections", str(THREADS),
             # No keep-alive: a finished request's connection must not hold a slot.
             "--keep-alive", "0",
             "-b", "127.0.0.1:0", "--timeout", "30", app],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_test_process,  # one libc call, see above
        )
    try:
        yield _wait_until_serving(server, log_path)
    finally:
        _stop(server)


def _wait_until_serving(server: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"gunicorn exited at start-up:\n{log_path.read_text()[-3000:]}")
        found = _LISTENING.search(log_path.read_text(errors="replace"))
        if found:
            url = f"http://127.0.0.1:{found.group(1)}"
            try:
                if requests.get(f"{url}/health", timeout=5).text == "ok":
                    return url
            except requests.RequestException:
                pass  # still booting (or a busy machine): ask again
        time.sleep(0.1)
    pytest.fail(f"gunicorn did not answer within {STARTUP_TIMEOUT:.0f}s:\n"
                f"{log_path.read_text()[-3000:]}")


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)  # the master and its workers: its own group
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)


STORES = {
    # SESSION_TYPE unset: the embedded SQLite store.
    "sqlite": lambda folder: {"SESSION_SQLITE_PATH": str(folder / "sessions.sqlite3")},
    "filesystem": lambda folder: {"SESSION_TYPE": "filesystem",
                                  "SESSION_FILE_DIR": str(folder / "sessions")},
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", STORES)
def test_concurrent_requests_of_one_session_keep_every_key(kind: str, tmp_path: Path) -> None:
    with gunicorn(STORES[kind](tmp_path), tmp_path / "gunicorn.log") as url:
        started = requests.post(f"{url}/start", timeout=REQUEST_TIMEOUT)
        assert started.status_code == 200
        token = started.cookies["session"]
        keys = [f"key-{i:02d}" for i in range(REQUESTS)]

        def set_key(key: str) -> requests.Response:
            return requests.post(f"{url}/set/{key}", params={"linger": LINGER},
                                 cookies={"session": token}, timeout=REQUEST_TIMEOUT)

        with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
            begun = time.monotonic()
            responses = list(pool.map(set_key, keys, timeout=REQUEST_TIMEOUT * 2))
            took = time.monotonic() - begun

        # Every request lingers LINGER inside [begun, begun + took]; with took < 2 * LINGER
        # each lingering spans the instant begun + LINGER: all of them overlapped.
        assert took < 2 * LINGER, (
            f"{REQUESTS} requests took {took:.2f}s: some waited for others instead of "
            "running at the same time")

        assert [r.status_code for r in responses] == [200] * REQUESTS, \
            [r.text[:200] for r in responses if r.status_code != 200]
        # A save keeps the session's id: every cookie sent back is the same one.
        assert {r.cookies.get("session", token) for r in responses} == {token}

        stored = requests.get(f"{url}/keys", cookies={"session": token},
                              timeout=REQUEST_TIMEOUT).json()
        lost = sorted(set(keys) - set(stored))
        assert lost == [], f"{len(lost)} of {REQUESTS} concurrent writes were lost: {lost}"
        assert stored == sorted(["started", *keys])

        pids = requests.get(f"{url}/pids", cookies={"session": token},
                            timeout=REQUEST_TIMEOUT).json()
        # No process holds more than THREADS of the overlapping requests.
        assert len(set(pids.values())) >= REQUESTS // THREADS, \
            "the writes should come from several processes"
