"""Timeouts, header tokens and cookie attributes over real HTTP, on every store.

The demo runs under gunicorn with short idle and absolute timeouts; real clock time
passes between requests (a few seconds per store), so what is checked is exactly what a
browser or API client would meet.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests
from live_server import LiveDemo
from test_demo_http import (
    STORES,
    cookie_value,
    demo_on_store,
    log_in,
    set_cookie_headers,
    status_line,
)

# Seconds. Cookie sessions sign whole-second timestamps (as Flask's do), so every wait
# keeps a second of slack.
IDLE = 2.0
ABSOLUTE = 4.0
HEADER = "X-Session-Token"
LOGGED_IN = "Logged in as Tom"
LOGGED_OUT = "You are not logged in"


@pytest.fixture(scope="module", params=list(STORES))
def demo(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDemo]:
    with demo_on_store(request.param, tmp_path_factory,
                       SESSION_IDLE_TIMEOUT=str(IDLE), SESSION_ABSOLUTE_TIMEOUT=str(ABSOLUTE),
                       SESSION_HEADER_NAME=HEADER) as server:
        yield server


def whoami(client: requests.Session, url: str) -> str:
    return status_line(client.get(f"{url}/"))


def test_an_idle_session_times_out_but_activity_keeps_it(demo: LiveDemo) -> None:
    client = requests.Session()
    log_in(client, demo.url)
    # Reads only, each well within the idle timeout of the one before, for longer than
    # the idle timeout in all: activity alone keeps the session (for cookie sessions
    # too, whose signed time must be refreshed by reads).
    for _ in range(5):
        time.sleep(0.6)
        assert whoami(client, demo.url) == LOGGED_IN
    time.sleep(IDLE + 1.1)
    assert whoami(client, demo.url) == LOGGED_OUT


def test_an_active_session_still_ends_at_the_absolute_timeout(demo: LiveDemo) -> None:
    client = requests.Session()
    started = time.monotonic()
    log_in(client, demo.url)
    while time.monotonic() - started < ABSOLUTE - 1.2:
        assert whoami(client, demo.url) == LOGGED_IN
        time.sleep(0.4)  # never idle long enough for the idle timeout
    time.sleep(max(0.0, ABSOLUTE + 0.3 - (time.monotonic() - started)))
    assert whoami(client, demo.url) == LOGGED_OUT


def test_an_api_client_can_carry_the_session_in_a_header(demo: LiveDemo) -> None:
    api = requests.Session()
    api.headers[HEADER] = ""  # asks for a session carried in the header
    login = api.post(f"{demo.url}/login", data={"username": "Tom", "password": "123"},
                     allow_redirects=False)
    token = login.headers.get(HEADER)
    assert token, login.headers
    assert "Set-Cookie" not in login.headers
    api.headers[HEADER] = token
    assert whoami(api, demo.url) == LOGGED_IN
    assert not api.cookies  # no cookie was ever needed
    assert whoami(requests.Session(), demo.url) == LOGGED_OUT  # others see nothing


def test_session_cookies_are_httponly_and_samesite_lax(demo: LiveDemo) -> None:
    client = requests.Session()
    response = log_in(client, demo.url)
    set_cookie = set_cookie_headers(response)["session"]
    attributes = {part.strip().split("=")[0].lower() for part in set_cookie.split(";")}
    assert {"httponly", "samesite", "path"} <= attributes
    assert "SameSite=Lax" in set_cookie


def test_an_id_in_the_url_is_never_accepted(demo: LiveDemo) -> None:
    client = requests.Session()
    log_in(client, demo.url)
    token = cookie_value(client, "session")
    stranger = requests.get(f"{demo.url}/", params={"session": token})
    assert status_line(stranger) == LOGGED_OUT
    stranger = requests.post(f"{demo.url}/", data={"session": token})
    assert stranger.status_code in (200, 405)
    if stranger.status_code == 200:
        assert status_line(stranger) == LOGGED_OUT
