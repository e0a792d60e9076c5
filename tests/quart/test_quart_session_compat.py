"""A quart-session app moves by changing its import: its configuration, a
``redis.asyncio`` client in SESSION_REDIS included, works as it is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio
from providers._shared import random_prefix
from providers.redis import URL, delete_prefixed, machine_client
from quart import Quart, session
from quart_helpers import Browser, in_event_loop

from sessionkeeper.quart import Session  # was: from quart_session import Session
from sessionkeeper.stores.redis_async import url_of_async_client as redis_url_of


@pytest.fixture
def prefix() -> Iterator[str]:
    client = machine_client()
    chosen = random_prefix("quart-session")
    try:
        yield chosen
    finally:
        delete_prefixed(client, chosen)
        client.close()


def quart_session_app(prefix: str, tmp_path: Path) -> Quart:
    """An app configured as quart-session's documentation configures one."""
    app = Quart(__name__, instance_path=str(tmp_path))
    app.config["SECRET_KEY"] = "top secret"
    app.config["SESSION_TYPE"] = "redis"
    app.config["SESSION_REDIS"] = redis.asyncio.Redis.from_url(URL)
    app.config["SESSION_KEY_PREFIX"] = prefix
    app.config["SESSION_PERMANENT"] = True
    Session(app)

    @app.route("/")
    async def index() -> str:
        session["visits"] = session.get("visits", 0) + 1
        return str(session["visits"])

    return app


@in_event_loop
async def test_a_quart_session_redis_config_works(prefix: str, tmp_path: Path) -> None:
    browser = Browser(quart_session_app(prefix, tmp_path))
    assert [await (await browser.get("/")).get_data(as_text=True) for _ in range(3)] == [
        "1", "2", "3"]
    stored = machine_client().keys(f"{prefix}*")
    assert len(stored) == 1  # the session lives in Redis, under the app's prefix


def test_the_address_of_an_asyncio_client() -> None:
    assert redis_url_of(redis.asyncio.Redis(host="10.0.0.5", port=6380, db=2)) == (
        "redis://10.0.0.5:6380/2")
    assert redis_url_of(redis.asyncio.Redis(password="p@ss", username="me")) == (
        "redis://me:p%40ss@localhost:6379/0")
    assert redis_url_of(redis.asyncio.Redis(unix_socket_path="/run/redis.sock", db=1)) == (
        "unix:///run/redis.sock?db=1")
