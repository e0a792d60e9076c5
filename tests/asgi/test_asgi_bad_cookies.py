"""Bad session cookies never break an ASGI request, without a store and on server stores.

Whatever a client sends as its session cookie (random text, raw header bytes, a
tampered, truncated or swollen copy of a real cookie, an id the store never issued),
the request answers 200 with a fresh, empty session, and the real cookie keeps working.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from asgi_app import make_app
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

BOUNDED = settings(max_examples=60, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture,
                                          HealthCheck.too_slow])
BASE64URL = string.ascii_letters + string.digits + "-_"
HEADER_TEXT = st.text(alphabet=st.characters(max_codepoint=0xFF,
                                             exclude_characters="\r\n"), max_size=300)
FRESH = {"session": {}, "user": None}


class Lab:
    """An app on one store and a logged-in user's real cookie to mangle."""

    def __init__(self, store: Any) -> None:
        self.prefix = f"sk-bad-{secrets.token_hex(4)}:"  # this test's keys only
        self.app = make_app(store=store, key_prefix=self.prefix)
        browser = TestClient(self.app)
        browser.post("/login", json={"user": "laowang"})
        self.valid = browser.cookies["session"]

    def view_with(self, header: str) -> Any:
        answer = TestClient(self.app).get("/view", headers={"Cookie": header})
        assert answer.status_code == 200, answer.text[:200]
        return answer.json()


@pytest.fixture(scope="module", params=["cookie", "memory", "sqlite", "redis"])
def lab(request: pytest.FixtureRequest,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    kind = request.param
    store = {"cookie": None, "memory": "memory://", "redis": "redis://127.0.0.1:6379/0",
             "sqlite": f"sqlite:///{tmp_path_factory.mktemp('bad') / 's.db'}"}[kind]
    made = Lab(store)
    yield made
    assert made.view_with(f"session={made.valid}")["user"] == "laowang"  # still works
    if kind == "redis":
        server = redis.Redis(host="127.0.0.1", port=6379, db=0)
        for key in server.scan_iter(f"{made.prefix}*"):
            server.delete(key)


@BOUNDED
@given(value=st.text(alphabet=st.characters(codec="ascii", exclude_characters=";\r\n"),
                     max_size=300))
def test_arbitrary_text_gives_a_fresh_session(lab: Lab, value: str) -> None:
    assert lab.view_with(f"session={value}") == FRESH or value == lab.valid


@BOUNDED
@given(value=HEADER_TEXT)
def test_arbitrary_header_bytes_never_break_a_request(lab: Lab, value: str) -> None:
    answer = TestClient(lab.app).get("/view", headers={"Cookie": value.encode("latin-1")})
    assert answer.status_code == 200 and answer.json()["user"] is None


@BOUNDED
@given(data=st.data())
def test_a_mangled_real_cookie_gives_a_fresh_session(lab: Lab, data: st.DataObject) -> None:
    valid = lab.valid
    cut = data.draw(st.integers(0, len(valid) - 1))
    flip = data.draw(st.sampled_from(BASE64URL + ".~%"))
    mangled = data.draw(st.sampled_from([
        valid[:cut],                                     # truncated
        valid[:cut] + flip + valid[cut + 1:],            # one character changed
        valid + data.draw(st.text(BASE64URL, min_size=1, max_size=20)),  # extended
        valid * data.draw(st.integers(2, 60)),           # swollen, up to ~20 KB
    ]))
    if mangled != valid:
        assert lab.view_with(f"session={mangled}") == FRESH


@BOUNDED
@given(token=st.text(BASE64URL, min_size=43, max_size=43))
def test_an_id_the_store_never_issued_gives_a_fresh_session(lab: Lab, token: str) -> None:
    if token != lab.valid:
        assert lab.view_with(f"session={token}") == FRESH


def test_a_cookie_of_another_key_gives_a_fresh_session(tmp_path: Path) -> None:
    other = make_app(secret_key=secrets.token_hex(16))
    browser = TestClient(other)
    browser.post("/login", json={"user": "laowang"})
    foreign = browser.cookies["session"]
    answer = TestClient(make_app()).get("/view", headers={"Cookie": f"session={foreign}"})
    assert answer.status_code == 200 and answer.json() == FRESH
