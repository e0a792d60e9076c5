"""``store=`` given what an async app already has: a ``redis.asyncio`` client, an async
SQLAlchemy URL or ``AsyncEngine``. Each stands for its server, which the store reaches
with a blocking driver in its threads; sessions then live there, as the stored rows and
keys show. An async MongoDB client stands for its servers with its own settings."""

from __future__ import annotations

import secrets
from pathlib import Path

import redis
import redis.asyncio
import sqlalchemy as sa
from asgi_app import make_app
from providers import mongodb, sqlalchemy_postgresql
from servers import unused_port
from starlette.testclient import TestClient

from sessionkeeper.ids import storage_key
from sessionkeeper.serialization import ValueCodec
from sessionkeeper.starlette.stores import store_from


def logged_in_token(browser: TestClient) -> str:
    assert browser.post("/login", json={"user": "laowang"}).status_code == 200
    assert browser.get("/view").json()["user"] == "laowang"
    return browser.cookies["session"]


def test_a_redis_asyncio_client_stands_for_its_server() -> None:
    prefix = f"sk-async-{secrets.token_hex(4)}:"
    client = redis.asyncio.Redis(host="127.0.0.1", port=6379, db=0)
    token = logged_in_token(TestClient(make_app(store=client, key_prefix=prefix)))
    server = redis.Redis(host="127.0.0.1", port=6379, db=0)
    try:
        assert server.exists(prefix + storage_key(token)) == 1
    finally:
        for key in server.scan_iter(f"{prefix}*"):
            server.delete(key)


def test_an_asyncpg_url_is_served_by_a_blocking_postgresql_driver() -> None:
    url = sqlalchemy_postgresql.url().replace("postgresql+psycopg2://", "postgresql+asyncpg://")
    table = f"sk_{secrets.token_hex(4)}"
    engine = sa.create_engine(sqlalchemy_postgresql.url())
    try:
        with TestClient(make_app(store=f"{url}?table={table}")) as browser:
            token = logged_in_token(browser)
        with engine.connect() as conn:
            keys = conn.execute(sa.text(f"SELECT key FROM {table}")).scalars().all()
        assert keys == ["session:" + storage_key(token)]
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()


def test_an_async_engine_stands_for_its_database(tmp_path: Path) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    path = tmp_path / "sessions.db"
    async_engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    with TestClient(make_app(store=async_engine)) as browser:
        token = logged_in_token(browser)
    with sa.create_engine(f"sqlite:///{path}").connect() as conn:
        keys = conn.execute(sa.text("SELECT key FROM sessions")).scalars().all()
    assert keys == ["session:" + storage_key(token)]


def test_an_async_mongodb_client_stands_for_its_server_with_its_settings() -> None:
    """The store's blocking client reaches the same servers as the app's async one, with
    its keyword options (a URL would lose these); without a server the
    session answers 503 and session-free routes stay up."""
    from pymongo import AsyncMongoClient

    port = unused_port()
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        f"mongodb://ada:s3cret@127.0.0.1:{port}/?authSource=admin",
        serverSelectionTimeoutMS=200, appname="shop", connect=False)
    store = store_from(client, codec=ValueCodec(), key_prefix="session:")
    blocking = store.inner.collection.database.client  # type: ignore[attr-defined]
    assert blocking is not client and type(blocking).__name__ == "MongoClient"
    assert blocking.topology_description.server_descriptions().keys() == {("127.0.0.1", port)}
    options = blocking.options
    assert (options.server_selection_timeout, options.pool_options.metadata["application"]
            ) == (0.2, {"name": "shop"})
    with TestClient(make_app(store=client)) as browser:
        assert browser.post("/set", json={"a": 1}).status_code == 503
        assert browser.get("/health").status_code == 200


def test_an_async_mongodb_client_keeps_users_logged_in() -> None:
    from pymongo import AsyncMongoClient

    url = mongodb.server_url()
    collection = mongodb.random_collection()
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        url, serverSelectionTimeoutMS=2000)
    with mongodb.dropped_afterwards(url, collection):
        app = make_app(store=client, key_prefix=f"sk-{secrets.token_hex(4)}:")
        token = logged_in_token(TestClient(app))
        assert TestClient(app, cookies={"session": token}).get("/view").json()["user"] == (
            "laowang")
