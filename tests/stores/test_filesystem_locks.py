"""The filesystem store's lock waits a bounded time and blocks only its own session.

A process frozen (SIGSTOP) in the middle of a change holds that session's lock. Other
sessions' changes go on at once, reads of the frozen session too, and a change of the
frozen session gives up after the lock timeout (503 in an app) instead of waiting until
the frozen process is killed.
"""

from __future__ import annotations

import ctypes
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

import pytest
import requests
from servers import require

from sessionkeeper.errors import StoreUnavailable
from sessionkeeper.ids import storage_key
from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.base import SessionRecord, SessionUpdate
from sessionkeeper.stores.filesystem import DEFAULT_LOCK_TIMEOUT, FileSystemStore

T = TypeVar("T")
CODEC = ValueCodec()
LOCK_TIMEOUT = 0.5
#: how much later than the lock timeout a refused change may answer (a loaded machine)
SLACK = 2.0
#: an operation that waits for no lock answers within this (generous)
PROMPT = 1.0
APP_DIR = Path(__file__).parent
OTHER_SESSIONS = 24
_LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")
_libc = ctypes.CDLL(None) if sys.platform == "linux" else None  # loaded before any fork


def new_key() -> str:
    return "session:" + storage_key(secrets.token_urlsafe(32))


def record() -> SessionRecord:
    now = time.time()
    return SessionRecord(values={"n": CODEC.encode(1)}, created_at=now, accessed_at=now,
                         expires_at=now + 600, permanent=True)


def delta(name: str) -> SessionUpdate:
    now = time.time()
    return SessionUpdate(set_values={name: CODEC.encode(True)}, deleted_keys=set(),
                         replace=False, accessed_at=now, expires_at=now + 600, permanent=True)


def timed(call: Callable[[], T]) -> tuple[T, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


@contextmanager
def frozen_in_a_change(directory: Path, key: str) -> Iterator[None]:
    """Another process stopped (SIGSTOP) inside a change of ``key``, its lock held."""
    ready, told = os.pipe()
    pid = os.fork()
    if pid == 0:  # reports through the pipe and never returns into pytest
        try:
            signal.alarm(60)
            store = FileSystemStore(directory)
            encode = store.records.dumps

            def stuck(rec: SessionRecord) -> bytes:
                os.write(told, b"!")
                time.sleep(600)
                return encode(rec)

            store.records.dumps = stuck  # type: ignore[method-assign]
            store.update(key, delta("hold"))
        finally:
            os._exit(1)
    try:
        assert os.read(ready, 1) == b"!"
        os.kill(pid, signal.SIGSTOP)
        yield
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready)
        os.close(told)


def test_a_frozen_change_blocks_only_its_own_session_and_only_for_the_timeout(
    tmp_path: Path,
) -> None:
    store = FileSystemStore(tmp_path, lock_timeout=LOCK_TIMEOUT)
    held, other = new_key(), new_key()
    store.create(held, record())
    store.create(other, record())

    with frozen_in_a_change(tmp_path, held), ThreadPoolExecutor(1) as pool:
        assert timed(lambda: store.update(other, delta("x")))[1] < PROMPT
        assert timed(lambda: store.create(new_key(), record()))[1] < PROMPT
        assert timed(lambda: store.load(held, time.time()))[0] is not None
        # A refresh never waits: the record is there, it says so at once.
        touched, took = timed(lambda: store.touch(held, time.time(), time.time() + 900))
        assert touched is True and took < PROMPT

        for change in (lambda: store.update(held, delta("x")), lambda: store.delete(held)):
            waiting = pool.submit(timed, change)
            try:
                waiting.result(timeout=LOCK_TIMEOUT + SLACK)
            except StoreUnavailable:
                pass
            except FutureTimeout:
                pytest.fail(f"the change waited more than {LOCK_TIMEOUT + SLACK}s for the lock")
            else:
                pytest.fail("a change of a session whose lock is held did not give up")

    assert store.update(held, delta("after")) is True  # the holder is gone: free again


# -- the same through a real server: gunicorn workers, one of them frozen -------------
def _die_with_test_process() -> None:
    if _libc is not None:
        _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: the one libc call of the child


@contextmanager
def gunicorn(tmp_path: Path, pid_file: Path) -> Iterator[str]:
    require(subprocess.run([sys.executable, "-m", "gunicorn", "--version"],
                           capture_output=True).returncode == 0, "gunicorn")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_")}
    env.update(SECRET_KEY=secrets.token_hex(16), SESSION_FILE_DIR=str(tmp_path / "sessions"),
               HOLD_PID_FILE=str(pid_file), PYTHONUNBUFFERED="1")
    log_path = tmp_path / "gunicorn.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--chdir", str(APP_DIR), "-w", "3",
             "-k", "gthread", "--threads", "4", "--worker-connections", "4",
             "--keep-alive", "0", "-b", "127.0.0.1:0",
             # Longer than the test: gunicorn's watchdog must not end the frozen worker.
             "--timeout", "120", "filesystem_app:app"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_test_process,
        )
    try:
        yield _serving(server, log_path)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)


def _serving(server: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and server.poll() is None:
        found = _LISTENING.search(log_path.read_text(errors="replace"))
        if found:
            url = f"http://127.0.0.1:{found.group(1)}"
            try:
                if requests.get(f"{url}/health", timeout=5).text == "ok":
                    return url
            except requests.RequestException:
                pass  # workers still booting
        time.sleep(0.1)
    pytest.fail(f"gunicorn did not start:\n{log_path.read_text()[-3000:]}")


def _pid(path: Path) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return int(path.read_text())
        time.sleep(0.02)
    pytest.fail("no worker got to hold the session's lock")


def _set(url: str, cookie: str, name: str, timeout: float) -> int:
    return requests.post(f"{url}/set/{name}", cookies={"session": cookie},
                         timeout=timeout).status_code


def _quietly_set(url: str, cookie: str, name: str) -> None:
    with suppress(requests.RequestException):  # the worker serving it is killed at the end
        _set(url, cookie, name, timeout=300)


@pytest.mark.slow
def test_a_frozen_worker_holding_a_session_lock_answers_503_for_that_session_only(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "holder.pid"
    with gunicorn(tmp_path, pid_file) as url:
        def start() -> str:
            return requests.post(f"{url}/start", timeout=10).cookies["session"]

        held = start()
        others = [start() for _ in range(OTHER_SESSIONS)]
        threading.Thread(target=_quietly_set, args=(url, held, "hold"), daemon=True).start()
        holder = _pid(pid_file)
        os.kill(holder, signal.SIGSTOP)
        try:
            def change(cookie: str, wait: float = PROMPT * 3) -> tuple[int, float]:
                return timed(lambda: _set(url, cookie, "cart", timeout=wait))

            def read_held() -> tuple[requests.Response, float]:
                return timed(lambda: requests.get(f"{url}/keys", cookies={"session": held},
                                                  timeout=PROMPT * 3))

            with ThreadPoolExecutor(4) as pool:
                started = time.monotonic()
                same = pool.submit(change, held, DEFAULT_LOCK_TIMEOUT + SLACK + 1)
                for status, took in pool.map(change, others):
                    assert (status, took < PROMPT) == (200, True)
                for _ in range(5):
                    read, took = read_held()
                    assert (read.status_code, "started" in read.json()) == (200, True)
                    assert took < PROMPT
                # All of that while the change of the frozen session was still waiting.
                assert time.monotonic() - started < DEFAULT_LOCK_TIMEOUT
                status, took = same.result()
            assert status == 503
            assert DEFAULT_LOCK_TIMEOUT - 0.5 < took < DEFAULT_LOCK_TIMEOUT + SLACK
        finally:
            os.kill(holder, signal.SIGKILL)
