"""The demo app under a real WSGI server (gunicorn, separate processes), for e2e tests.

``live_demo(env, workdir)`` starts gunicorn on a free loopback port with the given
environment, waits until the app answers, yields a :class:`LiveDemo` (base URL, log) and
kills the server afterwards, whatever happened.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from servers import require

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
LOG_TIMEOUT = 10.0
TEST_SECRET_KEY = "e2e-secret-key-" + "0123456789abcdef" * 2
_LISTENING = re.compile(r"Listening at: http://127\.0\.0\.1:(\d+)")

# Loaded before any fork: the child may only make one libc call (see tests/servers.py).
_libc = ctypes.CDLL(None) if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with_test_process() -> None:
    # A test process killed outright cannot clean up; the kernel then ends the server.
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass(frozen=True)
class LiveDemo:
    """A running demo: its base URL and the file its stderr (all logging) goes to."""

    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str) -> str:
        """The log once ``pattern`` (a regex) appears in it; workers log after answering."""
        deadline = time.monotonic() + LOG_TIMEOUT
        while True:
            text = self.log()
            if re.search(pattern, text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not logged within {LOG_TIMEOUT:.0f}s; "
                                     f"log tail:\n{text[-2000:]}")
            time.sleep(0.05)


def demo_env(overrides: Mapping[str, str], workdir: Path) -> dict[str, str]:
    """The server's environment: this one without session settings, then ``overrides``.

    Stores that keep files keep them in ``workdir`` unless the overrides say otherwise.
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SESSION_") and k not in ("SECRET_KEY", "SQLALCHEMY_DATABASE_URI")}
    env.update(
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        SECRET_KEY=TEST_SECRET_KEY,
        SESSION_SQLITE_PATH=str(workdir / "sessions.sqlite3"),
        SESSION_FILE_DIR=str(workdir / "flask_session"),
        DEMO_USERS_PATH=str(workdir / "demo-users.sqlite3"),
    )
    env.update(overrides)
    return env


def _gunicorn_argv(workers: int) -> list[str]:
    from gunicorn.config import KNOWN_SETTINGS

    argv = [sys.executable, "-m", "gunicorn", "demo.app:app",
            "--workers", str(workers), "--worker-class", "sync",
            # Port 0: the kernel picks a free port, read back from the log; no race.
            "--bind", "127.0.0.1:0", "--graceful-timeout", "5", "--timeout", "30"]
    if any(setting.name == "control_socket_disable" for setting in KNOWN_SETTINGS):
        # Newer gunicorns share one control socket path per user; parallel servers clash.
        argv.append("--no-control-socket")
    return argv


def _wait_until_serving(proc: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    url = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if url is None:
            found = _LISTENING.search(log_path.read_text(errors="replace"))
            url = f"http://127.0.0.1:{found.group(1)}" if found else None
        if url is not None:
            try:
                requests.get(url + "/getcookie", timeout=2)
                return url
            except requests.RequestException:
                pass
        time.sleep(0.1)
    tail = log_path.read_text(errors="replace")[-3000:]
    state = "exited" if proc.poll() is not None else f"did not answer in {STARTUP_TIMEOUT:.0f}s"
    raise RuntimeError(f"the demo under gunicorn {state}; its log ends with:\n{tail}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()  # gunicorn's master stops its workers on SIGTERM
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(STOP_TIMEOUT)


@contextmanager
def live_demo(env: Mapping[str, str], workdir: Path, *, workers: int = 2) -> Iterator[LiveDemo]:
    """Run ``demo.app:app`` under gunicorn with ``demo_env(env, workdir)``."""
    require(importlib.util.find_spec("gunicorn"), "gunicorn (pip install gunicorn)")
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "demo.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            _gunicorn_argv(workers), cwd=workdir, env=demo_env(env, workdir),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_test_process,
        )
    try:
        yield LiveDemo(_wait_until_serving(proc, log_path), log_path)
    finally:
        _stop(proc)
