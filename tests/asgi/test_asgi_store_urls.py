"""``store=`` as a URL or a driver's client object, for every store: a Starlette app on
it keeps a login across requests and a logout ends it, through each real server."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from providers import sqlalchemy_mariadb, sqlalchemy_postgresql
from servers import mongodb_url, start_dynalite, start_memcached, start_or_skip
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from sessionkeeper.errors import ConfigurationError
from sessionkeeper.starlette import SessionMiddleware


async def login(request: Request) -> JSONResponse:
    request.session.login("laowang")
    request.session["cart"] = ["tea"]
    return JSONResponse({})


async def show(request: Request) -> JSONResponse:
    return JSONResponse({"user": request.session.user_id, **request.session})


async def logout(request: Request) -> JSONResponse:
    request.session.logout()
    return JSONResponse({})


def make_app(store: Any) -> Starlette:
    return Starlette(routes=[Route("/login", login, methods=["POST"]), Route("/show", show),
                             Route("/logout", logout, methods=["POST"])],
                     middleware=[Middleware(SessionMiddleware, secret_key="test secret",
                                            store=store,
                                            key_prefix=f"t{secrets.token_hex(4)}:")])


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server (so the store's default table is its own)."""
    name = f"sk_{secrets.token_hex(6)}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        yield sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if admin.dialect.name == "postgresql" else ""
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{force}")
        admin.dispose()


def _memcached_url(tmp: Path) -> Iterator[Any]:
    group = start_or_skip(start_memcached, 2)
    try:
        yield "memcached://" + ",".join(f"{host}:{port}" for host, port in group)
    finally:
        group.stop()


def _memcached_client(tmp: Path) -> Iterator[Any]:
    from pymemcache.client.hash import HashClient

    group = start_or_skip(start_memcached, 1)
    try:
        yield HashClient([f"{host}:{port}" for host, port in group], default_noreply=False)
    finally:
        group.stop()


def _file(tmp: Path) -> Iterator[Any]:
    yield f"file://{tmp / 'sessions'}"


def _sql_url(provider: Any) -> Callable[[Path], Iterator[Any]]:
    def made(tmp: Path) -> Iterator[Any]:
        with fresh_database(provider.url()) as url:
            yield url
    return made


def _sqlite_url(tmp: Path) -> Iterator[Any]:
    yield f"sqlite+pysqlite:///{tmp / 'sessions.db'}"


def _engine(tmp: Path) -> Iterator[Any]:
    with fresh_database(sqlalchemy_postgresql.url()) as url:
        engine = sa.create_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


def _dynamodb_url(tmp: Path) -> Iterator[Any]:
    server = start_or_skip(start_dynalite)
    try:
        yield f"dynamodb://{server.host}:{server.port}?table=t{secrets.token_hex(4)}"
    finally:
        server.stop()


def _dynamodb_client(tmp: Path) -> Iterator[Any]:
    import boto3

    server = start_or_skip(start_dynalite)
    try:
        yield boto3.client("dynamodb", endpoint_url=server.endpoint_url, region_name="us-east-1",
                           aws_access_key_id="test", aws_secret_access_key="test")
    finally:
        server.stop()


def _redis_client(tmp: Path) -> Iterator[Any]:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=0)
    yield client
    client.close()


def _cachelib(tmp: Path) -> Iterator[Any]:
    from cachelib import FileSystemCache

    yield FileSystemCache(str(tmp / "cache"), threshold=0)


def _mongodb(tmp: Path) -> Iterator[Any]:
    url = mongodb_url()
    if url is None:
        pytest.skip("no MongoDB server: set MONGODB_URL to a real server")
    yield url


STORES: dict[str, Callable[[Path], Iterator[Any]]] = {
    "memcached-url": _memcached_url,
    "memcached-client": _memcached_client,
    "file-url": _file,
    "postgresql-url": _sql_url(sqlalchemy_postgresql),
    "mariadb-url": _sql_url(sqlalchemy_mariadb),
    "sqlalchemy-sqlite-url": _sqlite_url,
    "sqlalchemy-engine": _engine,
    "dynamodb-url": _dynamodb_url,
    "dynamodb-client": _dynamodb_client,
    "redis-client": _redis_client,
    "cachelib-object": _cachelib,
    "mongodb-url": _mongodb,
}


@pytest.fixture(params=list(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    # dynalite takes any credentials; boto3 finds these as it would on AWS
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    yield from STORES[request.param](tmp_path)


def test_a_login_is_kept_and_a_logout_ends_it(store: Any) -> None:
    app = make_app(store)
    with TestClient(app) as browser:
        assert browser.get("/show").json() == {"user": None}
        browser.post("/login")
        token = browser.cookies["session"]
        assert len(token) == 43  # a random id: the data is on the server
        assert browser.get("/show").json() == {"user": "laowang", "cart": ["tea"]}
        browser.post("/logout")
        assert browser.get("/show").json() == {"user": None}
    with TestClient(app, cookies={"session": token}) as replay:
        assert replay.get("/show").json() == {"user": None}  # the old id is gone


@pytest.mark.parametrize(("store", "expected"), [
    ("memcached://", "name the servers"),
    ("file://relative/dir", "absolute directory"),
    ("dynamodb://", "name the server"),
    ("ftp://example.com", "store= takes a URL"),
    (object(), "got a object"),
])
def test_unusable_stores_say_what_is_accepted(store: Any, expected: str) -> None:
    with pytest.raises(ConfigurationError, match=expected), TestClient(make_app(store)) as c:
        c.get("/show")


def test_a_sql_database_that_cannot_be_reached_stops_the_app_at_start_up() -> None:
    url = "postgresql+psycopg2://postgres@127.0.0.1:1/test"
    with pytest.raises(ConfigurationError, match="unavailable"), \
            TestClient(make_app(url)) as client:
        client.get("/show")
