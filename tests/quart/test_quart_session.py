"""``sessionkeeper.quart`` on real stores: what a Quart app sees of its session across
requests, the cookies it gets, what each request costs the store, and the answers to
tampered cookies, failed requests and store outages."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import provider
from counting import CountingStore
from quart.testing.connections import WebsocketDisconnectError
from quart_app import make_app
from quart_helpers import Browser, in_event_loop, set_cookies
from servers import start_or_skip, start_redis

from sessionkeeper.stores.base import SessionRecord

SERVER_KINDS = ("memory", "sqlite", "filesystem", "redis", "sqlalchemy_postgresql",
                "memcached")
COOKIE_KINDS = {"cookie": {"SESSION_TYPE": "cookie"},
                "cookie-encrypted": {"SESSION_TYPE": "cookie", "SESSION_COOKIE_ENCRYPT": True}}


@pytest.fixture(params=[*SERVER_KINDS, *COOKIE_KINDS])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    kind = str(request.param)
    if kind in COOKIE_KINDS:
        yield dict(COOKIE_KINDS[kind], SESSION_PERMANENT=True)
        return
    with provider(kind).flask_config(tmp_path) as made:
        yield made


@pytest.fixture(params=SERVER_KINDS)
def server_config(request: pytest.FixtureRequest,
                  tmp_path: Path) -> Iterator[dict[str, Any]]:
    with provider(str(request.param)).flask_config(tmp_path) as made:
        yield made


class ThreadRecordingStore(CountingStore):
    """Counts store calls and remembers the threads they ran on."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.threads: set[int] = set()

    def load(self, key: str, now: float) -> SessionRecord | None:
        self.threads.add(threading.get_ident())
        return super().load(key, now)

    def create(self, key: str, record: SessionRecord) -> None:
        self.threads.add(threading.get_ident())
        super().create(key, record)


def recording_store(app: Any) -> ThreadRecordingStore:
    backend = app.extensions["sessionkeeper"].backend
    backend.store = ThreadRecordingStore(backend.store)
    return backend.store  # type: ignore[no-any-return]


# -- the session across requests -----------------------------------------------------
@in_event_loop
async def test_set_get_pop_del_clear_across_requests(config: dict[str, Any],
                                                      tmp_path: Path) -> None:
    browser = Browser(make_app(config, tmp_path))
    created = await browser.post("/set", json={"a": 1, "b": [1, 2], "c": "x"})
    assert created.status_code == 200 and browser.cookie
    assert (await (await browser.get("/view")).get_json())["session"] == {
        "a": 1, "b": [1, 2], "c": "x"}
    assert (await (await browser.post("/pop/a")).get_json()) == {"popped": 1}
    await browser.post("/del/b")
    assert (await (await browser.get("/view")).get_json())["session"] == {"c": "x"}
    cleared = await browser.post("/clear")
    assert browser.cookie is None  # an emptied session deletes its cookie
    assert "Expires=Thu, 01 Jan 1970" in set_cookies(cleared)[0]
    assert (await (await browser.get("/view")).get_json())["session"] == {}


@in_event_loop
async def test_login_rotates_the_id_keeps_the_data_and_logout_ends_it(
        server_config: dict[str, Any], tmp_path: Path) -> None:
    app = make_app(server_config, tmp_path)
    browser = Browser(app)
    await browser.post("/set", json={"theme": "dark"})
    before = browser.cookie
    logged_in = await (await browser.post("/login/u1")).get_json()
    assert logged_in == {"session": {"theme": "dark"}, "user": "u1"}
    assert browser.cookie and browser.cookie != before
    assert (await (await browser.get("/view")).get_json()) == {
        "session": {"theme": "dark"}, "user": "u1"}

    stale = Browser(app)  # the id from before the login no longer opens the session
    stale.cookie = before
    assert (await (await stale.get("/view")).get_json()) == {"session": {}, "user": None}

    after = browser.cookie
    logout = await browser.post("/logout")
    assert "Expires=Thu, 01 Jan 1970" in set_cookies(logout)[0] and browser.cookie is None
    replay = Browser(app)  # the record is gone: the old cookie opens nothing
    replay.cookie = after
    assert (await (await replay.get("/view")).get_json()) == {"session": {}, "user": None}


@in_event_loop
async def test_a_cookie_session_login_binds_the_user(tmp_path: Path) -> None:
    browser = Browser(make_app({"SESSION_TYPE": "cookie"}, tmp_path))
    await browser.post("/set", json={"n": 1})
    await browser.post("/login/u7")
    assert (await (await browser.get("/view")).get_json()) == {"session": {"n": 1},
                                                               "user": "u7"}
    await browser.post("/logout")
    assert browser.cookie is None


# -- cookies ---------------------------------------------------------------------------
@in_event_loop
async def test_a_permanent_session_cookie_lives_permanent_session_lifetime(
        config: dict[str, Any], tmp_path: Path) -> None:
    app = make_app(dict(config, PERMANENT_SESSION_LIFETIME=timedelta(hours=2)), tmp_path)
    header = set_cookies(await Browser(app).post("/set", json={"a": 1}))[0]
    assert "Max-Age=7200" in header and "Expires=" in header
    assert "HttpOnly" in header and "Path=/" in header


@in_event_loop
async def test_cookie_settings_are_quarts(server_config: dict[str, Any],
                                          tmp_path: Path) -> None:
    app = make_app(dict(server_config, SESSION_PERMANENT=False, SESSION_COOKIE_NAME="sid",
                        SESSION_COOKIE_SECURE=True, SESSION_COOKIE_SAMESITE="Strict",
                        SESSION_COOKIE_DOMAIN="example.org"), tmp_path)
    browser = Browser(app, cookie_name="sid")
    header = set_cookies(await browser.post("/set", json={"a": 1}))[0]
    assert header.startswith("sid=")
    assert "Max-Age" not in header and "Expires" not in header  # a browser-session cookie
    for part in ("Domain=example.org", "Secure", "HttpOnly", "Path=/", "SameSite=Strict"):
        assert part in header
    assert (await (await browser.get("/view")).get_json())["session"] == {"a": 1}


@in_event_loop
async def test_a_quart_cookie_session_keeps_working(tmp_path: Path) -> None:
    """SESSION_TYPE='cookie' reads and writes Quart's own signed cookie."""
    from quart import Quart, session

    plain = Quart("plain")
    plain.config["SECRET_KEY"] = "k" * 32

    @plain.post("/set")
    async def set_value() -> str:
        session["from"] = "quart"
        return "ok"

    browser = Browser(plain)
    await browser.post("/set")
    app = make_app({"SESSION_TYPE": "cookie", "SECRET_KEY": "k" * 32}, tmp_path)
    browser.client = app.test_client(use_cookies=False)
    assert (await (await browser.get("/view")).get_json())["session"] == {"from": "quart"}


# -- store work --------------------------------------------------------------------------
@in_event_loop
async def test_what_each_request_costs_the_store(server_config: dict[str, Any],
                                                 tmp_path: Path) -> None:
    app = make_app(server_config, tmp_path)
    store = recording_store(app)
    browser = Browser(app)
    untouched = await browser.get("/health")  # no cookie, no use: nothing at all
    assert "Set-Cookie" not in untouched.headers and "Vary" not in untouched.headers
    assert store.calls == {}

    await browser.post("/set", json={"a": 1})
    assert store.calls == {"create": 1}

    store.reset()  # a cookie but no use: the read made before the view, nothing else
    untouched = await browser.get("/health")
    assert "Set-Cookie" not in untouched.headers and "Vary" not in untouched.headers
    assert store.calls == {"load": 1}

    store.reset()
    read = await browser.get("/view")
    assert read.headers["Vary"] == "Cookie" and "Set-Cookie" not in read.headers
    assert store.calls == {"load": 1}

    store.reset()
    await browser.post("/set", json={"b": 2})
    assert store.calls == {"load": 1, "update": 1}


@in_event_loop
async def test_store_calls_run_off_the_event_loop(tmp_path: Path) -> None:
    app = make_app({"SESSION_TYPE": "sqlite",
                    "SESSION_SQLITE_PATH": str(tmp_path / "s.sqlite3")}, tmp_path)
    store = recording_store(app)
    browser = Browser(app)
    await browser.post("/set", json={"a": 1})
    await browser.get("/view")
    assert store.calls == {"create": 1, "load": 1}
    assert store.threads and threading.get_ident() not in store.threads


# -- bad input, failed requests, outages ------------------------------------------------
@in_event_loop
async def test_a_tampered_cookie_starts_a_fresh_session(config: dict[str, Any],
                                                         tmp_path: Path) -> None:
    app = make_app(dict(config, SESSION_USE_SIGNER=True), tmp_path)
    browser = Browser(app)
    await browser.post("/set", json={"a": 1})
    assert browser.cookie
    for forged in (browser.cookie[:-2] + ("AA" if browser.cookie[-2:] != "AA" else "BB"),
                   "x" * 43, "not a cookie", ""):
        other = Browser(app)
        other.cookie = forged
        response = await other.get("/view")
        assert response.status_code == 200
        assert (await response.get_json()) == {"session": {}, "user": None}
    assert (await (await browser.get("/view")).get_json())["session"] == {"a": 1}


@in_event_loop
async def test_nothing_is_saved_when_the_request_fails(config: dict[str, Any],
                                                       tmp_path: Path) -> None:
    browser = Browser(make_app(config, tmp_path))
    await browser.post("/set", json={"a": 1})
    failed = await browser.post("/fail")
    assert failed.status_code == 500 and "Set-Cookie" not in failed.headers
    assert failed.headers["Vary"] == "Cookie"
    assert (await (await browser.get("/view")).get_json())["session"] == {"a": 1}


@in_event_loop
async def test_a_store_outage_answers_503(tmp_path: Path) -> None:
    redis = start_or_skip(start_redis)
    try:
        app = make_app({"SESSION_TYPE": "redis", "SESSION_REDIS": redis.url,
                        "SESSION_BREAKER_SECONDS": 0, "BREAK_STORE": redis.stop}, tmp_path)
        browser = Browser(app)
        await browser.post("/login/u1")
        assert browser.cookie

        # Down at save time: the response becomes a 503 and sets no cookie.
        broken = await browser.post("/set-then-break")
        assert broken.status_code == 503 and "Set-Cookie" not in broken.headers

        # Down when the session is read: the view that uses it answers 503...
        down = await browser.get("/view")
        assert down.status_code == 503 and "Set-Cookie" not in down.headers
        assert "Service Unavailable" in await down.get_data(as_text=True)
        # ...one that never uses it still works.
        assert (await browser.get("/health")).status_code == 200

        redis.restart()  # back, but empty: the user starts over, no 500 on the way
        assert (await (await browser.get("/view")).get_json()) == {"session": {},
                                                                   "user": None}
    finally:
        redis.stop()


@in_event_loop
async def test_the_apps_own_outage_handler_answers(tmp_path: Path) -> None:
    from sessionkeeper.errors import StoreUnavailable

    redis = start_or_skip(start_redis)
    try:
        from quart import Quart

        from sessionkeeper.quart import Session

        app = Quart("own_handler", instance_path=str(tmp_path))

        @app.errorhandler(StoreUnavailable)
        async def maintenance(error: StoreUnavailable) -> tuple[str, int]:
            return "maintenance", 599

        app.config.update(SECRET_KEY="k", SESSION_TYPE="redis", SESSION_REDIS=redis.url)
        Session(app)
        from quart import session

        @app.get("/")
        async def index() -> str:
            return str(session.get("a"))

        redis.stop()
        response = await app.test_client().get("/", headers={"Cookie": "session=" + "a" * 43})
        assert response.status_code == 599
    finally:
        redis.stop()


# -- websockets and devices ----------------------------------------------------------
async def closed_by_the_app(socket: Any) -> None:
    """Wait for the app to close the socket: it does once its handler returned and
    the session was saved (a client closing first cancels the handler, unsaved)."""
    with pytest.raises(WebsocketDisconnectError):
        await socket.receive()


@in_event_loop
async def test_a_websocket_saves_an_existing_server_session(tmp_path: Path) -> None:
    app = make_app({"SESSION_TYPE": "sqlite",
                    "SESSION_SQLITE_PATH": str(tmp_path / "s.sqlite3")}, tmp_path)
    browser = Browser(app)
    await browser.post("/set", json={"count": 1})
    headers = {"Cookie": f"session={browser.cookie}"}
    async with app.test_client().websocket("/ws", headers=headers) as socket:
        await socket.send("count")
        assert await socket.receive() == "2"
        await socket.send("stop")
        await closed_by_the_app(socket)
    assert (await (await browser.get("/view")).get_json())["session"] == {"count": 2}


@in_event_loop
async def test_a_websocket_cannot_start_a_session(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    app = make_app({"SESSION_TYPE": "memory"}, tmp_path)
    store = recording_store(app)
    async with app.test_client().websocket("/ws") as socket:
        await socket.send("count")
        assert await socket.receive() == "1"
        await socket.send("stop")
        await closed_by_the_app(socket)
    assert store.writes == 0 and "only an HTTP response can set" in caplog.text


@in_event_loop
async def test_a_websocket_saves_at_once_and_sees_a_logout_made_elsewhere(
        tmp_path: Path) -> None:
    app = make_app({"SESSION_TYPE": "sqlite",
                    "SESSION_SQLITE_PATH": str(tmp_path / "s.sqlite3")}, tmp_path)
    browser = Browser(app)
    await browser.post("/set", json={"count": 1})
    headers = {"Cookie": f"session={browser.cookie}"}
    async with app.test_client().websocket("/ws-saved", headers=headers) as socket:
        await socket.send("count")
        assert await socket.receive() == "2"
        # saved while the socket is still open: another tab sees it now
        assert (await (await browser.get("/view")).get_json())["session"] == {"count": 2}
        await socket.send("check")
        assert await socket.receive() == "alive"
        await browser.post("/logout")
        await socket.send("check")
        assert await socket.receive() == "ended"


@in_event_loop
async def test_a_websocket_cannot_save_a_cookie_session(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = make_app({"SESSION_TYPE": "cookie"}, tmp_path)
    browser = Browser(app)
    await browser.post("/set", json={"count": 1})
    headers = {"Cookie": f"session={browser.cookie}"}
    async with app.test_client().websocket("/ws-saved", headers=headers) as socket:
        await socket.send("count")
        await closed_by_the_app(socket)  # the handler failed: no count came back
    assert ("a cookie session cannot be saved on an open websocket" in caplog.text
            and "a SESSION_TYPE that keeps sessions on the server" in caplog.text)


@in_event_loop
async def test_login_records_the_device(tmp_path: Path) -> None:
    app = make_app({"SESSION_TYPE": "memory", "SESSION_DEVICE_INFO": ["user_agent", "ip"]},
                   tmp_path)
    browser = Browser(app)
    await browser.post("/login/u1", headers={"User-Agent": "Test/1.0"})
    backend = app.extensions["sessionkeeper"].backend
    session = backend.open(browser.cookie)
    assert session.user_id == "u1"
    # Quart's test client reports its peer address as "<local>"
    assert session.device == {"user_agent": "Test/1.0", "ip": "<local>"}


@in_event_loop
async def test_api_clients_carry_the_token_in_a_header(tmp_path: Path) -> None:
    app = make_app({"SESSION_TYPE": "memory", "SESSION_HEADER_NAME": "X-Session"}, tmp_path)
    client = app.test_client(use_cookies=False)
    started = await client.post("/set", json={"a": 1}, headers={"X-Session": ""})
    token = started.headers["X-Session"]
    assert token and "Set-Cookie" not in started.headers
    read = await client.get("/view", headers={"X-Session": token})
    assert (await read.get_json())["session"] == {"a": 1}
    assert set(read.headers["Vary"].split(", ")) == {"Cookie", "X-Session"}


@in_event_loop
async def test_an_outage_met_by_an_after_request_hook_answers_503(tmp_path: Path) -> None:
    from quart import session

    redis = start_or_skip(start_redis)
    try:
        app = make_app({"SESSION_TYPE": "redis", "SESSION_REDIS": redis.url,
                        "SESSION_BREAKER_SECONDS": 0}, tmp_path)

        @app.after_request
        async def remember(response: Any) -> Any:
            response.headers["X-User"] = str(session.get("user"))  # as login helpers do
            return response

        browser = Browser(app)
        await browser.post("/set", json={"user": "u1"})
        assert (await browser.get("/health")).headers["X-User"] == "u1"
        redis.stop()
        down = await browser.get("/health")
        assert down.status_code == 503 and "Set-Cookie" not in down.headers
    finally:
        redis.stop()


def test_configuration_is_checked_at_start_up(tmp_path: Path) -> None:
    from sessionkeeper.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="SESSION_STORE_THREADS"):
        make_app({"SESSION_TYPE": "memory", "SESSION_STORE_THREADS": 0}, tmp_path)
    with pytest.raises(ConfigurationError, match="SECRET_KEY"):
        make_app({"SESSION_TYPE": "cookie", "SECRET_KEY": None}, tmp_path)
    with pytest.raises(ConfigurationError, match="SESSION_TYPE"):
        make_app({"SESSION_TYPE": "nosuchstore"}, tmp_path)
