"""The races a browser causes around a login, through a real multi-process server.

A browser applies Set-Cookie headers in the order responses arrive. A request it sent
before the login (a slow XHR, a read due a refresh, a second tab, a double-clicked form)
must neither lose its write nor answer with a cookie that signs the user out again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests
from test_concurrency import gunicorn

# The store environments of the demo's end-to-end tests: every store with its server.
from test_demo_http import STORES as DEMO_STORES

SERVER_STORES = [name for name in DEMO_STORES if name != "cookie"]
LINGER = 1.5  # how long the request in flight holds its session
TIMEOUT = 30.0


class Browser:
    """A cookie jar that applies each response's session cookie as it arrives."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.cookie: str | None = None

    def send(self, method: str, path: str, **params: object) -> requests.Response:
        cookies = {"session": self.cookie} if self.cookie else {}
        return requests.request(method, self.url + path, params=params, cookies=cookies,
                                timeout=TIMEOUT)

    def arrive(self, response: requests.Response) -> None:
        header = session_set_cookie(response)
        if header is None:
            return
        value = header.split(";", 1)[0].split("=", 1)[1]
        deleted = "max-age=0" in header.lower() or not value
        self.cookie = None if deleted else value

    def in_flight(self, pool: ThreadPoolExecutor, method: str, path: str,
                  **params: object) -> Future[requests.Response]:
        future = pool.submit(self.send, method, path, **params)
        time.sleep(0.3)  # the request has reached the server and loaded the session
        return future

    def me(self) -> dict[str, object]:
        return dict(self.send("GET", "/me").json())


def session_set_cookie(response: requests.Response) -> str | None:
    for header in response.raw.headers.getlist("Set-Cookie"):
        if header.startswith("session="):
            return str(header)
    return None


@pytest.fixture(scope="module", params=SERVER_STORES)
def app_url(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp(f"races-{request.param}")
    with ExitStack() as stack:
        env = stack.enter_context(DEMO_STORES[request.param]())
        env = {**env, "SESSION_SQLITE_PATH": str(folder / "sessions.sqlite3"),
               "SESSION_FILE_DIR": str(folder / "sessions"),
               "SESSION_KEY_PREFIX": f"race:{folder.name}:",
               # every read is due a refresh, so a slow read re-sends its cookie
               "SESSION_REFRESH_FRACTION": "0"}
        yield stack.enter_context(gunicorn(env, folder / "gunicorn.log", "race_app:app"))


@pytest.fixture
def browser(app_url: str) -> Browser:
    browser = Browser(app_url)
    browser.arrive(browser.send("POST", "/start"))
    assert browser.cookie is not None
    return browser


def _login_during(browser: Browser, method: str, path: str,
                  user: str) -> tuple[requests.Response, requests.Response]:
    """Send ``path`` and, while it is in flight, log in; the responses arrive in order."""
    with ThreadPoolExecutor(1) as pool:
        slow = browser.in_flight(pool, method, path, linger=LINGER)
        login = browser.send("POST", f"/login/{user}")
        browser.arrive(login)
        slow_response = slow.result(TIMEOUT)
        browser.arrive(slow_response)
    return login, slow_response


def test_a_write_in_flight_during_login_lands_in_the_new_session(browser: Browser) -> None:
    old = browser.cookie
    login, cart = _login_during(browser, "POST", "/cart/book", "ann")
    assert login.status_code == 200 and cart.status_code == 200
    assert browser.cookie not in (None, old)
    # The slow response leaves the browser's new cookie alone.
    assert session_set_cookie(cart) is None
    assert browser.me() == {"username": "ann", "cart": ["book"], "user": "ann"}


def test_a_write_in_flight_during_flask_login_lands_in_the_new_session(
        browser: Browser) -> None:
    with ThreadPoolExecutor(1) as pool:
        cart = browser.in_flight(pool, "POST", "/cart/kit", linger=LINGER)
        browser.arrive(browser.send("POST", "/flask-login/flo"))
        slow = cart.result(TIMEOUT)
        browser.arrive(slow)
    assert session_set_cookie(slow) is None
    assert browser.me() == {"username": "flo", "cart": ["kit"], "user": "flo"}


def test_a_read_due_a_refresh_does_not_resend_the_rotated_id(browser: Browser) -> None:
    _, read = _login_during(browser, "GET", "/read", "bob")
    assert read.status_code == 200
    assert session_set_cookie(read) is None
    assert browser.me()["user"] == "bob"


def test_regenerate_during_a_write_keeps_the_write(browser: Browser) -> None:
    with ThreadPoolExecutor(1) as pool:
        cart = browser.in_flight(pool, "POST", "/cart/pen", linger=LINGER)
        browser.arrive(browser.send("POST", "/regenerate"))
        browser.arrive(cart.result(TIMEOUT))
    assert browser.me()["cart"] == ["pen"]


def test_a_write_made_while_the_login_lingers_is_kept(browser: Browser) -> None:
    """The login loaded the session before the write landed: it moves what is stored
    at the moment of the rotation, not what it loaded."""
    with ThreadPoolExecutor(1) as pool:
        login = browser.in_flight(pool, "POST", "/login/cy", linger=LINGER)
        browser.arrive(browser.send("POST", "/cart/mug"))
        browser.arrive(login.result(TIMEOUT))
    assert browser.me() == {"username": "cy", "cart": ["mug"], "user": "cy"}


@pytest.mark.parametrize("first_arrives", [0, 1])
def test_a_double_submitted_login_leaves_one_session(browser: Browser, app_url: str,
                                                     first_arrives: int) -> None:
    user = f"dee{first_arrives}"
    with ThreadPoolExecutor(2) as pool:
        submits = [pool.submit(browser.send, "POST", f"/login/{user}", linger=0.5)
                   for _ in range(2)]
        responses = [future.result(TIMEOUT) for future in submits]
    assert [r.status_code for r in responses] == [200, 200]
    # Whichever response the browser keeps (it drops the first when resubmitting),
    # it ends signed in, and the user has one session, not an orphan.
    for response in (responses[first_arrives], responses[1 - first_arrives]):
        browser.arrive(response)
    assert browser.me()["user"] == user
    assert requests.get(f"{app_url}/devices/{user}", timeout=TIMEOUT).json() == 1


def test_a_request_sent_with_the_old_id_after_login_is_anonymous_and_harmless(
        browser: Browser) -> None:
    old = browser.cookie
    browser.arrive(browser.send("POST", "/login/eve"))
    stale = Browser(browser.url)
    stale.cookie = old
    # It does not see the new session (the old id may have been planted: fixation) ...
    assert stale.me() == {"username": None, "cart": [], "user": None}
    # ... and its responses never clear or replace the new cookie.
    write = stale.send("POST", "/cart/hat")
    assert write.status_code == 200 and session_set_cookie(write) is None
    assert browser.me() == {"username": "eve", "cart": [], "user": "eve"}


def test_without_a_grace_window_the_old_id_dies_at_once(tmp_path: Path) -> None:
    with gunicorn({"SESSION_SQLITE_PATH": str(tmp_path / "s.sqlite3"),
                   "SESSION_ROTATION_GRACE": "0"}, tmp_path / "g.log", "race_app:app") as url:
        browser = Browser(url)
        browser.arrive(browser.send("POST", "/start"))
        old = browser.cookie
        browser.arrive(browser.send("POST", "/login/fay"))
        stale = Browser(url)
        stale.cookie = old
        response = stale.send("GET", "/me")
        assert response.json()["user"] is None
        # Unknown at once: the stale cookie is cleared like any unknown one.
        assert stale.send("POST", "/cart/x").status_code == 200
        assert browser.me()["user"] == "fay"


def test_signing_out_the_other_devices_keeps_this_one_despite_a_request_in_flight(
        tmp_path: Path) -> None:
    """Cookie sessions: the slower response of the device that signed the others out
    must not re-issue the binding that was just revoked."""
    with gunicorn({"SESSION_TYPE": "cookie", "SESSION_SQLITE_PATH": str(tmp_path / "r.db"),
                   "SESSION_REFRESH_FRACTION": "0"},
                  tmp_path / "g.log", "race_app:app") as url:
        this, other = Browser(url), Browser(url)
        for device in (this, other):
            device.arrive(device.send("POST", "/login/gus"))
        with ThreadPoolExecutor(1) as pool:
            cart = this.in_flight(pool, "POST", "/cart/cap", linger=LINGER)
            this.arrive(this.send("POST", "/sign-out-others"))
            slow = cart.result(TIMEOUT)
            this.arrive(slow)
        assert slow.status_code == 200 and session_set_cookie(slow) is None
        assert this.me()["user"] == "gus"
        assert other.me()["user"] is None
