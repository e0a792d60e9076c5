"""``store=`` given what an async app already has: a ``redis.asyncio`` client, an async
SQLAlchemy URL or ``AsyncEngine``. Each stands for its server, which the store reaches
with a blocking driver in its threads; sessions then live there, as the stored rows and
keys show. An async MongoDB client is refused, saying what to pass instead."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import redis
import redis.asyncio
import sqlalchemy as sa
from asgi_app import make_app
from providers import sqlalchemy_postgresql
from starlette.testclient import TestClient

from sessionkeeper.errors import ConfigurationError
from sessionkeeper.ids import storage_key


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


def test_an_async_mongodb_client_is_refused_saying_what_to_pass() -> None:
    from pymongo import AsyncMongoClient

    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
        "mongodb://127.0.0.1:1", connect=False)
    with pytest.raises(ConfigurationError, match="a pymongo MongoClient or a mongodb:// URL"):
        make_app(store=client).build_middleware_stack()
