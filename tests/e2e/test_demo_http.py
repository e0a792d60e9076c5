"""The demo app over real HTTP: gunicorn with two worker processes, a real cookie jar.

Every example of the tutorials the demo is built from, as a user of a browser (here
``requests.Session``) sees it: status codes, Set-Cookie attributes, what the jar keeps,
page text, JSON, the server's log and the stored sessions. The session scenarios run on
every store the demo can use; cookie, error-page and hook scenarios on the default one.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from email.utils import parsedate_to_datetime
from http.cookiejar import Cookie
from pathlib import Path

import pytest
import requests
from live_server import LiveDemo, live_demo
from servers import mongodb_url, require, start_memcached, start_or_skip, start_redis

THIRTY_ONE_DAYS = 31 * 24 * 3600  # PERMANENT_SESSION_LIFETIME's default, 2678400
NOT_FOUND_HEADING = "<h1>I can&#39;t find my way home</h1>"
SERVER_ERROR_HEADING = ("<h1>Server error, please contact the administrator. "
                        "The administrator&#39;s phone number is 1111</h1>")
SIGNED_OUT_ELSEWHERE = "You were signed out from another device"
LOGOUT_FORM = re.compile(r'<form method="post" action="/logout">')
POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


# -- the demo on each store --------------------------------------------------------------
@contextmanager
def _no_server() -> Iterator[dict[str, str]]:
    yield {}


@contextmanager
def _filesystem() -> Iterator[dict[str, str]]:
    yield {"SESSION_TYPE": "filesystem"}


@contextmanager
def _cookie() -> Iterator[dict[str, str]]:
    yield {"SESSION_TYPE": "cookie"}


@contextmanager
def _redis() -> Iterator[dict[str, str]]:
    server = start_or_skip(start_redis)
    try:
        yield {"SESSION_TYPE": "redis", "SESSION_REDIS": server.url}
    finally:
        server.stop()


@contextmanager
def _memcached() -> Iterator[dict[str, str]]:
    servers = start_or_skip(start_memcached, 1)
    try:
        host, port = servers[0]
        yield {"SESSION_TYPE": "memcached", "SESSION_MEMCACHED": f"{host}:{port}"}
    finally:
        servers.stop()


def _postgres_answers() -> bool:
    try:
        import psycopg2
    except ImportError:
        return False
    try:
        psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test",
                         connect_timeout=3).close()
    except psycopg2.Error:
        return False
    return True


@contextmanager
def _sqlalchemy_postgresql() -> Iterator[dict[str, str]]:
    require(_postgres_answers(), "PostgreSQL on 127.0.0.1:5432 (user postgres, db test)")
    import sqlalchemy

    table = f"e2e_sessions_{secrets.token_hex(4)}"  # no other test sees this table
    try:
        yield {"SESSION_TYPE": "sqlalchemy", "SESSION_SQLALCHEMY": POSTGRES_URL,
               "SESSION_SQLALCHEMY_TABLE": table}
    finally:
        engine = sqlalchemy.create_engine(POSTGRES_URL)
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f'DROP TABLE IF EXISTS "{table}"'))
        engine.dispose()


@contextmanager
def _mongodb() -> Iterator[dict[str, str]]:
    url = start_or_skip(mongodb_url)
    if url is None:
        # A plain skip, not require(): no package source ships mongod, and CI tolerates
        # skips that name MONGODB_URL.
        pytest.skip("no MongoDB server: set MONGODB_URL to a real server")
    import pymongo

    database, collection = "sessionkeeper_e2e", f"sessions_{secrets.token_hex(4)}"
    try:
        yield {"SESSION_TYPE": "mongodb", "SESSION_MONGODB": url,
               "SESSION_MONGODB_DB": database, "SESSION_MONGODB_COLLECT": collection}
    finally:
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
            url, serverSelectionTimeoutMS=5000)
        client[database].drop_collection(collection)
        client.close()


STORES = {
    "sqlite": _no_server,  # SESSION_TYPE unset: the embedded default
    "filesystem": _filesystem,
    "cookie": _cookie,
    "redis": _redis,
    "memcached": _memcached,
    "sqlalchemy-postgresql": _sqlalchemy_postgresql,
    "mongodb": _mongodb,
}


@contextmanager
def demo_on_store(store: str, tmp_path_factory: pytest.TempPathFactory,
                  **settings: str) -> Iterator[LiveDemo]:
    """The demo under gunicorn on ``store`` (a key of STORES), with its own key prefix
    and any further SESSION_* ``settings``."""
    store_env: AbstractContextManager[dict[str, str]] = STORES[store]()
    with store_env as env:
        workdir = tmp_path_factory.mktemp(f"demo-{store}")
        with live_demo({**env, "SESSION_KEY_PREFIX": f"e2e:{secrets.token_hex(4)}:",
                        **settings}, workdir) as server:
            yield server


@pytest.fixture(scope="module", params=list(STORES))
def demo(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDemo]:
    """The demo on one store, shared by this module's tests of that store."""
    with demo_on_store(request.param, tmp_path_factory) as server:
        yield server


@pytest.fixture(scope="module")
def default_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDemo]:
    """The demo as it starts with no session settings: the embedded SQLite store."""
    with live_demo({}, tmp_path_factory.mktemp("demo-default")) as server:
        yield server


# -- helpers -------------------------------------------------------------------------
def set_cookie_headers(response: requests.Response) -> dict[str, str]:
    """Each Set-Cookie header of a response, by cookie name."""
    headers = response.raw.headers.getlist("Set-Cookie")
    return {header.split("=", 1)[0]: header for header in headers}


def attribute(header: str, name: str) -> str | None:
    for part in header.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == name.lower():
            return value
    return None


def jar_cookie(client: requests.Session, name: str) -> Cookie | None:
    return next((cookie for cookie in client.cookies if cookie.name == name), None)


def cookie_value(client: requests.Session, name: str) -> str:
    cookie = jar_cookie(client, name)
    assert cookie is not None and cookie.value is not None, f"no {name} cookie in the jar"
    return cookie.value


def status_line(page: requests.Response) -> str:
    found = re.search(r'<p id="status">(.*?)</p>', page.text)
    assert found, f"no status on the page:\n{page.text}"
    return found.group(1)


def log_out(client: requests.Session, url: str) -> requests.Response:
    """The log-out button: a form that POSTs to /logout."""
    return client.post(f"{url}/logout")


def flashes(page: requests.Response) -> list[str]:
    found = re.search(r'<ul class="flashes">(.*?)</ul>', page.text, re.DOTALL)
    return re.findall(r"<li>(.*?)</li>", found.group(1)) if found else []


def log_in(client: requests.Session, url: str, username: str = "Tom",
           password: str = "123") -> requests.Response:
    response = client.post(f"{url}/login", data={"username": username, "password": password},
                           allow_redirects=False)
    assert response.status_code == 302, response.text
    assert response.headers["Location"] == "/"
    return response


def cart_items(page: requests.Response) -> list[str]:
    assert page.status_code == 200, page.text
    listed = re.search(r'<ol id="cart">(.*?)</ol>', page.text, re.DOTALL)
    if listed is None:
        assert "Your cart is empty." in page.text
        return []
    return re.findall(r"<li>(.*?)</li>", listed.group(1))


# -- sessions, on every store ----------------------------------------------------------------
def test_login_form_keeps_the_user_logged_in_until_logout(demo: LiveDemo) -> None:
    client = requests.Session()
    first = client.get(f"{demo.url}/")
    assert status_line(first) == "You are not logged in"
    assert 'href="/login"' in first.text
    assert not LOGOUT_FORM.search(first.text)  # no log-out button for nobody
    assert jar_cookie(client, "session") is None  # an unused session sets no cookie

    form = client.get(f"{demo.url}/login")
    assert form.status_code == 200
    assert 'name="username"' in form.text and 'name="password"' in form.text

    login = log_in(client, demo.url)
    session_header = set_cookie_headers(login)["session"]
    assert attribute(session_header, "Max-Age") is None  # ends with the browser
    assert attribute(session_header, "HttpOnly") is not None
    cookie = jar_cookie(client, "session")
    assert cookie is not None and cookie.expires is None

    home = client.get(f"{demo.url}/")
    assert status_line(home) == "Logged in as Tom"
    assert len(LOGOUT_FORM.findall(home.text)) == 2  # in the navigation and on the page
    assert 'href="/logout"' not in home.text  # a button, not a link
    assert home.text.count("You were logged in") == 1
    again = client.get(f"{demo.url}/")
    assert status_line(again) == "Logged in as Tom"
    assert "You were logged in" not in again.text  # a flash is shown once

    after_logout = log_out(client, demo.url)
    assert after_logout.url == f"{demo.url}/"
    assert status_line(after_logout) == "You are not logged in"
    assert after_logout.text.count("You were logged out") == 1
    assert not LOGOUT_FORM.search(after_logout.text)
    # The flash was the last thing in the session: showing it emptied it, and an empty
    # session's cookie is deleted.
    assert jar_cookie(client, "session") is None
    assert status_line(client.get(f"{demo.url}/")) == "You are not logged in"


def test_a_cookie_copied_before_logout(demo: LiveDemo) -> None:
    client = requests.Session()
    log_in(client, demo.url)
    stolen = cookie_value(client, "session")
    log_out(client, demo.url)
    replay = requests.get(f"{demo.url}/", cookies={"session": stolen})
    # The demo logs out with session.logout(): server-side stores delete the record,
    # and cookie sessions revoke the login's handle, so a copy is worthless on both.
    assert status_line(replay) == "You are not logged in"


def test_logout_by_get_is_refused_so_a_link_elsewhere_cannot_log_anyone_out(
        demo: LiveDemo) -> None:
    client = requests.Session()
    log_in(client, demo.url)
    for link in ("/logout", "/logout?next=/"):
        # What an <a href> or <img src> on another site makes the browser send.
        answer = client.get(f"{demo.url}{link}", allow_redirects=False)
        assert answer.status_code == 405
        assert answer.headers["Allow"].split(", ").count("POST") == 1
        assert "GET" not in answer.headers["Allow"]
        assert "<title>Method not allowed</title>" in answer.text
    assert status_line(client.get(f"{demo.url}/")) == "Logged in as Tom"
    assert log_out(client, demo.url).status_code == 200
    assert status_line(client.get(f"{demo.url}/")) == "You are not logged in"


def test_a_device_signed_out_from_another_is_told_so_once(demo: LiveDemo) -> None:
    laptop, phone = requests.Session(), requests.Session()
    log_in(laptop, demo.url)
    log_in(phone, demo.url)
    ended = laptop.post(f"{demo.url}/devices/revoke-others", data={"password": "123"})
    assert ended.status_code == 200 and ended.url == f"{demo.url}/devices"
    assert SIGNED_OUT_ELSEWHERE not in ended.text  # the laptop is the one that did it

    told = phone.get(f"{demo.url}/")
    assert told.status_code == 200
    assert status_line(told) == "You are not logged in"
    assert flashes(told) == [SIGNED_OUT_ELSEWHERE]
    assert jar_cookie(phone, "signed_in") is None and jar_cookie(phone, "session") is None
    assert flashes(phone.get(f"{demo.url}/")) == []  # said once
    # Logging in again works as ever; logging out here says nothing of other devices.
    log_in(phone, demo.url)
    assert status_line(phone.get(f"{demo.url}/")) == "Logged in as Tom"
    assert flashes(log_out(phone, demo.url)) == ["You were logged out"]
    assert flashes(phone.get(f"{demo.url}/")) == []
    assert status_line(laptop.get(f"{demo.url}/")) == "Logged in as Tom"
    assert SIGNED_OUT_ELSEWHERE not in log_out(laptop, demo.url).text


def test_a_bad_cookie_of_a_logged_in_browser_is_not_called_a_sign_out(
        demo: LiveDemo) -> None:
    client = requests.Session()
    log_in(client, demo.url)
    cookie = jar_cookie(client, "session")
    assert cookie is not None
    client.cookies.set("session", "garbage", domain=cookie.domain, path=cookie.path)
    page = client.get(f"{demo.url}/")
    assert status_line(page) == "You are not logged in"
    assert SIGNED_OUT_ELSEWHERE not in page.text


def test_login_gives_a_new_session_id_and_keeps_the_data(demo: LiveDemo) -> None:
    client = requests.Session()
    client.get(f"{demo.url}/cart/add/apple")
    before = cookie_value(client, "session")
    log_in(client, demo.url)
    after = cookie_value(client, "session")
    assert after != before
    assert cart_items(client.get(f"{demo.url}/cart")) == ["apple"]
    # Someone who planted the earlier cookie is not logged in by the victim's login.
    planted = requests.get(f"{demo.url}/", cookies={"session": before})
    assert status_line(planted) == "You are not logged in"


def test_wrong_or_missing_credentials_do_not_log_in(demo: LiveDemo) -> None:
    client = requests.Session()
    wrong = client.post(f"{demo.url}/login", data={"username": "Tom", "password": "1234"})
    assert wrong.status_code == 200
    assert "Login failed!" in wrong.text
    assert 'value="Tom"' in wrong.text  # the form keeps the name typed
    unknown = client.post(f"{demo.url}/login", data={"username": "Nobody", "password": "123"})
    assert "Login failed!" in unknown.text
    empty = client.post(f"{demo.url}/login", data={})
    assert empty.status_code == 200 and "Login failed!" in empty.text
    assert jar_cookie(client, "session") is None
    assert status_line(client.get(f"{demo.url}/")) == "You are not logged in"


def test_login_form_escapes_what_was_typed(demo: LiveDemo) -> None:
    typed = '"><script>alert(1)</script>'
    page = requests.post(f"{demo.url}/login", data={"username": typed, "password": "x"})
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;" in page.text


def test_set_get_and_delete_session_values(demo: LiveDemo) -> None:
    client = requests.Session()
    empty = client.get(f"{demo.url}/get_session")
    assert empty.json() == {"username": None, "info": None}

    assert client.get(f"{demo.url}/set_session").status_code == 200
    stored = client.get(f"{demo.url}/get_session")
    assert stored.headers["Content-Type"] == "application/json"
    # The nested dict comes back with its types: 16 is still a number.
    assert stored.json() == {"username": "xiaoming", "info": {"name": "xiaohong", "age": 16}}
    assert status_line(client.get(f"{demo.url}/")) == "Logged in as xiaoming"

    assert client.get(f"{demo.url}/del_session").status_code == 200
    assert client.get(f"{demo.url}/get_session").json() == {"username": None, "info": None}
    assert jar_cookie(client, "session") is None  # nothing left: the cookie went too
    # Deleting keys that are not there is no error (the view checks with `in`).
    assert client.get(f"{demo.url}/del_session").status_code == 200


def test_nested_cart_mutation_is_saved_without_modified_flag(demo: LiveDemo) -> None:
    client = requests.Session()
    assert cart_items(client.get(f"{demo.url}/cart/add/apple")) == ["apple"]
    assert cart_items(client.get(f"{demo.url}/cart/add/pear")) == ["apple", "pear"]
    assert cart_items(client.get(f"{demo.url}/cart/add/apple")) == ["apple", "pear", "apple"]
    # Read back by fresh requests (each may reach the other worker process).
    for _ in range(3):
        assert cart_items(client.get(f"{demo.url}/cart")) == ["apple", "pear", "apple"]
    escaped = client.get(f"{demo.url}/cart/add/%3Cb%3Ebold")
    assert escaped.status_code == 200
    assert "<b>bold" not in escaped.text and "&lt;b&gt;bold" in escaped.text


def test_cart_refuses_oversized_input_with_400(demo: LiveDemo) -> None:
    client = requests.Session()
    too_long = client.get(f"{demo.url}/cart/add/{'x' * 41}")
    assert too_long.status_code == 400
    assert "at most 40 characters" in too_long.text
    for number in range(20):
        assert client.get(f"{demo.url}/cart/add/item{number}").status_code == 200
    full = client.get(f"{demo.url}/cart/add/one-more")
    assert full.status_code == 400 and "at most 20 items" in full.text
    assert len(cart_items(client.get(f"{demo.url}/cart"))) == 20


def test_permanent_session_cookie_lasts_31_days(demo: LiveDemo) -> None:
    client = requests.Session()
    nothing = client.get(f"{demo.url}/permanent")
    assert "nothing in your session to keep yet" in nothing.text
    assert "session" not in set_cookie_headers(nothing)

    log_in(client, demo.url)
    response = client.get(f"{demo.url}/permanent")
    assert "kept for 31 days" in response.text
    header = set_cookie_headers(response)["session"]
    max_age = int(attribute(header, "Max-Age") or 0)
    assert THIRTY_ONE_DAYS - 60 <= max_age <= THIRTY_ONE_DAYS
    expires = parsedate_to_datetime(attribute(header, "Expires") or "")
    assert abs(expires.timestamp() - (time.time() + THIRTY_ONE_DAYS)) < 3600
    cookie = jar_cookie(client, "session")
    assert cookie is not None and cookie.expires is not None
    assert cookie.expires > time.time() + THIRTY_ONE_DAYS - 3600

    home = client.get(f"{demo.url}/")
    assert status_line(home) == "Logged in as Tom"
    assert "Your session is kept until" in home.text


def test_comment_api_needs_login(demo: LiveDemo) -> None:
    client = requests.Session()
    anonymous = client.get(f"{demo.url}/comment")
    assert anonymous.status_code == 401
    assert anonymous.json() == {"msg": "No login, login in comments first"}
    log_in(client, demo.url)
    for method in ("GET", "POST"):
        answer = client.request(method, f"{demo.url}/comment")
        assert answer.status_code == 200
        assert answer.json() == {"msg": "Comment succeeded:Tom"}


GARBAGE_COOKIES = [
    "garbage",
    "x" * 3000,
    "a.b.c",
    "eyJ1c2VybmFtZSI6IlRvbSJ9.Zz.forged",  # Flask cookie shape, wrong signature
    secrets.token_urlsafe(32),  # a well-formed id no store knows
    "%00%ff%22",
    "\u00fc\u00e9",
]


def test_garbage_session_cookie_gives_a_fresh_session(demo: LiveDemo,
                                                     request: pytest.FixtureRequest) -> None:
    for garbage in GARBAGE_COOKIES:
        response = requests.get(f"{demo.url}/", headers={"Cookie": f"session={garbage}"})
        assert response.status_code == 200, garbage
        assert status_line(response) == "You are not logged in"
        header = set_cookie_headers(response).get("session", "")
        if request.node.callspec.params["demo"] == "cookie":
            # As Flask's cookie session: a cookie that cannot be read is left alone (a
            # key rotated back reads it again); the next login replaces it.
            assert header == "", (garbage, header)
        else:
            # A server store clears a bad cookie so the browser stops sending it.
            assert attribute(header, "Max-Age") == "0", (garbage, header)
    client = requests.Session()
    client.headers["Cookie"] = "session=garbage"
    log_in(client, demo.url)
    del client.headers["Cookie"]
    assert cookie_value(client, "session") != "garbage"
    assert status_line(client.get(f"{demo.url}/")) == "Logged in as Tom"


def test_two_browsers_have_separate_sessions(demo: LiveDemo) -> None:
    tom, guest = requests.Session(), requests.Session()
    log_in(tom, demo.url)
    guest.get(f"{demo.url}/cart/add/pear")
    assert status_line(tom.get(f"{demo.url}/")) == "Logged in as Tom"
    assert status_line(guest.get(f"{demo.url}/")) == "You are not logged in"
    assert cart_items(tom.get(f"{demo.url}/cart")) == []
    assert cart_items(guest.get(f"{demo.url}/cart")) == ["pear"]


def test_store_outage_answers_503_then_recovers(tmp_path: Path) -> None:
    redis_server = start_or_skip(start_redis)
    try:
        # One worker: a second one still booting when Redis stops would fail its start-up
        # check (by design) and take the whole server down, which is not what is tested here.
        with live_demo({"SESSION_TYPE": "redis", "SESSION_REDIS": redis_server.url},
                       tmp_path, workers=1) as demo:
            client = requests.Session()
            log_in(client, demo.url)
            redis_server.stop()
            down = client.get(f"{demo.url}/")
            assert down.status_code == 503
            assert "Service Unavailable" in down.text
            # A visitor without a session cookie needs no store, so is still served.
            assert requests.get(f"{demo.url}/getcookie").status_code == 200
            redis_server.restart()  # empty: the logged-in session is gone
            back = client.get(f"{demo.url}/")
            assert back.status_code == 200
            assert status_line(back) == "You are not logged in"
            log_in(client, demo.url)
            assert status_line(client.get(f"{demo.url}/")) == "Logged in as Tom"
    finally:
        redis_server.stop()


# -- the devices page and the account file ---------------------------------------------
USER_AGENTS = {
    "Chrome on Windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                         "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Edge on Windows": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                       "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/126.0.2592.87",
    "Firefox on Linux": "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:127.0) Gecko/20100101 "
                        "Firefox/127.0",
    "Safari on macOS": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
                       "(KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "Safari on iOS": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) "
                     "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 "
                     "Safari/604.1",
    "Chrome on Android": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, "
                         "like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36",
    "Firefox on Android": "Mozilla/5.0 (Android 14; Mobile; rv:127.0) Gecko/127.0 Firefox/127.0",
    "curl": "curl/8.5.0",
}


def test_the_devices_page_names_each_browser_and_its_system(tmp_path: Path) -> None:
    with live_demo({}, tmp_path, workers=1) as server:
        for agent in USER_AGENTS.values():
            device = requests.Session()
            device.headers["User-Agent"] = agent
            log_in(device, server.url)
        page = device.get(f"{server.url}/devices")
        assert page.status_code == 200
        shown = re.findall(r'<td class="user-agent">(.*?)</td>', page.text)
        assert sorted(shown) == sorted(USER_AGENTS)
        for agent in USER_AGENTS.values():
            assert agent not in page.text  # the raw header is not what a person reads
        assert "break-all" not in page.text  # never split in the middle of a word


def test_the_user_database_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    users = tmp_path / "demo-users.sqlite3"
    with live_demo({}, tmp_path, workers=1) as server:
        client = requests.Session()
        log_in(client, server.url, "laowang")
        assert not users.exists()  # created by the first password change only
        changed = client.post(f"{server.url}/password", data={
            "current_password": "123", "new_password": "a new passphrase",
            "confirm_password": "a new passphrase"})
        assert changed.status_code == 200 and changed.url == f"{server.url}/devices"
        assert users.stat().st_mode & 0o777 == 0o600
        log_in(requests.Session(), server.url, "laowang", "a new passphrase")
    for leftover in tmp_path.glob("demo-users.sqlite3*"):  # journal files too, if any
        assert leftover.stat().st_mode & 0o077 == 0, leftover


# -- cookies -------------------------------------------------------------------------
def test_setcookie_sets_max_age_and_expires(default_demo: LiveDemo) -> None:
    client = requests.Session()
    assert "nickname=None age=None" in client.get(f"{default_demo.url}/getcookie").text

    response = client.get(f"{default_demo.url}/setcookie")
    assert response.status_code == 200
    headers = set_cookie_headers(response)
    nickname, age = headers["nickname"], headers["age"]
    assert nickname.startswith("nickname=laowang;")
    assert attribute(nickname, "Max-Age") == "3600"
    assert age.startswith("age=12;")
    assert attribute(age, "Max-Age") is None  # expires only, as the view sets it
    age_expires = parsedate_to_datetime(attribute(age, "Expires") or "").timestamp()
    assert time.time() + 29 * 86400 < age_expires < time.time() + 31 * 86400

    nickname_cookie = jar_cookie(client, "nickname")
    assert nickname_cookie is not None and nickname_cookie.expires is not None
    assert time.time() + 3000 < nickname_cookie.expires <= time.time() + 3601
    assert "nickname=laowang age=12" in client.get(f"{default_demo.url}/getcookie").text


def test_delcookie_removes_only_nickname(default_demo: LiveDemo) -> None:
    client = requests.Session()
    client.get(f"{default_demo.url}/setcookie")
    response = client.get(f"{default_demo.url}/delcookie")
    header = set_cookie_headers(response)["nickname"]
    assert header.startswith("nickname=;")
    assert attribute(header, "Max-Age") == "0"
    assert jar_cookie(client, "nickname") is None
    assert jar_cookie(client, "age") is not None
    assert "nickname=None age=12" in client.get(f"{default_demo.url}/getcookie").text


def test_set_get_and_del_cookie_as_the_tutorial_spells_them(default_demo: LiveDemo) -> None:
    client = requests.Session()
    url = default_demo.url
    assert "username=None,user=None" in client.get(f"{url}/get_cookie").text

    response = client.get(f"{url}/set_cookie")
    assert response.status_code == 200
    headers = set_cookie_headers(response)
    assert set(headers) == {"username", "user"}  # the page never touches the session
    username, user = headers["username"], headers["user"]
    assert username.startswith("username=xiaoming;")
    # A browser-session cookie: no lifetime of its own, gone when the browser closes.
    assert attribute(username, "Max-Age") is None
    assert attribute(username, "Expires") is None
    assert user.startswith("user=xiaoming;")
    assert attribute(user, "Max-Age") == "30"
    user_expires = parsedate_to_datetime(attribute(user, "Expires") or "").timestamp()
    assert time.time() + 20 < user_expires <= time.time() + 31

    username_cookie, user_cookie = jar_cookie(client, "username"), jar_cookie(client, "user")
    assert username_cookie is not None and username_cookie.value == "xiaoming"
    assert username_cookie.expires is None and username_cookie.discard
    assert user_cookie is not None and user_cookie.value == "xiaoming"
    assert user_cookie.expires is not None
    assert time.time() + 20 < user_cookie.expires <= time.time() + 31
    assert "username=xiaoming,user=xiaoming" in client.get(f"{url}/get_cookie").text

    deleted = client.get(f"{url}/del_cookie")
    assert deleted.status_code == 200
    headers = set_cookie_headers(deleted)
    assert set(headers) == {"username", "user"}
    for name, header in headers.items():
        assert header.startswith(f"{name}=;")
        assert attribute(header, "Max-Age") == "0"
        expires = parsedate_to_datetime(attribute(header, "Expires") or "").timestamp()
        assert expires <= time.time()  # expired already: the browser drops it
    assert jar_cookie(client, "username") is None
    assert jar_cookie(client, "user") is None
    assert "username=None,user=None" in client.get(f"{url}/get_cookie").text


def test_signed_cookie_is_readable_but_not_forgeable(default_demo: LiveDemo) -> None:
    client = requests.Session()
    missing = client.get(f"{default_demo.url}/get_signed_cookie")
    assert "remember=None" in missing.text
    response = client.get(f"{default_demo.url}/set_signed_cookie")
    header = set_cookie_headers(response)["remember"]
    assert attribute(header, "HttpOnly") is not None
    assert attribute(header, "Max-Age") == "3600"
    signed = cookie_value(client, "remember")
    assert signed.startswith("laowang")  # the value itself is readable
    assert "remember=laowang" in client.get(f"{default_demo.url}/get_signed_cookie").text

    for forged in ("laowang", signed.replace("laowang", "laozhao", 1), signed[:-2] + "xx"):
        answer = requests.get(f"{default_demo.url}/get_signed_cookie",
                              headers={"Cookie": f"remember={forged}"})
        assert answer.status_code == 200
        assert "remember=None" in answer.text, forged


# -- errors, hooks, logging -----------------------------------------------------------------
def assert_site_page(page: requests.Response, title: str) -> None:
    """A page in the site's layout: its title, the navigation and a way home."""
    assert f"<title>{title}</title>" in page.text
    assert "<nav>" in page.text and 'href="/devices"' in page.text
    assert re.search(r'<a id="home" href="/">home</a>', page.text)
    assert re.search(r'<a id="go-home" href="/">', page.text)


@pytest.mark.parametrize("logged_in", [False, True])
def test_abort_500_shows_the_custom_page(default_demo: LiveDemo, logged_in: bool) -> None:
    client = requests.Session()
    if logged_in:
        log_in(client, default_demo.url)
    response = client.get(f"{default_demo.url}/error")
    assert response.status_code == 500
    assert SERVER_ERROR_HEADING in response.text
    assert_site_page(response, "Server error")
    # The page never touches the session (it may be what failed): no cookie, no button.
    assert "Set-Cookie" not in response.headers
    assert not LOGOUT_FORM.search(response.text)


@pytest.mark.parametrize("logged_in", [False, True])
def test_unknown_url_shows_the_custom_404(default_demo: LiveDemo, logged_in: bool) -> None:
    client = requests.Session()
    if logged_in:
        log_in(client, default_demo.url)
    response = client.get(f"{default_demo.url}/no/such/page")
    assert response.status_code == 404
    assert NOT_FOUND_HEADING in response.text
    assert_site_page(response, "Page not found")
    assert "Set-Cookie" not in response.headers
    assert not LOGOUT_FORM.search(response.text)


def test_request_hooks_log_each_request(default_demo: LiveDemo) -> None:
    path = f"/hooks-{secrets.token_hex(4)}"
    assert requests.get(default_demo.url + path).status_code == 404
    log = default_demo.wait_for_log(rf"teardown_request GET '{path}' error=None")
    before = log.index(f"before_request GET '{path}'")
    after = log.index(f"after_request GET '{path}' -> 404")
    teardown = log.index(f"teardown_request GET '{path}'")
    assert before < after < teardown


def test_rejected_cookie_is_logged_without_its_value(default_demo: LiveDemo) -> None:
    marker = f"forged{secrets.token_hex(8)}"
    requests.get(f"{default_demo.url}/", headers={"Cookie": f"session={marker}"})
    log = default_demo.wait_for_log(r"session cookie rejected")
    assert marker not in log


def test_stored_sessions_are_keyed_by_hash_and_removed_at_logout(default_demo: LiveDemo,
                                                                   ) -> None:
    database = Path(default_demo.log_path.parent / "sessions.sqlite3")
    client = requests.Session()

    def stored() -> list[str]:
        with sqlite3.connect(database) as connection:
            return [row[0] for row in connection.execute("SELECT key FROM sessions")]

    keys_before = set(stored())
    log_in(client, default_demo.url)
    new_keys = set(stored()) - keys_before
    assert len(new_keys) == 1
    # The store holds a hash of the id, never the cookie value itself.
    assert cookie_value(client, "session") not in next(iter(new_keys))
    log_out(client, default_demo.url)
    assert set(stored()) - keys_before == set()


# -- configuration by environment ----------------------------------------------------------
def test_missing_secret_key_is_generated_and_logged(tmp_path: Path) -> None:
    with live_demo({"SECRET_KEY": ""}, tmp_path, workers=1) as server:
        server.wait_for_log("SECRET_KEY is not set")
        client = requests.Session()
        log_in(client, server.url)
        assert status_line(client.get(f"{server.url}/")) == "Logged in as Tom"


def test_lifetime_comes_from_the_environment(tmp_path: Path) -> None:
    with live_demo({"PERMANENT_SESSION_LIFETIME": "7200"}, tmp_path, workers=1) as server:
        client = requests.Session()
        log_in(client, server.url)
        page = client.get(f"{server.url}/permanent")
        assert "kept for 2 hours" in page.text
        header = set_cookie_headers(page)["session"]
        assert 7200 - 60 <= int(attribute(header, "Max-Age") or 0) <= 7200


@pytest.mark.parametrize(("env", "message"), [
    ({"SESSION_TYPE": "bogus"}, "SESSION_TYPE='bogus' is not supported"),
    ({"SESSION_PERMANENT": "maybe"}, "SESSION_PERMANENT='maybe' must be true or false"),
])
def test_bad_settings_stop_the_start_with_a_clear_message(
        tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(RuntimeError, match=re.escape(message)), \
            live_demo(env, tmp_path, workers=1):
        pass
