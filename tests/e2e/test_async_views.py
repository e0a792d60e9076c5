"""Flask's ``async def`` views read and write the session, under a real WSGI server.

Flask runs each async view in an event loop on the request's thread (asgiref); the session
is loaded lazily inside it and saved after it, as for a plain view.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import pytest
import requests
from test_concurrency import gunicorn
from test_demo_http import STORES as DEMO_STORES

TIMEOUT = 30.0
STORES = ["sqlite", "redis", "cookie"]
SERVER_STORES = ["sqlite", "redis"]


def _serve(store: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp(f"async-{store}")
    with ExitStack() as stack:
        env = stack.enter_context(DEMO_STORES[store]())
        env = {**env, "SESSION_SQLITE_PATH": str(folder / "sessions.sqlite3"),
               "SESSION_KEY_PREFIX": f"async:{folder.name}:"}
        yield stack.enter_context(gunicorn(env, folder / "gunicorn.log", "race_app:app"))


@pytest.fixture(scope="module", params=STORES)
def app_url(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _serve(request.param, tmp_path_factory)


@pytest.fixture(scope="module", params=SERVER_STORES)
def server_app_url(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Server stores only: a cookie session is one value, and concurrent writers
    replace it, as in Flask."""
    yield from _serve(request.param, tmp_path_factory)


def test_async_views_keep_the_session_across_requests(app_url: str) -> None:
    with requests.Session() as browser:
        assert browser.post(f"{app_url}/login/ann", timeout=TIMEOUT).status_code == 200
        for item in ("tea", "cup"):
            added = browser.post(f"{app_url}/async/cart/{item}", timeout=TIMEOUT)
            assert added.status_code == 200
        me = browser.get(f"{app_url}/async/me", timeout=TIMEOUT).json()
    assert me == {"username": "ann", "cart": ["tea", "cup"], "user": "ann"}


def test_concurrent_async_views_of_one_session_keep_every_write(server_app_url: str) -> None:
    app_url = server_app_url
    cookie = requests.post(f"{app_url}/start", timeout=TIMEOUT).cookies["session"]
    keys = ["a", "b", "c", "d"]

    def set_key(key: str) -> int:
        return requests.post(f"{app_url}/async/set/{key}", params={"linger": 0.5},
                             cookies={"session": cookie}, timeout=TIMEOUT).status_code

    with ThreadPoolExecutor(len(keys)) as pool:
        assert list(pool.map(set_key, keys)) == [200] * len(keys)
    stored = requests.get(f"{app_url}/keys", cookies={"session": cookie}, timeout=TIMEOUT)
    assert stored.json() == sorted([*keys, "started"])
