"""The SQL stores' per-user index is scoped by SESSION_KEY_PREFIX.

On the embedded SQLite store and the SQLAlchemy store (PostgreSQL, MariaDB, SQLite),
two apps sharing one table with different prefixes never list, show or revoke each
other's sessions of a user, and after the prefix changes (to end every session, as
docs/security.md advises) no old session is listed as live.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify, session
from providers import _sqlalchemy, sqlalchemy_mariadb, sqlalchemy_postgresql

from sessionkeeper.flask import user_sessions
from sessionkeeper.ids import storage_key
from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.base import SessionRecord, SessionStore
from sessionkeeper.stores.sqlalchemy import SQLAlchemyStore, engine_from_url
from sessionkeeper.stores.sqlite import SQLiteStore

MakeApp = Callable[..., Flask]
CODEC = ValueCodec()
KINDS = ["sqlite", "sqlalchemy-postgresql", "sqlalchemy-mariadb", "sqlalchemy-sqlite"]
#: pairs of apps' prefixes on one table: plain; LIKE's wildcards (``_`` matches the
#: ``X``); one prefix the start of the other; letter case (SQLite's LIKE ignores it)
PREFIX_PAIRS = [("shop:", "blog:"), ("app_1:", "appX1:"), ("app:", "app:admin:"),
                ("Shop:", "shop:")]


def new_key(prefix: str) -> str:
    return prefix + storage_key(secrets.token_urlsafe(32))


def record(user_id: str) -> SessionRecord:
    now = time.time()
    return SessionRecord(values={"n": CODEC.encode(1)}, created_at=now, accessed_at=now,
                         expires_at=now + 600, permanent=True, user_id=user_id)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextmanager
def server_table(url: str) -> Iterator[tuple[str, str]]:
    table = _sqlalchemy.random_table()
    engine = engine_from_url(url)
    try:
        with _sqlalchemy.dropped_afterwards(engine, table):
            yield url, table
    finally:
        engine.dispose()


@pytest.fixture
def shared(kind: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """App config of one database and table that several apps share."""
    if kind == "sqlite":
        yield {"SESSION_TYPE": "sqlite", "SESSION_SQLITE_PATH": str(tmp_path / "shared.db")}
    elif kind == "sqlalchemy-sqlite":
        yield {"SESSION_TYPE": "sqlalchemy",
               "SESSION_SQLALCHEMY": f"sqlite:///{tmp_path / 'shared.db'}"}
    else:
        provider = sqlalchemy_postgresql if kind.endswith("postgresql") else sqlalchemy_mariadb
        with server_table(provider.url()) as (url, table):
            yield {"SESSION_TYPE": "sqlalchemy", "SESSION_SQLALCHEMY": url,
                   "SESSION_SQLALCHEMY_TABLE": table}


@pytest.fixture
def stores(shared: dict[str, Any]) -> Iterator[Callable[[str | None], SessionStore]]:
    """Stores on the shared table, each told an app's prefix (None: none)."""
    made: list[SessionStore] = []

    def make(prefix: str | None) -> SessionStore:
        store: SessionStore
        if shared["SESSION_TYPE"] == "sqlite":
            store = SQLiteStore(shared["SESSION_SQLITE_PATH"], key_prefix=prefix)
        else:
            store = SQLAlchemyStore(engine_from_url(shared["SESSION_SQLALCHEMY"]),
                                    table=shared.get("SESSION_SQLALCHEMY_TABLE", "sessions"),
                                    owns_engine=True, key_prefix=prefix)
        made.append(store)
        store.check()
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def make_app(make_app: MakeApp) -> Iterator[MakeApp]:
    """The shared factory, plus closing the stores of the apps made (their pools)."""
    made: list[Flask] = []

    def make(config: dict[str, Any] | None = None, **more: Any) -> Flask:
        app = make_app(config, **more)
        made.append(app)
        return app

    yield make
    for app in made:
        app.extensions["sessionkeeper"].backend.store.close()


# -- the store -------------------------------------------------------------------------


def test_stores_with_different_prefixes_list_only_their_own_sessions(
        stores: Callable[[str | None], SessionStore]) -> None:
    prefixes = sorted({p for pair in PREFIX_PAIRS for p in pair})
    by_prefix = {p: stores(p) for p in prefixes}
    keys = {p: {new_key(p), new_key(p)} for p in prefixes}
    for prefix, store in by_prefix.items():
        for key in keys[prefix]:
            store.create(key, record("alice"))

    for prefix, store in by_prefix.items():
        assert set(store.keys_for_user("alice", time.time())) == keys[prefix], prefix
    # A store told no prefix (the store used on its own) lists every key of the user.
    everything = set().union(*keys.values())
    assert set(stores(None).keys_for_user("alice", time.time())) == everything


def test_after_the_prefix_changes_old_sessions_are_not_listed(
        stores: Callable[[str | None], SessionStore]) -> None:
    before = stores("v1:")
    for _ in range(3):
        before.create(new_key("v1:"), record("alice"))

    after = stores("v2:")
    assert after.keys_for_user("alice", time.time()) == []
    key = new_key("v2:")
    after.create(key, record("alice"))
    assert after.keys_for_user("alice", time.time()) == [key]


# -- two apps on one table ----------------------------------------------------------------


def devices_app(make_app: MakeApp, config: dict[str, Any], prefix: str) -> Flask:
    app = make_app(config, SESSION_KEY_PREFIX=prefix)

    @app.post("/login")
    def login() -> str:
        session["app"] = prefix
        session.login("alice")  # type: ignore[attr-defined]
        return "in"

    @app.get("/me")
    def me() -> str:
        return str(session.user_id or "anonymous")  # type: ignore[attr-defined]

    @app.get("/devices")
    def devices() -> Any:
        return jsonify([info.handle for info in user_sessions.list()])

    @app.post("/sign-out-everywhere")
    def sign_out_everywhere() -> Any:
        return jsonify(user_sessions.revoke_all())

    return app


@pytest.mark.parametrize(("first", "second"), PREFIX_PAIRS)
def test_two_apps_on_one_table_never_touch_each_others_sessions(
        make_app: MakeApp, shared: dict[str, Any], kind: str, first: str,
        second: str) -> None:
    shop, blog = devices_app(make_app, shared, first), devices_app(make_app, shared, second)
    shop_laptop, shop_phone = shop.test_client(), shop.test_client()
    blog_laptop = blog.test_client()
    for browser in (shop_laptop, shop_phone, blog_laptop):
        assert browser.post("/login").status_code == 200

    assert len(blog_laptop.get("/devices").json) == 1
    assert len(shop_laptop.get("/devices").json) == 2
    assert blog_laptop.post("/sign-out-everywhere").json == 1
    assert blog_laptop.get("/me").text == "anonymous"
    assert shop_laptop.get("/me").text == "alice"
    assert shop_phone.get("/me").text == "alice"
    assert shop_phone.post("/sign-out-everywhere").json == 2
    assert shop_laptop.get("/me").text == "anonymous"


def test_changing_the_prefix_ends_every_listed_session(make_app: MakeApp,
                                                       shared: dict[str, Any],
                                                       kind: str) -> None:
    old = devices_app(make_app, shared, "v1:")
    for _ in range(2):
        assert old.test_client().post("/login").status_code == 200

    browser = devices_app(make_app, shared, "v2:").test_client()
    assert browser.post("/login").status_code == 200
    assert len(browser.get("/devices").json) == 1

