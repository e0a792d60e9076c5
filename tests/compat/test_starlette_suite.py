"""Starlette's own session-middleware tests, run unmodified on sessionkeeper's middleware.

The tests come from the sdist of the installed Starlette (see upstream.py), with its
pytest settings (warnings are errors). A conftest added beside them (Starlette's files
stay as they are) replaces ``starlette.middleware.sessions.SessionMiddleware`` with
``sessionkeeper.starlette.SessionMiddleware`` before the test module imports it, once
per store: Starlette's signed cookie, and the memory, SQLite and Redis stores. Every
test must pass except the departures listed below, each explained in
docs/compatibility.md; a listed departure that starts passing fails too.

``test_session_tracks_modification`` checks Starlette's ``Session`` class itself (it
builds one directly, no middleware): it runs, and passes, on Starlette's class.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import STRICT
from upstream import sdist, unpack_tests

KINDS = ("cookie", "memory", "sqlite", "redis")
TEST_FILE = "tests/middleware/test_session.py"
#: Starlette tests sessionkeeper fails on purpose (none: every departure is in
#: behaviour Starlette's tests do not pin down; see docs/compatibility.md)
DEPARTURES: dict[str, set[str]] = {kind: set() for kind in KINDS}
REDIS_URL = "redis://127.0.0.1:6379/0"
_RESULT = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (\S+\.py::\S+)", re.M)
_BUILT = re.compile(r"^sessionkeeper middlewares built: (\d+)$", re.M)

#: the conftest put beside Starlette's tests (nothing of Starlette's is changed)
SWAP = '''\
"""Starlette's SessionMiddleware, replaced by sessionkeeper's before any test imports it."""
import os
import uuid

import starlette.middleware.sessions as upstream

from sessionkeeper.starlette import SessionMiddleware

KIND = os.environ["SESSIONKEEPER_COMPAT_KIND"]
FOLDER = os.environ["SESSIONKEEPER_COMPAT_DIR"]
PREFIX = os.environ["SESSIONKEEPER_COMPAT_PREFIX"]
built = []


def _store():
    if KIND == "cookie":
        return None
    if KIND == "sqlite":  # a new database for every app a test builds
        return f"sqlite:///{FOLDER}/{uuid.uuid4().hex}.sqlite3"
    return {"memory": "memory://", "redis": os.environ["SESSIONKEEPER_COMPAT_REDIS"]}[KIND]


class SessionKeeperMiddleware(SessionMiddleware):
    def __init__(self, app, *args, **kwargs):
        super().__init__(app, *args, store=_store(), key_prefix=PREFIX, **kwargs)
        built.append(self)


upstream.SessionMiddleware = SessionKeeperMiddleware


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"sessionkeeper middlewares built: {len(built)}")
'''


@pytest.fixture(scope="module")
def starlette_tests(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tests = unpack_tests("starlette", tmp_path_factory.mktemp("starlette-sdist"))
    root = tests.parent
    test_file = root / TEST_FILE
    if not test_file.is_file():
        pytest.fail(f"Starlette's sdist no longer ships {TEST_FILE}")
    with tarfile.open(sdist("starlette")) as archive:  # its pytest settings
        (settings,) = [m for m in archive.getmembers()
                       if m.name.count("/") == 1 and m.name.endswith("/pyproject.toml")]
        archive.extractall(root.parent, members=[settings], filter="data")
    (root / "conftest.py").write_text(SWAP)
    return root


@pytest.fixture
def redis_prefix() -> str:
    from providers._shared import random_prefix

    return random_prefix("starlette")


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_starlettes_own_session_tests_pass(kind: str, starlette_tests: Path,
                                           redis_prefix: str, tmp_path: Path) -> None:
    client = None
    if kind == "redis":
        from providers.redis import delete_prefixed, machine_client

        client = machine_client()  # skips (fails in CI) without the machine's Redis
    env = dict(os.environ, SESSIONKEEPER_COMPAT_KIND=kind, SESSIONKEEPER_COMPAT_DIR=str(tmp_path),
               SESSIONKEEPER_COMPAT_PREFIX=redis_prefix, SESSIONKEEPER_COMPAT_REDIS=REDIS_URL)
    try:
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-q", TEST_FILE],
            cwd=starlette_tests, env=env, capture_output=True, text=True, timeout=600,
        )
    finally:
        if client is not None:
            delete_prefixed(client, redis_prefix)
            client.close()
    outcomes = {name: result for result, name in _RESULT.findall(run.stdout)}
    assert outcomes, run.stdout[-3000:] + run.stderr[-3000:]
    built = _BUILT.search(run.stdout)
    assert built is not None and int(built.group(1)) > 0, "the middleware was not replaced"
    failed = {name.split("[")[0] for name, result in outcomes.items() if result != "PASSED"}
    expected = DEPARTURES[kind]
    assert failed == expected, (
        f"unexpected: {sorted(failed - expected)}; now passing: {sorted(expected - failed)}"
        f"\n{run.stdout[-4000:]}")
    # 14 tests in Starlette 1.10, all but one on both asyncio and trio
    assert len(outcomes) >= 29 or not STRICT, sorted(outcomes)

