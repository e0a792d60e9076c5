"""The SQLAlchemy store on PostgreSQL, MariaDB and SQLite.

Everything runs against the real databases: the machine's PostgreSQL and MariaDB (each
test in a table of its own, dropped afterwards) and SQLite files. Outages are real too:
the app reaches the database through a TCP forwarder the test cuts and restores.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
import sqlalchemy as sa
from flask import Flask, session
from flask_sqlalchemy import SQLAlchemy
from providers import sqlalchemy_mariadb, sqlalchemy_postgresql, sqlalchemy_sqlite
from servers import unused_port
from together import check_all_at_once

from sessionkeeper.errors import ConfigurationError, StoreUnavailable
from sessionkeeper.flask import Session
from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.base import SessionRecord, SessionUpdate
from sessionkeeper.stores.sqlalchemy import SQLAlchemyStore, engine_from_url, session_table

MakeApp = Callable[..., Flask]
BACKENDS = ["postgresql", "mariadb", "sqlite"]
SERVERS = ["postgresql", "mariadb"]
#: for the outage tests: also MariaDB through its own C-based driver, whose timeout
#: settings differ from pymysql's
DRIVERS = [*SERVERS, "mariadb-connector"]


# -- fixtures and helpers ---------------------------------------------------------------


def url_for(backend: str, folder: Path) -> str:
    if backend == "postgresql":
        return sqlalchemy_postgresql.url()
    if backend == "mariadb":
        return sqlalchemy_mariadb.url()
    if backend == "mariadb-connector":
        return sqlalchemy_mariadb.connector_url()
    return sqlalchemy_sqlite.url(folder)


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


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: Path) -> str:
    return url_for(backend, tmp_path)


@pytest.fixture
def admin(db_url: str) -> Iterator[sa.Engine]:
    """A separate engine to look at (and clean up) what the app stored."""
    engine = sa.create_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def table(admin: sa.Engine) -> Iterator[str]:
    name = f"sktest_{secrets.token_hex(4)}"
    yield name
    sa.Table(name, sa.MetaData()).drop(admin, checkfirst=True)


def rows(engine: sa.Engine, table: str, schema: str | None = None) -> list[dict[str, Any]]:
    """Every row of a sessions table, read with the store's own column types."""
    t = session_table(table, sa.MetaData(), schema)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(sa.select(t))]


def session_app(make_app: MakeApp, config: dict[str, Any]) -> Flask:
    app = make_app(config)

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    @app.get("/whoami")
    def whoami() -> str:
        return str(session.get("user", "anonymous"))

    @app.post("/login")
    def login() -> str:
        session["user"] = "laowang"
        return "ok"

    @app.post("/count")
    def count() -> str:
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    @app.post("/set/<key>")
    def set_key(key: str) -> str:
        session[key] = True
        return "ok"

    @app.get("/keys")
    def keys() -> str:
        return ",".join(sorted(session.keys()))

    @app.post("/sign-in")
    def sign_in() -> str:
        session.login("42")  # type: ignore[attr-defined]
        return "ok"

    @app.get("/logout")
    def logout() -> str:
        session.clear()
        return "bye"

    return app


def sql_config(url: str | sa.Engine, table: str, **more: Any) -> dict[str, Any]:
    return {"SESSION_TYPE": "sqlalchemy", "SESSION_SQLALCHEMY": url,
            "SESSION_SQLALCHEMY_TABLE": table, **more}


def store_of(app: Flask) -> SQLAlchemyStore:
    store = app.extensions["sessionkeeper"].backend.store
    store = getattr(store, "inner", store)  # behind the circuit breaker, when there is one
    assert isinstance(store, SQLAlchemyStore)
    return store


def session_cookie(client: Any) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return str(cookie.value)


def client_with(app: Flask, token: str) -> Any:
    client = app.test_client()
    client.set_cookie("session", token)
    return client


@contextlib.contextmanager
def recorded_statements(engine: sa.Engine) -> Iterator[list[str]]:
    """The first word of every SQL statement the engine sends, in order."""
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement.split(None, 1)[0].upper())

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def record(values: dict[str, Any] | None = None, *, user_id: str | None = None,
           lifetime: float = 3600) -> SessionRecord:
    codec = ValueCodec()
    now = time.time()
    return SessionRecord(values={k: codec.encode(v) for k, v in (values or {}).items()},
                         created_at=now, accessed_at=now, expires_at=now + lifetime,
                         permanent=True, user_id=user_id)


def delta(set_values: dict[str, Any] | None = None, deleted: set[str] | None = None,
          ) -> SessionUpdate:
    codec = ValueCodec()
    now = time.time()
    return SessionUpdate(set_values={k: codec.encode(v) for k, v in (set_values or {}).items()},
                         deleted_keys=deleted or set(), replace=False, accessed_at=now,
                         expires_at=now + 3600, permanent=True)


@pytest.fixture
def sql_store(backend: str) -> Iterator[SQLAlchemyStore]:
    provider = {"postgresql": sqlalchemy_postgresql, "mariadb": sqlalchemy_mariadb,
                "sqlite": sqlalchemy_sqlite}[backend]
    with provider.store(ValueCodec()) as made:
        yield made


# -- SESSION_SQLALCHEMY: URL, Engine, Flask-SQLAlchemy, and what is refused -------------------


def test_a_url_gets_an_engine_the_store_owns(make_app: MakeApp, db_url: str, table: str,
                                              admin: sa.Engine) -> None:
    app = session_app(make_app, sql_config(db_url, table))
    client = app.test_client()
    client.post("/login")
    assert client.get("/whoami").text == "laowang"
    engine = store_of(app).engine
    assert engine.url.render_as_string() == sa.make_url(db_url).render_as_string()
    assert [r["user_id"] for r in rows(admin, table)] == [None]


def test_an_engine_is_used_as_given(make_app: MakeApp, db_url: str, table: str) -> None:
    engine = sa.create_engine(db_url)
    try:
        app = session_app(make_app, sql_config(engine, table))
        client = app.test_client()
        client.post("/login")
        assert client.get("/whoami").text == "laowang"
        assert store_of(app).engine is engine
    finally:
        engine.dispose()


def flask_sqlalchemy_app(tmp_path: Path, db: SQLAlchemy, **config: Any) -> Flask:
    app = Flask("flask_sqlalchemy_app", instance_path=str(tmp_path / "instance"))
    app.config.update(SECRET_KEY=secrets.token_hex(16), TESTING=True,
                      SESSION_TYPE="sqlalchemy", SESSION_SQLALCHEMY=db, **config)
    db.init_app(app)
    Session(app)

    @app.post("/login")
    def login() -> str:
        session["user"] = "laowang"
        return "ok"

    @app.get("/whoami")
    def whoami() -> str:
        return str(session.get("user", "anonymous"))

    return app


@contextlib.contextmanager
def engines_disposed(app: Flask, db: SQLAlchemy) -> Iterator[None]:
    try:
        yield
    finally:
        with app.app_context():
            for engine in db.engines.values():
                engine.dispose()


def test_a_flask_sqlalchemy_object_lends_its_engine_and_metadata(
        tmp_path: Path, db_url: str, table: str, admin: sa.Engine) -> None:
    db = SQLAlchemy()
    app = flask_sqlalchemy_app(tmp_path, db, SQLALCHEMY_DATABASE_URI=db_url,
                               SESSION_SQLALCHEMY_TABLE=table)
    with engines_disposed(app, db):
        client = app.test_client()
        client.post("/login")
        assert client.get("/whoami").text == "laowang"
        with app.app_context():
            assert store_of(app).engine is db.engine
        # In db.metadata, so db.create_all() and Alembic's autogenerate know the table.
        assert store_of(app).table is db.metadata.tables[table]
        assert len(rows(admin, table)) == 1


def test_a_bind_key_puts_sessions_in_that_database(tmp_path: Path) -> None:
    server = sqlalchemy_postgresql.url()
    table = f"sktest_{secrets.token_hex(4)}"
    db = SQLAlchemy()
    main = f"sqlite:///{tmp_path / 'main.sqlite3'}"
    app = flask_sqlalchemy_app(tmp_path, db, SQLALCHEMY_DATABASE_URI=main,
                               SQLALCHEMY_BINDS={"sessions": server},
                               SESSION_SQLALCHEMY_BIND_KEY="sessions",
                               SESSION_SQLALCHEMY_TABLE=table)
    with engines_disposed(app, db):
        app.test_client().post("/login")
        with app.app_context():
            assert store_of(app).engine is db.engines["sessions"]
            assert sa.inspect(db.engines["sessions"]).has_table(table)
            assert not sa.inspect(db.engine).has_table(table)
        assert table in db.metadatas["sessions"].tables
    engine = sa.create_engine(server)
    try:
        assert len(rows(engine, table)) == 1
        sa.Table(table, sa.MetaData()).drop(engine)
    finally:
        engine.dispose()


def test_one_flask_sqlalchemy_object_serves_several_apps(tmp_path: Path) -> None:
    db = SQLAlchemy()
    first = flask_sqlalchemy_app(tmp_path / "a", db,
                                 SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'a.db'}")
    second = flask_sqlalchemy_app(tmp_path / "b", db,
                                  SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'b.db'}")
    with engines_disposed(first, db), engines_disposed(second, db):
        one, two = first.test_client(), second.test_client()
        one.post("/login")
        assert one.get("/whoami").text == "laowang"
        assert two.get("/whoami").text == "anonymous"
        assert store_of(first).table is store_of(second).table


def test_a_flask_sqlalchemy_object_must_be_set_up_first(tmp_path: Path) -> None:
    db = SQLAlchemy()
    app = Flask("too_early", instance_path=str(tmp_path))
    app.config.update(SECRET_KEY="k" * 32, SESSION_TYPE="sqlalchemy", SESSION_SQLALCHEMY=db,
                      SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'app.db'}")
    with pytest.raises(ConfigurationError, match=r"db.init_app\(app\) before Session\(app\)"):
        Session(app)


def test_an_unknown_bind_key_names_the_configured_ones(tmp_path: Path) -> None:
    db = SQLAlchemy()
    with pytest.raises(ConfigurationError, match=r"'sesions'.*configured bind keys: 'sessions'"):
        flask_sqlalchemy_app(tmp_path, db,
                             SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'app.db'}",
                             SQLALCHEMY_BINDS={"sessions": f"sqlite:///{tmp_path / 's.db'}"},
                             SESSION_SQLALCHEMY_BIND_KEY="sesions")


def test_without_session_sqlalchemy_the_apps_database_uri_is_used(
        make_app: MakeApp, db_url: str, table: str, admin: sa.Engine) -> None:
    app = session_app(make_app, {"SESSION_TYPE": "sqlalchemy", "SQLALCHEMY_DATABASE_URI": db_url,
                                 "SESSION_SQLALCHEMY_TABLE": table})
    app.test_client().post("/login")
    assert len(rows(admin, table)) == 1


# -- in-memory SQLite: Flask-Session's own test configuration, and many apps' ------------


@pytest.mark.parametrize("config", [{"SESSION_SQLALCHEMY": "sqlite://"},
                                    {"SESSION_SQLALCHEMY": "sqlite:///:memory:"},
                                    {"SQLALCHEMY_DATABASE_URI": "sqlite:///"}])
def test_in_memory_sqlite_keeps_sessions_across_requests_and_warns(
        make_app: MakeApp, caplog: pytest.LogCaptureFixture, config: dict[str, Any]) -> None:
    with caplog.at_level(logging.WARNING, logger="sessionkeeper"):
        app = session_app(make_app, {"SESSION_TYPE": "sqlalchemy", **config})
    assert "lost when the process ends" in caplog.text
    client = app.test_client()
    client.post("/login")
    assert [client.post("/count").text for _ in range(3)] == ["1", "2", "3"]
    assert client.get("/whoami").text == "laowang"
    client.get("/logout")
    assert client.get("/whoami").text == "anonymous"
    store_of(app).close()


def test_in_memory_sqlite_takes_concurrent_saves_of_one_session(
        make_app: MakeApp) -> None:
    # Every thread shares the database's one connection.
    app = session_app(make_app, {"SESSION_TYPE": "sqlalchemy", "SESSION_SQLALCHEMY": "sqlite://"})
    client = app.test_client()
    client.post("/login")
    token = session_cookie(client)
    start = threading.Barrier(8)

    def write(i: int) -> list[int]:
        browser = client_with(app, token)
        start.wait(timeout=30)
        return [browser.post(f"/set/k{i}-{j}").status_code for j in range(15)]

    threads_answers: list[list[int]] = []
    threads = [threading.Thread(target=lambda i=i: threads_answers.append(write(i)))
               for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert threads_answers == [[200] * 15] * 8
    keys = client.get("/keys").text.split(",")
    assert len(keys) == 8 * 15 + 1 and "user" in keys
    store_of(app).close()


def test_in_memory_sqlite_is_usable_in_a_forked_worker() -> None:
    # gunicorn --preload: the app (and its database) is made before the fork; the worker
    # starts on a fresh, empty database of its own, which has the table.
    store = SQLAlchemyStore(engine_from_url("sqlite://"), owns_engine=True)
    store.check()
    store.create("session:parent", record({"user": "laowang"}))
    pid = os.fork()
    if pid == 0:  # the worker: reports by exit status and never returns into pytest
        try:
            signal.alarm(20)
            store.create("session:child", record({"user": "laoli"}))
            ok = store.load("session:child", time.time()) is not None
            os._exit(0 if ok else 1)
        finally:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.load("session:parent", time.time()) is not None
    store.close()


@pytest.mark.parametrize("key", ["SESSION_SQLALCHEMY", "SQLALCHEMY_DATABASE_URI"])
def test_a_relative_sqlite_path_is_in_the_instance_folder(make_app: MakeApp, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         key: str) -> None:
    # Where Flask-SQLAlchemy puts sqlite:///app.db, so both name the same file.
    monkeypatch.chdir(tmp_path)
    app = session_app(make_app, {"SESSION_TYPE": "sqlalchemy", key: "sqlite:///app.db"})
    app.test_client().post("/login")
    assert (Path(app.instance_path) / "app.db").is_file()
    assert not (tmp_path / "app.db").exists()
    store_of(app).close()


@pytest.mark.parametrize("value", [42, {"url": "sqlite:///x.db"}, b"sqlite:///x.db", object()])
def test_other_types_are_refused_saying_what_is_accepted(make_app: MakeApp, value: Any) -> None:
    with pytest.raises(ConfigurationError) as caught:
        make_app(SESSION_TYPE="sqlalchemy", SESSION_SQLALCHEMY=value)
    message = str(caught.value)
    assert "Flask-SQLAlchemy object" in message
    assert "Engine" in message
    assert "URL" in message


@pytest.mark.parametrize(("config", "expected"), [
    ({}, "needs SESSION_SQLALCHEMY"),
    ({"SESSION_SQLALCHEMY": "not a database url"}, "is not a database URL"),
    ({"SESSION_SQLALCHEMY": "postgresql+nosuchdriver://u@h/db"}, "driver that is not installed"),
    ({"SESSION_SQLALCHEMY": "sqlite:///x.db", "SESSION_SQLALCHEMY_BIND_KEY": "sessions"},
     "leave it unset"),
    ({"SESSION_SQLALCHEMY": "sqlite:///x.db", "SESSION_SQLALCHEMY_TABLE": ""},
     "SESSION_SQLALCHEMY_TABLE must be a non-empty name"),
    ({"SESSION_SQLALCHEMY": "sqlite:///x.db", "SESSION_SQLALCHEMY_SCHEMA": 7},
     "SESSION_SQLALCHEMY_SCHEMA must be a non-empty name"),
    ({"SESSION_SQLALCHEMY": "sqlite:///x.db", "SESSION_SQLALCHEMY_TIMEOUT": "3"},
     "SESSION_SQLALCHEMY_TIMEOUT must be a number of seconds"),
    ({"SESSION_SQLALCHEMY": "sqlite:///x.db", "SESSION_KEY_PREFIX": "p" * 200},
     "shorten SESSION_KEY_PREFIX"),
])
def test_bad_settings_stop_the_app_at_start_up(make_app: MakeApp, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               config: dict[str, Any], expected: str) -> None:
    monkeypatch.chdir(tmp_path)  # relative SQLite files land in the test's folder
    with pytest.raises(ConfigurationError, match=expected):
        make_app(SESSION_TYPE="sqlalchemy", **config)


@pytest.mark.parametrize("backend", SERVERS, indirect=True)
def test_an_unreachable_database_stops_the_app_at_start_up(make_app: MakeApp,
                                                           db_url: str) -> None:
    url = sa.make_url(db_url).set(port=unused_port())
    with pytest.raises(ConfigurationError, match="session store sqlalchemy is unavailable"):
        make_app(SESSION_TYPE="sqlalchemy", SESSION_SQLALCHEMY=url.render_as_string())


def test_flask_sessions_table_is_reported_not_touched(make_app: MakeApp, db_url: str,
                                                      table: str, admin: sa.Engine) -> None:
    # The table Flask-Session 0.8 creates under the same default name.
    legacy = sa.Table(table, sa.MetaData(),
                      sa.Column("id", sa.Integer, primary_key=True),
                      sa.Column("session_id", sa.String(255), unique=True),
                      sa.Column("data", sa.LargeBinary),
                      sa.Column("expiry", sa.DateTime))
    legacy.create(admin)
    with admin.begin() as conn:
        conn.execute(legacy.insert().values(session_id="session:abc", data=b"x"))
    with pytest.raises(ConfigurationError, match="Flask-Session's table") as caught:
        make_app(sql_config(db_url, table))
    assert "SESSION_SQLALCHEMY_TABLE" in str(caught.value)
    with admin.connect() as conn:
        assert conn.execute(sa.select(legacy.c.session_id)).scalars().all() == ["session:abc"]


# -- table, schema and indexes ------------------------------------------------------------


def test_table_and_indexes_are_created_at_start_up(make_app: MakeApp, backend: str,
                                                   db_url: str, table: str,
                                                   admin: sa.Engine) -> None:
    make_app(sql_config(db_url, table))
    inspector = sa.inspect(admin)
    columns = {c["name"]: c for c in inspector.get_columns(table)}
    assert list(columns) == ["key", "data", "created_at", "accessed_at", "expires_at",
                             "permanent", "user_id", "version"]
    assert inspector.get_pk_constraint(table)["constrained_columns"] == ["key"]
    indexed = {tuple(i["column_names"]) for i in inspector.get_indexes(table)}
    assert {("expires_at",), ("user_id",)} <= indexed
    if backend == "mariadb":
        assert "LONGBLOB" in str(columns["data"]["type"])
    # A second app on the same table finds it and keeps its rows.
    first = session_app(make_app, sql_config(db_url, table)).test_client()
    first.post("/login")
    make_app(sql_config(db_url, table))
    assert first.get("/whoami").text == "laowang"


@pytest.mark.parametrize("backend", SERVERS, indirect=True)
def test_a_schema_is_created_when_missing(make_app: MakeApp, backend: str, db_url: str,
                                          admin: sa.Engine) -> None:
    url = db_url
    schema = f"sktest_schema_{secrets.token_hex(4)}"  # on MariaDB: a database
    try:
        app = session_app(make_app, sql_config(url, "sessions",
                                               SESSION_SQLALCHEMY_SCHEMA=schema))
        inspector = sa.inspect(admin)
        assert schema in inspector.get_schema_names()
        assert inspector.has_table("sessions", schema=schema)
        assert {tuple(i["column_names"]) for i in inspector.get_indexes("sessions", schema)} \
            >= {("expires_at",), ("user_id",)}
        app.test_client().post("/login")
        assert len(rows(admin, "sessions", schema)) == 1
        store_of(app).close()
    finally:
        with admin.begin() as conn:
            drop = "DROP SCHEMA IF EXISTS {} CASCADE" if backend == "postgresql" \
                else "DROP DATABASE IF EXISTS {}"
            conn.execute(sa.text(drop.format(schema)))


def test_workers_starting_together_all_find_the_table(db_url: str, table: str) -> None:
    workers = 4
    stores = [SQLAlchemyStore(engine_from_url(db_url), table=table, owns_engine=True)
              for _ in range(workers)]
    assert check_all_at_once(stores) == []


@pytest.mark.parametrize("backend", SERVERS, indirect=True)
def test_forked_workers_do_not_share_the_parents_connections(db_url: str, table: str) -> None:
    # As under gunicorn --preload: the pool already holds the start-up connection, and
    # the store the connection of its last read, when the workers are forked.
    store = SQLAlchemyStore(engine_from_url(db_url), table=table, owns_engine=True)
    store.check()
    store.create("session:f", record({"user": "laowang"}))
    assert store.load("session:f", time.time()) is not None
    workers = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:  # a worker: reports by exit status and never returns into pytest
            try:
                signal.alarm(20)  # a worker stuck on a shared connection dies
                ok = all(store.load("session:f", time.time()) is not None for _ in range(200))
                os._exit(0 if ok else 1)
            finally:
                os._exit(2)
        workers.append(pid)
    statuses: dict[int, int | None] = dict.fromkeys(workers)
    deadline = time.monotonic() + 40
    while None in statuses.values() and time.monotonic() < deadline:
        for pid in [p for p, status in statuses.items() if status is None]:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                statuses[pid] = os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    for pid in [p for p, status in statuses.items() if status is None]:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    try:
        assert list(statuses.values()) == [0, 0, 0, 0]
        # and the workers left the parent's connections alone
        assert store.load("session:f", time.time()) is not None
    finally:
        store.close()


# -- the direct read (stores/sql_direct.py) -------------------------------------------------
@pytest.mark.parametrize("backend", [*BACKENDS, "mariadb-connector"], indirect=True)
def test_a_read_straight_from_the_driver_equals_one_through_core(db_url: str,
                                                                 table: str) -> None:
    store = SQLAlchemyStore(engine_from_url(db_url), table=table, owns_engine=True)
    try:
        store.check()
        for user in ("Laowang é", None):
            key = f"session:{secrets.token_hex(8)}"
            stored = record({"cart": [1, "二"], "flag": False}, user_id=user)
            stored.permanent = user is None
            store.create(key, stored)
            assert store.reads_directly
            direct = store.load(key, time.time())
            with recorded_statements(store.engine) as sent:  # a listener: Core reads
                assert not store.reads_directly
                through_core = store.load(key, time.time())
            assert sent == ["SELECT"]
            assert direct == through_core
            assert direct is not None and direct.user_id == user
            assert direct.permanent is (user is None)
            assert direct.values == stored.values
            assert type(direct.created_at) is float and isinstance(direct.version, int)
    finally:
        store.close()


def test_connections_kept_between_reads_leave_the_pool_room_for_core(db_url: str,
                                                                      table: str) -> None:
    # Many requests reading at once each hold a connection; afterwards the store keeps
    # fewer than the pool's size checked out, so logins and logouts (Core) never wait.
    store = SQLAlchemyStore(engine_from_url(db_url), table=table, owns_engine=True)
    try:
        store.check()
        store.create("session:k", record({"user": "laowang"}))
        pool = store.engine.pool
        assert isinstance(pool, sa.pool.QueuePool)
        start = threading.Barrier(12)

        def read() -> None:
            start.wait()
            for _ in range(20):
                assert store.load("session:k", time.time()) is not None

        readers = [threading.Thread(target=read) for _ in range(12)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join()
        assert 1 <= pool.checkedout() <= pool.size() - 1
        store.create("session:k2", record({"user": "wang"}))
        store.delete("session:k")
        assert store.load("session:k", time.time()) is None
        store.close()
        assert pool.checkedout() == 0
    finally:
        store.close()


@pytest.mark.parametrize("backend", [*BACKENDS, "mariadb-connector"], indirect=True)
def test_saves_and_refreshes_straight_from_the_driver_equal_ones_through_core(
        db_url: str, table: str) -> None:
    """The same saves (a delta, a new user, a stale version that must re-read and merge,
    a refresh) sent straight to the driver and through Core leave the same rows."""
    store = SQLAlchemyStore(engine_from_url(db_url), table=table, owns_engine=True)
    codec = ValueCodec()
    try:
        store.check()
        rows_left: list[tuple[Any, ...]] = []
        for through_core in (False, True):
            key = f"session:{secrets.token_hex(8)}"
            store.create(key, record({"cart": [1], "gone": "x"}, user_id="Laowang é"))
            with contextlib.ExitStack() as stack:
                if through_core:
                    stack.enter_context(recorded_statements(store.engine))
                assert store.reads_directly is not through_core
                loaded = store.load(key, time.time())
                assert loaded is not None
                first = delta({"cart": [1, "二"]}, deleted={"gone"})
                first.version, first.user_id, first.user_id_changed = (
                    loaded.version, "Ada é", True)
                first.accessed_at, first.expires_at, first.permanent = 10.0, 9e9, False
                assert store.update(key, first)
                stale = delta({"n": 2})  # saved from the version loaded before `first`
                stale.version = loaded.version
                stale.accessed_at, stale.expires_at = 20.0, 9e9 + 1
                assert store.update(key, stale)
                assert store.touch(key, 30.0, 9e9 + 2)
                assert not store.update(f"session:{secrets.token_hex(8)}", delta({"n": 3}))
            stored = store.load(key, time.time())
            assert stored is not None
            assert {k: codec.decode(v) for k, v in stored.values.items()} == {
                "cart": [1, "二"], "n": 2}
            assert (stored.user_id, stored.permanent, stored.accessed_at,
                    stored.expires_at) == ("Ada é", True, 30.0, 9e9 + 2)
            assert stored.version == 3
            rows_left.append((stored.created_at, stored.accessed_at, stored.expires_at,
                              stored.permanent, stored.user_id, int(stored.version)))
        assert rows_left[0][1:] == rows_left[1][1:]
    finally:
        store.close()


def test_sqlalchemy_on_a_sqlite_file_syncs_as_the_embedded_store(tmp_path: Path) -> None:
    """WAL with synchronous=NORMAL, as the embedded store: not one fsync per request."""
    engine = engine_from_url(f"sqlite:///{tmp_path / 'sessions.sqlite3'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", SERVERS, indirect=True)
def test_statement_listeners_and_echo_still_see_every_session_read(
        make_app: MakeApp, db_url: str, table: str, caplog: pytest.LogCaptureFixture) -> None:
    """Tracing (OpenTelemetry's SQLAlchemy instrumentation listens to these events) and
    SQL echo are never bypassed."""
    app = session_app(make_app, sql_config(db_url, table))
    client = app.test_client()
    client.post("/login")
    engine = store_of(app).engine
    with recorded_statements(engine) as sent:
        assert client.get("/whoami").text == "laowang"
    assert sent == ["SELECT"]
    engine.echo = True
    try:
        with caplog.at_level("INFO", logger="sqlalchemy.engine"):
            assert client.get("/whoami").text == "laowang"
    finally:
        engine.echo = False
    assert any(message.startswith("SELECT") for message in caplog.messages)


# -- statements per request ---------------------------------------------------------------


def test_sql_statements_per_request(make_app: MakeApp, db_url: str, table: str) -> None:
    app = session_app(make_app, sql_config(db_url, table))
    client = app.test_client()
    with recorded_statements(store_of(app).engine) as sent:
        def statements_of(method: str, path: str) -> list[str]:
            sent.clear()
            assert client.open(path, method=method).status_code == 200
            return list(sent)

        assert statements_of("GET", "/ping") == []            # no session, no SQL
        assert statements_of("POST", "/login") == ["INSERT"]  # a new session
        assert statements_of("GET", "/ping") == []
        assert statements_of("GET", "/whoami") == ["SELECT"]  # read-only: one SELECT
        # A change: the SELECT that loaded the session, then one versioned UPDATE
        # (the row is not read a second time).
        assert statements_of("POST", "/count") == ["SELECT", "UPDATE"]
        # Binding a user gives a new id: the row read again as stored now, the new row,
        # the forward record of the grace window, then the old row removed.
        assert statements_of("POST", "/sign-in") == ["SELECT", "SELECT", "INSERT", "INSERT",
                                                     "DELETE"]
        assert statements_of("GET", "/logout") == ["SELECT", "DELETE"]


@pytest.mark.parametrize("backend", ["mariadb"], indirect=True)
def test_no_commit_or_rollback_round_trips_on_mariadb(
        make_app: MakeApp, db_url: str, table: str) -> None:
    # Every statement commits by itself (autocommit); pymysql would still send COMMIT and
    # ROLLBACK to the server when asked, each a round trip. Counted by the server.
    app = session_app(make_app, sql_config(db_url, table))
    client = app.test_client()
    client.post("/login")

    # A raw autocommit connection: it sends no COMMIT or ROLLBACK of its own.
    url = sa.make_url(db_url)
    watcher = pymysql.connect(host=url.host, port=url.port, user=url.username,
                              database=url.database, autocommit=True)

    def server_counts() -> dict[str, int]:
        with watcher.cursor() as cursor:
            cursor.execute("SHOW GLOBAL STATUS WHERE Variable_name IN "
                           "('Com_commit', 'Com_rollback')")
            return {name: int(value) for name, value in cursor.fetchall()}

    try:
        before = server_counts()
        assert client.get("/whoami").status_code == 200
        assert client.post("/count").status_code == 200
        assert client.get("/logout").status_code == 200
        assert server_counts() == before
    finally:
        watcher.close()


def test_a_read_only_request_writes_only_when_the_refresh_is_due(
        make_app: MakeApp, db_url: str, table: str) -> None:
    app = session_app(make_app, sql_config(db_url, table, SESSION_REFRESH_FRACTION=0))
    client = app.test_client()
    client.post("/login")
    with recorded_statements(store_of(app).engine) as sent:
        client.get("/whoami")
    assert sent == ["SELECT", "UPDATE"]  # the refresh updates expiry columns only


def test_a_save_that_lost_a_race_rereads_and_keeps_both_changes(
        make_app: MakeApp, db_url: str, table: str) -> None:
    app = session_app(make_app, sql_config(db_url, table))

    @app.post("/slow-set/<key>")
    def slow_set(key: str) -> str:
        session.get("user")
        # Another request of the same session (another thread) saves meanwhile.
        other = client_with(app, session_cookie(client))
        answers: list[int] = []
        thread = threading.Thread(
            target=lambda: answers.append(other.post("/set/theirs").status_code))
        thread.start()
        thread.join(timeout=60)
        assert answers == [200]
        session[key] = True
        return "ok"

    client = app.test_client()
    client.post("/login")
    with recorded_statements(store_of(app).engine) as sent:
        assert client.post("/slow-set/mine").status_code == 200
    assert sent == [
        "SELECT",            # this request loads the session
        "SELECT", "UPDATE",  # the other request loads and saves
        "UPDATE",            # this save matches no row: the version moved on
        "SELECT", "UPDATE",  # re-read, merge this delta into the new row, save
    ]
    assert client.get("/keys").text == "mine,theirs,user"


# -- concurrency ----------------------------------------------------------------------------


@pytest.fixture(params=["url", "engine"])
def url_or_engine(request: pytest.FixtureRequest, db_url: str) -> Iterator[str | sa.Engine]:
    """A URL (the store's own autocommit engine) or an Engine as apps usually make them
    (transactions, REPEATABLE READ on MariaDB)."""
    if request.param == "url":
        yield db_url
        return
    engine = sa.create_engine(db_url)
    yield engine
    engine.dispose()


def test_fifty_concurrent_writers_of_one_session_lose_nothing(
        make_app: MakeApp, url_or_engine: str | sa.Engine, table: str) -> None:
    app = session_app(make_app, sql_config(url_or_engine, table))
    starter = app.test_client()
    starter.post("/login")
    token = session_cookie(starter)
    writers = 50
    start = threading.Barrier(writers)
    statuses: list[int] = []

    def write(i: int) -> None:
        client = client_with(app, token)
        start.wait(timeout=60)
        statuses.append(client.post(f"/set/k{i:02d}").status_code)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert statuses == [200] * writers
    expected = sorted([f"k{i:02d}" for i in range(writers)] + ["user"])
    assert starter.get("/keys").text == ",".join(expected)


def test_a_save_beaten_again_after_rereading_still_keeps_every_change(
        url_or_engine: str | sa.Engine, db_url: str, table: str) -> None:
    engine = url_or_engine if isinstance(url_or_engine, sa.Engine) else engine_from_url(db_url)
    store = SQLAlchemyStore(engine, table=table)
    rival = SQLAlchemyStore(engine_from_url(db_url), table=table, owns_engine=True)
    store.check()
    store.create("session:x", record({"user": "laowang"}))
    rival_saves = [{"first": 1}, {"second": 2}]

    def rival_saves_first(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # Just before each of this store's first two UPDATEs, another request saves.
        if statement.startswith("UPDATE") and rival_saves:
            assert rival.update("session:x", delta(rival_saves.pop(0)))

    sa.event.listen(engine, "before_cursor_execute", rival_saves_first)
    try:
        with recorded_statements(engine) as sent:
            assert store.update("session:x", delta({"mine": 3}))
    finally:
        sa.event.remove(engine, "before_cursor_execute", rival_saves_first)
        rival.close()
    assert sent == ["SELECT", "UPDATE", "SELECT", "UPDATE", "SELECT", "UPDATE"]
    loaded = store.load("session:x", time.time())
    assert loaded is not None
    assert sorted(loaded.values) == ["first", "mine", "second", "user"]
    if not isinstance(url_or_engine, sa.Engine):
        engine.dispose()


@pytest.mark.parametrize("slow_request", ["read-only", "writing"])
def test_a_logout_racing_a_slow_request_is_not_undone(make_app: MakeApp, db_url: str,
                                                      table: str, admin: sa.Engine,
                                                      slow_request: str) -> None:
    # Every read refreshes, so even the read-only request writes at its end.
    app = session_app(make_app, sql_config(db_url, table, SESSION_REFRESH_FRACTION=0))
    loaded, logged_out = threading.Event(), threading.Event()

    @app.get("/slow")
    def slow() -> str:
        user = session.get("user")
        loaded.set()
        assert logged_out.wait(timeout=30)
        if slow_request == "writing":
            session["cart"] = "socks"
        return str(user)

    client = app.test_client()
    client.post("/login")
    token = session_cookie(client)
    slow_client = client_with(app, token)
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(slow_client.get("/slow")))
    thread.start()
    assert loaded.wait(timeout=30)
    assert "Max-Age=0" in client.get("/logout").headers["Set-Cookie"]
    logged_out.set()
    thread.join(timeout=60)

    assert answers[0].text == "laowang"
    assert rows(admin, table) == []  # nothing brought the session back
    if slow_request == "writing":
        assert "Max-Age=0" in answers[0].headers["Set-Cookie"]
    assert client_with(app, token).get("/whoami").text == "anonymous"


# -- cleanup ------------------------------------------------------------------------------


def add_expired_rows(app: Flask, how_many: int) -> None:
    store = store_of(app)
    for _ in range(how_many):
        store.create(f"session:{secrets.token_hex(32)}", record({"user": "gone"}, lifetime=-60))


def test_cleanup_every_n_requests_removes_expired_rows(make_app: MakeApp, db_url: str,
                                                       table: str, admin: sa.Engine) -> None:
    app = session_app(make_app, sql_config(db_url, table, SESSION_CLEANUP_N_REQUESTS=1))
    client = app.test_client()
    client.post("/login")
    add_expired_rows(app, 2)
    assert len(rows(admin, table)) == 3
    assert client.get("/ping").text == "pong"  # does not use the session: no cleanup
    assert len(rows(admin, table)) == 3
    assert client.get("/whoami").text == "laowang"
    live_key = app.extensions["sessionkeeper"].backend.key(session_cookie(client))
    assert [r["key"] for r in rows(admin, table)] == [live_key]


def test_cleanup_command_prints_how_many_it_removed(make_app: MakeApp, db_url: str,
                                                    table: str) -> None:
    app = session_app(make_app, sql_config(db_url, table))
    client = app.test_client()
    client.post("/login")
    add_expired_rows(app, 3)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["sessions", "cleanup"])
    assert result.exit_code == 0, result.output
    assert "removed 3 expired sessions from the sqlalchemy store" in result.output
    assert "removed 0 expired" in runner.invoke(args=["sessions", "cleanup"]).output
    assert client.get("/whoami").text == "laowang"


# -- the store itself -----------------------------------------------------------------------


def test_each_saved_change_moves_the_row_version(sql_store: SQLAlchemyStore) -> None:
    sql_store.create("session:v", record({"a": 1}))
    first = sql_store.load("session:v", time.time())
    assert first is not None and first.version == 1
    assert sql_store.update("session:v", delta({"b": 2}, deleted={"a"}))
    second = sql_store.load("session:v", time.time())
    assert second is not None and second.version == 2
    assert sorted(second.values) == ["b"]
    sql_store.touch("session:v", time.time(), time.time() + 10)
    touched = sql_store.load("session:v", time.time())
    assert touched is not None and touched.version == 2  # a refresh changes no data


def on_another_thread(action: Callable[[], Any]) -> Any:
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(action()))
    thread.start()
    thread.join(timeout=60)
    return answers[0]


def saved_delta(loaded: SessionRecord, values: dict[str, Any]) -> SessionUpdate:
    update = delta(values)
    update.version = loaded.version  # as a request's save carries it
    return update


def test_a_save_on_another_thread_than_its_load_is_one_update(
        sql_store: SQLAlchemyStore) -> None:
    # An ASGI server loads a session on one thread and saves it on another.
    # (Statements recorded from the load on: a save goes the way its load went.)
    sql_store.create("session:t", record({"a": 1}))
    with recorded_statements(sql_store.engine) as sent:
        loaded = sql_store.load("session:t", time.time())
        assert loaded is not None
        assert on_another_thread(
            lambda: sql_store.update("session:t", saved_delta(loaded, {"b": 2})))
    assert sent == ["SELECT", "UPDATE"]
    after = sql_store.load("session:t", time.time())
    assert after is not None and sorted(after.values) == ["a", "b"] and after.version == 2


def test_loads_of_two_sessions_on_one_thread_each_save_without_rereading(
        sql_store: SQLAlchemyStore) -> None:
    sql_store.create("session:one", record({"a": 1}))
    sql_store.create("session:two", record({"a": 2}))
    with recorded_statements(sql_store.engine) as sent:
        one = sql_store.load("session:one", time.time())
        two = sql_store.load("session:two", time.time())
        assert one is not None and two is not None
        assert sql_store.update("session:one", saved_delta(one, {"b": 1}))
        assert sql_store.update("session:two", saved_delta(two, {"b": 2}))
    assert sent == ["SELECT", "SELECT", "UPDATE", "UPDATE"]


def test_a_version_loaded_under_another_key_is_not_merged_into(
        sql_store: SQLAlchemyStore) -> None:
    sql_store.create("session:mine", record({"mine": 1}))
    sql_store.create("session:other", record({"other": 1}))
    other = sql_store.load("session:other", time.time())
    assert other is not None
    assert sql_store.update("session:mine", saved_delta(other, {"b": 2}))
    mine = sql_store.load("session:mine", time.time())
    assert mine is not None and sorted(mine.values) == ["b", "mine"]


def test_a_save_of_a_deleted_session_does_not_recreate_it(sql_store: SQLAlchemyStore) -> None:
    sql_store.create("session:gone", record({"a": 1}))
    assert sql_store.load("session:gone", time.time()) is not None
    sql_store.delete("session:gone")
    assert sql_store.update("session:gone", delta({"b": 2})) is False
    sql_store.touch("session:gone", time.time(), time.time() + 10)
    assert sql_store.load("session:gone", time.time()) is None


def test_values_of_several_megabytes_fit(sql_store: SQLAlchemyStore) -> None:
    big = secrets.token_hex(1_500_000)  # 3 MB of text
    sql_store.create("session:big", record({"big": big}))
    loaded = sql_store.load("session:big", time.time())
    assert loaded is not None
    assert ValueCodec().decode(loaded.values["big"]) == big


def test_user_ids_and_keys_compare_exactly(sql_store: SQLAlchemyStore) -> None:
    sql_store.create("session:lower", record(user_id="alice"))
    sql_store.create("session:upper", record(user_id="Alice"))
    sql_store.create("session:LOWER", record(user_id="alice "))
    now = time.time()
    assert sql_store.keys_for_user("alice", now) == ["session:lower"]
    assert sql_store.keys_for_user("Alice", now) == ["session:upper"]
    assert sql_store.load("session:Lower", now) is None


def test_over_long_user_ids_are_refused_clearly(sql_store: SQLAlchemyStore) -> None:
    with pytest.raises(ValueError, match="at most 255 bytes"):
        sql_store.create("session:long", record(user_id="u" * 256))


# -- the documentation ------------------------------------------------------------------------

DOC = Path(__file__).parents[2] / "docs" / "stores" / "sqlalchemy.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)


@pytest.mark.parametrize("number", range(1, len(EXAMPLES) + 1))
def test_documentation_examples_run(number: int, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # their SQLite files land in the test's folder
    code = compile(EXAMPLES[number - 1], f"{DOC.name}, example {number}", "exec")
    exec(code, {"__name__": "docs_example"})


# -- outages --------------------------------------------------------------------------------


class Forwarder:
    """A loopback TCP forwarder to a database; ``cut()`` drops every connection.

    ``freeze()`` stops passing bytes on but keeps every connection open and accepts new
    ones, as a hung server does (its kernel still acknowledges); ``thaw()`` resumes.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = unused_port()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._flowing = threading.Event()
        self._flowing.set()

    def open(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def cut(self) -> None:
        assert self._listener is not None
        self._flowing.set()  # frozen pumps wake and find their sockets closed
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() below
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                self._flowing.wait()
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.mark.parametrize("backend", DRIVERS, indirect=True)
def test_a_database_outage_answers_503_and_recovers_by_itself(make_app: MakeApp, db_url: str,
                                                               table: str) -> None:
    url = sa.make_url(db_url)
    forwarder = Forwarder((url.host or "127.0.0.1", url.port or 0))
    forwarder.open()
    through = url.set(port=forwarder.port).render_as_string(hide_password=False)
    # Without the circuit breaker: this is about the store recovering by itself.
    app = session_app(make_app, sql_config(through, table, SESSION_BREAKER_SECONDS=0))
    client = app.test_client()
    try:
        client.post("/login")
        forwarder.cut()
        response = client.get("/whoami")
        assert response.status_code == 503
        assert "Service Unavailable" in response.text
        assert client.get("/ping").text == "pong"  # views without the session still work
        forwarder.open()
        assert client.get("/whoami").text == "laowang"  # no restart needed
    finally:
        forwarder.cut()
        store_of(app).close()


def timed(call: Callable[[], Any], limit: float) -> tuple[BaseException | None, float]:
    """What ``call`` raised and how long it took; fails (not hangs) past ``limit``."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=limit)
    assert outcome, f"still blocked after {limit} s"
    return outcome[0], time.monotonic() - started


@pytest.mark.parametrize("backend", DRIVERS, indirect=True)
def test_a_database_that_stops_answering_fails_within_the_timeout(
        make_app: MakeApp, db_url: str, table: str) -> None:
    # The server accepted the connection, then goes silent mid-statement (hung, or a
    # link gone dark): without a bound on each statement the request would wait forever.
    url = sa.make_url(db_url)
    forwarder = Forwarder((url.host or "127.0.0.1", url.port or 0))
    forwarder.open()
    through = url.set(port=forwarder.port).render_as_string(hide_password=False)
    app = session_app(make_app, sql_config(through, table, SESSION_SQLALCHEMY_TIMEOUT=1,
                                           SESSION_BREAKER_SECONDS=0))
    store = store_of(app)
    client = app.test_client()
    try:
        client.post("/login")
        key = app.extensions["sessionkeeper"].backend.key(session_cookie(client))
        assert store.load(key, time.time()) is not None  # a pooled, working connection
        forwarder.freeze()
        raised, took = timed(lambda: store.load(key, time.time()), limit=30)
        assert isinstance(raised, StoreUnavailable), raised
        assert "connection lost after 1." in str(raised)
        # One timeout, not two: a statement that timed out is not retried.
        assert 0.9 < took < 1.8
        answered: list[Any] = []
        _, took = timed(lambda: answered.append(client.get("/whoami")), limit=30)
        assert answered[0].status_code == 503  # a new connection: the connect timeout
        assert took < 2.8
        assert client.get("/ping").text == "pong"
        forwarder.thaw()
        assert client.get("/whoami").text == "laowang"  # recovered, nothing lost
        assert client.post("/count").text == "1"
    finally:
        forwarder.cut()
        store.close()


def test_the_statement_timeouts_yield_to_the_urls_own() -> None:
    url = sa.make_url(sqlalchemy_mariadb.url()).update_query_dict({"read_timeout": "8"})
    engine = engine_from_url(url, timeout=2)
    sent: dict[str, Any] = {}

    @sa.event.listens_for(engine, "do_connect")
    def capture(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        sent.update(cparams)

    try:
        with engine.connect() as conn:
            conn.execute(sa.select(sa.literal(1)))
    finally:
        engine.dispose()
    # What the driver was given: the URL's read timeout, the store's for the rest.
    assert (sent["read_timeout"], sent["write_timeout"], sent["connect_timeout"]) == (8, 2, 2)



# -- a database restart: dead pooled connections ----------------------------------------
@pytest.mark.parametrize("server", ["postgresql", "mariadb"])
def test_connections_killed_by_the_server_cost_no_failed_request(
        make_app: MakeApp, server: str, tmp_path: Path) -> None:
    # What a database restart leaves behind: every pooled connection is dead. Without a
    # ping per request, the store must notice and retry on a fresh one, so the user sees
    # nothing: no 503, still logged in, and writes still land.
    url = url_for(server, tmp_path)
    table = f"sktest_{secrets.token_hex(4)}"
    app = session_app(make_app, sql_config(url, table))
    engine = store_of(app).engine
    admin = engine_from_url(url)

    def kill_the_pooled_connection() -> None:
        # Only this test's own connections (the server is shared with other tests): the
        # ones the store keeps between statements (sql_direct.IdleConnections) and the
        # pool's, by the ids the drivers took from the server's greeting (no round trip).
        idle = store_of(app)._idle
        shelved = list(idle._idle) if idle is not None else []
        held = [engine.raw_connection() for _ in range(engine.pool.checkedin())]
        own = [c.dbapi_connection.get_backend_pid() if server == "postgresql"
               else c.dbapi_connection.thread_id() for c in shelved + held]
        for connection in held:
            connection.close()
        assert own
        for backend in own:
            with admin.connect() as conn, contextlib.suppress(sa.exc.DBAPIError):
                conn.execute(sa.text(f"SELECT pg_terminate_backend({backend})"
                                     if server == "postgresql" else f"KILL {backend}"))

    try:
        client = app.test_client()
        assert client.post("/login").status_code == 200
        kill_the_pooled_connection()
        read = client.get("/whoami")
        assert (read.status_code, read.text) == (200, "laowang")
        kill_the_pooled_connection()
        wrote = client.post("/count")
        assert (wrote.status_code, wrote.text) == (200, "1")
        kill_the_pooled_connection()
        fresh = app.test_client()
        assert fresh.post("/login").status_code == 200  # a create on a dead connection
        assert fresh.get("/whoami").text == "laowang"
    finally:
        sa.Table(table, sa.MetaData()).drop(admin, checkfirst=True)
        admin.dispose()
