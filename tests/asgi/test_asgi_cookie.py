"""Without a store: Starlette's own signed cookie, read and written both ways.

Switching an app from ``starlette.middleware.sessions`` to ``sessionkeeper.starlette``
(and back) keeps every user's session; on top, sessionkeeper's session API works.
"""

from __future__ import annotations

import json
import re
from base64 import b64decode
from typing import Any

import itsdangerous
import pytest
from asgi_app import ROUTES, make_app
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware as StarlettesMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from sessionkeeper.starlette import SessionMiddleware

SECRET = "test secret"


def starlettes_app(secret_key: str = SECRET, **options: Any) -> Starlette:
    return Starlette(routes=ROUTES, middleware=[
        Middleware(StarlettesMiddleware, secret_key=secret_key, **options)])


def cookie_of_header(header: str) -> str:
    found = re.match(r"session=([^;]*);", header)
    assert found is not None, header
    return found.group(1)


def cookie_of(response: Any) -> str:
    return cookie_of_header(response.headers["set-cookie"])


def payload(cookie: str, secret_key: str = SECRET) -> Any:
    return json.loads(b64decode(itsdangerous.TimestampSigner(secret_key).unsign(cookie)))


VALUES = {"user": "laowang", "cart": [1, {"sku": "é"}], "n": 1.5, "none": None}


def sending(app: Starlette, cookie: str | None = None, **options: Any) -> TestClient:
    """A client that sends ``cookie`` as the session cookie."""
    return TestClient(app, cookies=None if cookie is None else {"session": cookie}, **options)


def test_a_cookie_starlette_wrote_is_read_here_and_the_other_way_round() -> None:
    written = cookie_of(sending(starlettes_app()).post("/set", json=VALUES))

    assert sending(make_app(), written).get("/view").json()["session"] == VALUES

    changed = cookie_of(sending(make_app(), written).post("/set", json={"more": True}))
    seen = sending(starlettes_app(), changed).get("/view").json()["session"]
    assert seen == {**VALUES, "more": True}


def test_the_cookie_is_written_as_starlette_writes_it() -> None:
    options = {"max_age": 600, "path": "/", "same_site": "strict", "https_only": True,
               "domain": "example.com", "partitioned": True}
    theirs, ours = starlettes_app(**options), make_app(**options)
    https = {"base_url": "https://testserver"}
    their_header = sending(theirs, **https).post("/set", json=VALUES).headers["set-cookie"]
    our_header = sending(ours, **https).post("/set", json=VALUES).headers["set-cookie"]

    # The same JSON text (key order included), the same attributes in the same order.
    assert payload(cookie_of_header(our_header)) == payload(cookie_of_header(their_header))
    assert our_header.split(".")[0] == their_header.split(".")[0]
    assert our_header.split(";", 1)[1] == their_header.split(";", 1)[1]

    cookie = cookie_of_header(our_header)
    their_delete = sending(theirs, cookie, **https).post("/clear").headers["set-cookie"]
    our_delete = sending(ours, cookie, **https).post("/clear").headers["set-cookie"]
    assert our_delete == their_delete


def test_a_cookie_signed_with_an_older_key_is_read_with_secret_key_fallbacks() -> None:
    old = cookie_of(sending(starlettes_app("old key")).post("/set", json={"a": 1}))
    rotated = make_app("new key", secret_key_fallbacks=["old key"])
    assert sending(rotated, old).get("/view").json()["session"] == {"a": 1}
    assert sending(make_app("new key"), old).get("/view").json()["session"] == {}
    # Signed with the new key when it is written again.
    resigned = cookie_of(sending(rotated, old).post("/set", json={"b": 2}))
    assert payload(resigned, "new key") == {"a": 1, "b": 2}


def test_set_cookie_only_when_the_session_changed_and_vary_only_when_used() -> None:
    client = TestClient(make_app())
    first = client.post("/set", json={"a": 1})
    assert "set-cookie" in first.headers and first.headers["vary"] == "Cookie"

    read = client.get("/view")
    assert "set-cookie" not in read.headers and read.headers["vary"] == "Cookie"
    unchanged = client.post("/set", json={})
    assert "set-cookie" not in unchanged.headers

    untouched = client.get("/health")
    assert "set-cookie" not in untouched.headers and "vary" not in untouched.headers


@pytest.mark.parametrize("own_vary", [[], [b"Accept-Encoding"], [b"Accept-Encoding", b"Origin"],
                                      [b"Cookie"]])
def test_vary_is_joined_into_the_apps_own_as_starlette_joins_it(own_vary: list[bytes]) -> None:
    """The app's Vary headers are merged into one, ", Cookie" added, headers kept in
    order (a duplicate "Cookie" as well: byte for byte what Starlette sends)."""
    async def page(request: Request) -> Response:
        request.session["seen"] = True
        response = Response("ok", headers={"x-before": "1"})
        response.raw_headers.extend((b"vary", value) for value in own_vary)
        response.raw_headers.append((b"x-after", b"2"))
        return response

    def headers_of(middleware: Any) -> list[tuple[bytes, bytes]]:
        app = Starlette(routes=[Route("/", page)],
                        middleware=[Middleware(middleware, secret_key=SECRET)])
        raw = TestClient(app).get("/").headers.raw
        return [(k.lower(), v.split(b".")[0]) for k, v in raw]  # signatures differ

    assert headers_of(SessionMiddleware) == headers_of(StarlettesMiddleware)


def test_values_read_with_get_or_brackets_are_the_stored_ones_and_tracked() -> None:
    """A plain value comes straight from the mapping; a list or dict handed out by
    ``get`` or ``[]`` is still watched, so changing it in place is saved."""
    async def change(request: Request) -> JSONResponse:
        session = request.session
        seen = [session.get("n"), session["s"], session.get("missing", "dflt"),
                session.get("_sk.meta", "hidden")]
        session.get("cart").append(3)  # the only change: it must be noticed
        return JSONResponse(seen)

    async def change_by_brackets(request: Request) -> JSONResponse:
        request.session["prefs"]["theme"] = "dark"
        return JSONResponse(None)

    async def start(request: Request) -> JSONResponse:
        request.session.update(n=1, s="x", cart=[1], prefs={})
        request.session.login("42")
        return JSONResponse(None)

    async def view(request: Request) -> JSONResponse:
        return JSONResponse(dict(request.session))

    app = Starlette(routes=[Route("/start", start), Route("/change", change),
                            Route("/brackets", change_by_brackets), Route("/view", view)],
                    middleware=[Middleware(SessionMiddleware, secret_key=SECRET)])
    client = TestClient(app)
    client.get("/start")
    assert client.get("/change").json() == [1, "x", "dflt", "hidden"]
    client.get("/brackets")
    assert client.get("/view").json() == {"n": 1, "s": "x", "cart": [1, 3],
                                          "prefs": {"theme": "dark"}}


def test_a_nested_value_changed_in_place_is_saved() -> None:
    """Starlette's middleware misses ``session["cart"].append(x)``; this one saves it."""
    for app, kept in ((starlettes_app(), [1]), (make_app(), [1, 2])):
        client = TestClient(app)
        client.post("/set", json={"cart": [1]})
        assert client.post("/append/cart", json=2).json()["session"] == {"cart": [1, 2]}
        assert client.get("/view").json()["session"] == {"cart": kept}


def test_login_binds_the_user_and_logout_deletes_the_cookie() -> None:
    client = TestClient(make_app())
    client.post("/set", json={"theme": "dark"})
    logged_in = client.post("/login", json={"user": "u1"})
    assert logged_in.json() == {"session": {"theme": "dark"}, "user": "u1"}

    again = client.get("/view").json()
    assert again == {"session": {"theme": "dark"}, "user": "u1"}  # the binding is hidden

    logged_out = client.post("/logout")
    assert logged_out.json() == {"session": {}, "user": None}
    assert logged_out.headers["set-cookie"].startswith("session=null; path=/; expires=Thu, 01 Jan")
    assert client.get("/view").json() == {"session": {}, "user": None}


def test_a_def_endpoint_sees_the_session() -> None:
    client = TestClient(make_app())
    client.post("/set", json={"a": 1})
    assert client.get("/sync").json() == {"session": {"a": 1}, "user": None}


def test_nothing_is_saved_on_a_5xx() -> None:
    client = TestClient(make_app(), raise_server_exceptions=False)
    client.post("/set", json={"a": 1})
    failed = client.post("/fail")
    assert failed.status_code == 500 and "set-cookie" not in failed.headers
    assert client.get("/view").json()["session"] == {"a": 1}


def test_a_session_too_large_for_a_cookie_is_refused_not_sent() -> None:
    client = TestClient(make_app(), raise_server_exceptions=False)
    refused = client.post("/set", json={"big": "x" * 5000})
    assert refused.status_code == 500 and "set-cookie" not in refused.headers


@pytest.mark.parametrize("cookie", [
    "invalid",
    # signed with the key, but not base64 JSON: Starlette's own middleware answers 500
    itsdangerous.TimestampSigner(SECRET).sign(b"not base64 json!").decode(),
    itsdangerous.TimestampSigner(SECRET).sign(b"WzEsMl0=").decode(),  # a list, not a dict
])
def test_an_unreadable_cookie_starts_a_fresh_session(cookie: str) -> None:
    response = sending(make_app(), cookie).get("/view")
    assert response.status_code == 200 and response.json()["session"] == {}
    assert "set-cookie" not in response.headers


def test_the_session_is_there_at_a_websocket_handshake() -> None:
    client = TestClient(make_app())
    client.post("/login", json={"user": "u1"})
    with client.websocket_connect("/socket") as socket:
        assert socket.receive_json() == {"session": {}, "user": "u1"}


def test_a_cookie_is_read_only_by_a_request_that_uses_the_session(
        caplog: pytest.LogCaptureFixture) -> None:
    browser = TestClient(make_app(), cookies={"session": "tampered.cookie.value"})
    with caplog.at_level("INFO", logger="sessionkeeper"):
        untouched = browser.get("/health")
        assert untouched.text == "ok" and "vary" not in untouched.headers
        assert "rejected" not in caplog.text  # its signature was never even checked
        assert browser.get("/view").json() == {"session": {}, "user": None}
        assert "session cookie rejected (signature does not match)" in caplog.text
