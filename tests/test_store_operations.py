"""The store work each request costs, counted on every server-side store.

A view that never touches the session costs nothing; a read costs one load; a change
one load and one update; a new session one create. Failed requests write nothing, and a
read-only request refreshes the session (one touch) only once enough of its lifetime
has passed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from counting import CountingStore, count_store_calls
from flask import Flask, abort, session
from flask.testing import FlaskClient

from sessionkeeper.server_side import ServerSideSessions

LIFETIME = 100  # seconds: a refresh is due after 10% of it (SESSION_REFRESH_FRACTION)


@pytest.fixture
def app_kind(store_kind: str) -> str:
    """Every server-side store (the cookie backend has no store to count)."""
    return store_kind


def add_views(app: Flask) -> Flask:
    @app.get("/nothing")
    def nothing() -> str:
        return "no session here"

    @app.get("/read")
    def read() -> str:
        return str(session.get("user", "anonymous"))

    @app.post("/login")
    def login() -> str:
        session["user"] = "alice"
        return "ok"

    @app.post("/cart")
    def add_to_cart() -> str:
        session.setdefault("cart", []).append("apple")  # an in-place change only
        return "added"

    @app.post("/clear")
    def clear() -> str:
        session.clear()
        return "cleared"

    @app.post("/pop-user")
    def pop_user() -> str:
        session.pop("user", None)
        return "popped"

    @app.post("/raise")
    def fail() -> str:
        session["user"] = "mallory"
        raise RuntimeError("the view failed")

    @app.post("/abort")
    def fail_with_abort() -> str:
        session["user"] = "mallory"
        abort(500)

    return app


@pytest.fixture
def app(make_app: Callable[..., Flask], app_config: dict[str, Any]) -> Flask:
    # Real 500 responses (as in production) instead of exceptions raised into the test.
    return add_views(make_app(app_config, PERMANENT_SESSION_LIFETIME=LIFETIME,
                              PROPAGATE_EXCEPTIONS=False))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def calls(app: Flask) -> Iterator[CountingStore]:
    yield count_store_calls(app)


def backend(app: Flask) -> ServerSideSessions:
    made = app.extensions["sessionkeeper"].backend
    assert isinstance(made, ServerSideSessions)
    return made


def counts(store: CountingStore) -> dict[str, int]:
    return {op: n for op, n in store.calls.items() if n}


def logged_in(client: FlaskClient, calls: CountingStore) -> str:
    """Log in; returns the cookie value, with the call counter reset."""
    assert client.post("/login").status_code == 200
    cookie = client.get_cookie("session")
    assert cookie is not None
    calls.reset()
    return cookie.value


def stored(app: Flask, token: str) -> dict[str, Any] | None:
    """The decoded values the store keeps for a cookie value (None: no record)."""
    sessions = backend(app)
    record = sessions.store.load(sessions.key(token), sessions.clock())
    if record is None:
        return None
    return {k: sessions.codec.decode(v) for k, v in record.values.items()}


def max_age(response: Any) -> int | None:
    match = re.search(r"Max-Age=(\d+)", response.headers.get("Set-Cookie", ""))
    return int(match.group(1)) if match else None


def cookie_deleted(response: Any) -> bool:
    header = response.headers.get("Set-Cookie", "")
    return header.startswith("session=;") and "Max-Age=0" in header


# -- what each kind of request costs -----------------------------------------------------
def test_a_view_that_never_touches_the_session_costs_no_store_call(
    client: FlaskClient, calls: CountingStore,
) -> None:
    logged_in(client, calls)

    response = client.get("/nothing")

    assert response.text == "no session here"
    assert counts(calls) == {}
    assert "Set-Cookie" not in response.headers


def test_a_read_only_request_costs_exactly_one_load(
    client: FlaskClient, calls: CountingStore,
) -> None:
    logged_in(client, calls)

    response = client.get("/read")

    assert response.text == "alice"
    assert counts(calls) == {"load": 1}
    assert "Set-Cookie" not in response.headers


def test_a_modifying_request_costs_one_load_and_one_update(
    app: Flask, client: FlaskClient, calls: CountingStore,
) -> None:
    token = logged_in(client, calls)

    response = client.post("/cart")

    assert response.text == "added"
    assert counts(calls) == {"load": 1, "update": 1}
    assert stored(app, token) == {"user": "alice", "cart": ["apple"]}

    calls.reset()
    client.post("/cart")  # an in-place change of a stored list is saved too

    assert counts(calls) == {"load": 1, "update": 1}
    assert stored(app, token) == {"user": "alice", "cart": ["apple", "apple"]}


def test_a_new_session_costs_one_create(
    app: Flask, client: FlaskClient, calls: CountingStore,
) -> None:
    response = client.post("/login")

    assert counts(calls) == {"create": 1}
    assert max_age(response) == LIFETIME
    cookie = client.get_cookie("session")
    assert cookie is not None
    assert stored(app, cookie.value) == {"user": "alice"}


def test_an_empty_new_session_costs_nothing_and_sets_no_cookie(
    client: FlaskClient, calls: CountingStore,
) -> None:
    response = client.get("/read")

    assert response.text == "anonymous"
    assert counts(calls) == {}
    assert "Set-Cookie" not in response.headers
    assert client.get_cookie("session") is None


def test_clear_deletes_the_record_and_the_cookie(
    app: Flask, client: FlaskClient, calls: CountingStore,
) -> None:
    token = logged_in(client, calls)

    response = client.post("/clear")

    assert counts(calls) == {"load": 1, "delete": 1}
    assert cookie_deleted(response)
    assert stored(app, token) is None
    assert client.get_cookie("session") is None
    assert client.get("/read").text == "anonymous"


def test_popping_the_last_key_deletes_the_record(
    app: Flask, client: FlaskClient, calls: CountingStore,
) -> None:
    token = logged_in(client, calls)

    response = client.post("/pop-user")

    assert counts(calls) == {"load": 1, "delete": 1}
    assert cookie_deleted(response)
    assert stored(app, token) is None


@pytest.mark.parametrize("path", ["/raise", "/abort"])
def test_a_failed_request_saves_nothing(
    app: Flask, client: FlaskClient, calls: CountingStore, path: str,
) -> None:
    token = logged_in(client, calls)

    response = client.post(path)

    assert response.status_code == 500
    assert calls.writes == 0
    assert "Set-Cookie" not in response.headers
    assert stored(app, token) == {"user": "alice"}
    assert client.get("/read").text == "alice"


@pytest.mark.parametrize("path", ["/raise", "/abort"])
def test_a_failed_request_of_a_new_visitor_creates_nothing(
    client: FlaskClient, calls: CountingStore, path: str,
) -> None:
    response = client.post(path)

    assert response.status_code == 500
    assert counts(calls) == {}
    assert "Set-Cookie" not in response.headers


# -- rolling refresh ---------------------------------------------------------------------
class Clock:
    """The backend's clock, moved by the test (starting at the real time, so stores
    that hand expiry to their server's TTL see sensible TTLs)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(app: Flask) -> Clock:
    made = Clock()
    backend(app).clock = made
    return made


def test_a_read_after_a_tenth_of_the_lifetime_refreshes_once(
    app: Flask, client: FlaskClient, calls: CountingStore, clock: Clock,
) -> None:
    token = logged_in(client, calls)
    created = clock.now

    clock.now = created + 0.05 * LIFETIME
    early = client.get("/read")
    assert early.text == "alice"
    assert counts(calls) == {"load": 1}  # too soon: no touch
    assert "Set-Cookie" not in early.headers

    calls.reset()
    clock.now = created + 0.15 * LIFETIME
    late = client.get("/read")

    assert late.text == "alice"
    assert counts(calls) == {"load": 1, "touch": 1}
    assert max_age(late) == LIFETIME  # counted again from now
    assert client.get_cookie("session").value == token  # same id, longer life
    sessions = backend(app)
    record = sessions.store.load(sessions.key(token), clock.now)
    assert record is not None
    assert record.expires_at == pytest.approx(clock.now + LIFETIME, abs=1)

    calls.reset()
    clock.now += 0.05 * LIFETIME  # just refreshed: the next read costs one load again
    assert "Set-Cookie" not in client.get("/read").headers
    assert counts(calls) == {"load": 1}


def test_a_refreshed_session_outlives_its_first_expiry(
    client: FlaskClient, calls: CountingStore, clock: Clock,
) -> None:
    logged_in(client, calls)
    created = clock.now

    clock.now = created + 0.5 * LIFETIME
    client.get("/read")  # refreshes
    clock.now = created + 1.2 * LIFETIME  # past the first expiry, within the refreshed one

    assert client.get("/read").text == "alice"


def test_a_session_never_refreshed_expires(
    client: FlaskClient, calls: CountingStore, clock: Clock,
) -> None:
    logged_in(client, calls)

    clock.now += LIFETIME + 1

    assert client.get("/read").text == "anonymous"


def test_refresh_each_request_false_never_touches(
    make_app: Callable[..., Flask], app_config: dict[str, Any],
) -> None:
    app = add_views(make_app(app_config, PERMANENT_SESSION_LIFETIME=LIFETIME,
                             SESSION_REFRESH_EACH_REQUEST=False))
    calls = count_store_calls(app)
    clock = Clock()
    backend(app).clock = clock
    client = app.test_client()
    logged_in(client, calls)
    created = clock.now

    for fraction in (0.15, 0.5, 0.9):
        clock.now = created + fraction * LIFETIME
        response = client.get("/read")
        assert response.text == "alice"
        assert "Set-Cookie" not in response.headers

    assert counts(calls) == {"load": 3}
