"""FastAPI: ``SessionDep`` and ``CurrentUser`` on the cookie and server stores, the session
cookie in the OpenAPI document, and the same app under uvicorn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
import requests
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from fastapi_app import make_app
from test_asgi_uvicorn import uvicorn

from sessionkeeper.errors import ConfigurationError
from sessionkeeper.starlette import Session, SessionMiddleware
from sessionkeeper.starlette.fastapi import SessionDep, session_dependencies
from sessionkeeper.stores.memory import MemoryStore


@pytest.fixture(params=["cookie", "memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "cookie":
        return None
    if request.param == "memory":
        return MemoryStore()
    return f"sqlite:///{tmp_path / 'sessions.db'}"


@pytest.fixture
def browser(store: Any) -> Iterator[TestClient]:
    with TestClient(make_app(store=store)) as client:
        yield client


def test_the_session_dependency_keeps_values_across_requests(browser: TestClient) -> None:
    assert browser.get("/cart").json() == []
    assert browser.post("/cart/apple").json() == ["apple"]
    assert browser.post("/cart/pear").json() == ["apple", "pear"]
    assert browser.get("/cart").json() == ["apple", "pear"]  # read by a sync endpoint
    assert "Cookie" in browser.get("/cart").headers["vary"]


def test_current_user_is_401_until_login_and_after_logout(browser: TestClient) -> None:
    refused = browser.get("/me")
    assert refused.status_code == 401
    assert refused.json() == {"detail": "Not authenticated"}
    browser.post("/cart/apple")
    before = browser.cookies["session"]
    assert browser.post("/login/laowang").json() == {"user": "laowang"}
    assert browser.cookies["session"] != before  # a login gives the session a new id
    assert browser.get("/me").json() == {"user": "laowang"}
    assert browser.get("/cart").json() == ["apple"]  # kept through the login
    browser.post("/logout")
    assert browser.get("/me").status_code == 401


@pytest.mark.parametrize("store", ["memory", "sqlite"], indirect=True)
def test_the_old_id_no_longer_logs_in_after_logout(store: Any) -> None:
    with TestClient(make_app(store=store)) as browser:
        browser.post("/login/laowang")
        stolen = browser.cookies["session"]
        browser.post("/logout")
    with TestClient(make_app(store=store)) as attacker:
        attacker.cookies.set("session", stolen)
        assert attacker.get("/me").status_code == 401


def test_the_openapi_document_declares_the_session_cookie() -> None:
    with TestClient(make_app()) as client:
        document = client.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["session cookie"] == {
        "type": "apiKey", "in": "cookie", "name": "session",
        "description": "The session cookie sessionkeeper's SessionMiddleware sets."}
    paths = document["paths"]
    assert paths["/me"]["get"]["security"] == [{"session cookie": []}]
    assert paths["/cart"]["get"]["security"] == [{"session cookie": []}]
    assert "security" not in paths["/health"]["get"]


#: module level: FastAPI resolves the annotations below in this module's globals
sid_session, sid_user = session_dependencies("sid")


def test_another_cookie_name_gets_its_own_scheme() -> None:
    app = FastAPI()
    app.add_middleware(SessionMiddleware, secret_key="test secret", session_cookie="sid",
                       store=MemoryStore())

    @app.post("/sign-in")
    def sign_in(session: Annotated[Session, Depends(sid_session)]) -> None:
        session.login("7")

    @app.get("/me")
    def me(user: Annotated[str, Depends(sid_user)]) -> str:
        return user

    with TestClient(app) as browser:
        assert browser.get("/me").status_code == 401
        browser.post("/sign-in")
        assert "sid" in browser.cookies
        assert browser.get("/me").json() == "7"
        document = browser.get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["sid cookie"]["name"] == "sid"


def test_without_sessionkeepers_middleware_the_dependency_says_what_to_add() -> None:
    app = FastAPI()

    @app.get("/cart")
    def cart(session: SessionDep) -> list[str]:
        return list(session.get("cart", []))

    with TestClient(app) as client, pytest.raises(ConfigurationError,
                                                  match="add sessionkeeper's middleware"):
        client.get("/cart")


@pytest.mark.parametrize("kind", ["cookie", "sqlite"])
def test_under_uvicorn_a_login_is_kept_and_a_logout_ends_it(kind: str, tmp_path: Path) -> None:
    store = "cookie" if kind == "cookie" else f"sqlite:///{tmp_path / 'sessions.db'}"
    with uvicorn({"SK_STORE": store}, tmp_path / "uvicorn.log",
                 target="fastapi_app:app") as url:
        browser = requests.Session()
        assert browser.get(f"{url}/me", timeout=30).status_code == 401
        assert browser.post(f"{url}/login/laowang", timeout=30).json() == {"user": "laowang"}
        assert browser.post(f"{url}/cart/tea", timeout=30).json() == ["tea"]
        # Each request may land on either worker process: both know the session.
        for _ in range(6):
            assert browser.get(f"{url}/me", timeout=30).json() == {"user": "laowang"}
        browser.post(f"{url}/logout", timeout=30)
        assert browser.get(f"{url}/me", timeout=30).status_code == 401
        assert browser.get(f"{url}/cart", timeout=30).json() == []
