"""Switching from Flask-Session keeps users logged in.

A real Flask-Session 0.8 app logs a user in on a real store; the same app, with only
the import changed to sessionkeeper, runs ``flask sessions migrate`` (or, for memcached
and filesystem sessions, converts each one when its user comes back); the cookie the
browser already holds still shows the user logged in. Payload decoding is tested on
what Flask-Session's own serializers and cachelib write, never on hand-made bytes only.
"""

from __future__ import annotations

import importlib
import os
import pickle
import secrets
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from datetime import time as dt_time
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import flask_session
import pytest
import redis
from cachelib.file import FileSystemCache
from flask import Flask, session
from flask.testing import FlaskClient
from providers._shared import random_prefix
from pymemcache.client.base import Client as MemcacheClient
from servers import ServerGroup, require, start_memcached, start_or_skip, unused_port

from sessionkeeper import legacy, legacy_cachelib
from sessionkeeper.errors import ConfigurationError, SessionKeeperError
from sessionkeeper.flask import Session
from sessionkeeper.flask.migrate import migrate_on_first_use
from sessionkeeper.ids import storage_key
from sessionkeeper.legacy import (
    LegacyPickleData,
    UnreadableLegacyData,
    accepts_sid,
    decode_flask_session_payload,
    is_pickle,
    load_pickled_payload,
    read_payload,
    to_record,
)
from sessionkeeper.legacy_cachelib import (
    cachelib_name,
    cachelib_path,
    converted_file_key,
    read_cachelib_file,
)
from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.filesystem import FileSystemStore

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning:flask_session",  # SESSION_USE_SIGNER, filesystem type
)

SECRET = "a long random secret for both apps"
SID_SHAPED = secrets.token_urlsafe(32)


# -- the same app twice: on Flask-Session, then on sessionkeeper ------------------------
def add_views(app: Flask) -> None:
    @app.post("/login")
    def login() -> str:
        session["user"] = "alice"
        session["cart"] = [1, 2, {"sku": "x.y"}]
        session["raw"] = b"\x00\xff"
        session["since"] = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
        return "ok"

    @app.get("/whoami")
    def whoami() -> str:
        return str(session.get("user", "anonymous"))

    @app.get("/dump")
    def dump() -> str:
        return repr(sorted((k, v) for k, v in session.items() if k != "_permanent"))


def flask_session_app(config: dict[str, Any]) -> Flask:
    app = Flask("on_flask_session")
    app.config.update(SECRET_KEY=SECRET, **config)
    flask_session.Session(app)
    add_views(app)
    return app


def sessionkeeper_app(config: dict[str, Any], tmp_path: Path) -> Flask:
    app = Flask("on_sessionkeeper", instance_path=str(tmp_path / "instance"))
    app.config.update(SECRET_KEY=SECRET, **config)
    Session(app)
    add_views(app)
    return app


def log_in(app: Flask) -> tuple[str, str]:
    """Log alice in; the cookie value the browser keeps, and what the app showed."""
    client = app.test_client()
    assert client.post("/login").text == "ok"
    assert client.get("/whoami").text == "alice"
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value, client.get("/dump").text


def browser_with(cookie: str, app: Flask) -> FlaskClient:
    client = app.test_client()
    client.set_cookie("session", cookie)
    return client


def run_migrate(app: Flask, *args: str) -> Any:
    result = app.test_cli_runner().invoke(args=["sessions", "migrate", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def count_line(output: str, label: str) -> int:
    for line in output.splitlines():
        if line.strip().startswith(label):
            return int(line.rsplit(None, 1)[-1])
    raise AssertionError(f"no {label!r} line in:\n{output}")


# -- Redis ------------------------------------------------------------------------------
@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        client.ping()
    except redis.RedisError:
        require(False, "the machine's Redis on 127.0.0.1:6379")
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client: redis.Redis) -> Iterator[str]:
    prefix = random_prefix("migration")
    yield prefix
    keys = list(redis_client.scan_iter(match=prefix + "*"))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture
def fs_redis_config(redis_client: redis.Redis, redis_prefix: str) -> dict[str, Any]:
    """Flask-Session's Redis configuration, under this test's key prefix."""
    return {"SESSION_TYPE": "redis", "SESSION_REDIS": redis_client,
            "SESSION_KEY_PREFIX": redis_prefix}


def redis_target(target: str, client: redis.Redis, tmp_path: Path) -> tuple[dict[str, Any],
                                                                           list[str]]:
    """Config of the sessionkeeper app, and the extra migrate arguments it needs."""
    if target == "same store":
        pytest.importorskip("sessionkeeper.stores.redis")
        return {"SESSION_REDIS": client}, []
    return {"SESSION_TYPE": "sqlite", "SESSION_REDIS": client,
            "SESSION_SQLITE_PATH": str(tmp_path / "new.sqlite3")}, ["--from", "redis"]


def moved_to_sqlite(config: dict[str, Any], client: redis.Redis,
                    tmp_path: Path) -> tuple[Flask, list[str]]:
    """The app of ``config`` moved to sessionkeeper's SQLite store, and the migrate
    arguments that read Flask-Session's records from ``client``."""
    extra, args = redis_target("sqlite", client, tmp_path)
    return sessionkeeper_app({**config, **extra}, tmp_path), args


@pytest.mark.parametrize("target", ["same store", "sqlite"])
@pytest.mark.parametrize(("fmt", "signed"), [("msgpack", False), ("json", True)])
def test_redis_users_stay_logged_in_after_migrate(
    redis_client: redis.Redis, redis_prefix: str, tmp_path: Path,
    fs_redis_config: dict[str, Any], target: str, fmt: str, signed: bool,
) -> None:
    config = {**fs_redis_config, "SESSION_SERIALIZATION_FORMAT": fmt,
              "SESSION_USE_SIGNER": signed}
    cookie, seen_before = log_in(flask_session_app(config))
    assert ("." in cookie) is signed  # itsdangerous signature when signed
    ttl_before = redis_client.ttl(redis_prefix + cookie.split(".")[0])

    extra, args = redis_target(target, redis_client, tmp_path)
    new_app = sessionkeeper_app({**config, **extra}, tmp_path)
    assert browser_with(cookie, new_app).get("/whoami").text == "anonymous"  # not yet

    result = run_migrate(new_app, *args)
    assert result.exit_code == 0, result.output
    assert count_line(result.output, "migrated:") == 1
    assert "still in place" in result.output

    browser = browser_with(cookie, new_app)
    assert browser.get("/whoami").text == "alice"
    assert browser.get("/dump").text == seen_before  # values as Flask-Session gave them
    record = new_app.extensions["sessionkeeper"].backend.store.load(
        new_app.extensions["sessionkeeper"].backend.key(cookie.split(".")[0]), time.time())
    assert record.permanent is True
    assert record.expires_at - time.time() == pytest.approx(ttl_before, abs=5)


def test_a_pickled_record_is_skipped_unless_pickle_is_allowed(
    redis_client: redis.Redis, redis_prefix: str, tmp_path: Path,
) -> None:
    # What Flask-Session before 0.7 wrote: pickle.dumps(dict(session)).
    sid = secrets.token_urlsafe(32)
    redis_client.set(redis_prefix + sid, pickle.dumps({"_permanent": True, "user": "bob"}),
                     ex=3600)
    app, args = moved_to_sqlite({"SESSION_KEY_PREFIX": redis_prefix}, redis_client, tmp_path)

    result = run_migrate(app, *args)
    assert count_line(result.output, "skipped, pickled") == 1
    assert count_line(result.output, "migrated:") == 0
    assert "--allow-pickle" in result.output
    assert browser_with(sid, app).get("/whoami").text == "anonymous"

    result = run_migrate(app, *args, "--allow-pickle")
    assert "WARNING" in result.output and "run code" in result.output
    assert count_line(result.output, "migrated:") == 1
    assert browser_with(sid, app).get("/whoami").text == "bob"


def test_redis_sessions_can_also_move_when_each_user_comes_back(
    redis_client: redis.Redis, redis_prefix: str, tmp_path: Path,
    fs_redis_config: dict[str, Any],
) -> None:
    cookie, seen_before = log_in(flask_session_app(fs_redis_config))
    ttl_before = redis_client.ttl(redis_prefix + cookie)
    app, _ = moved_to_sqlite(fs_redis_config, redis_client, tmp_path)
    migrate_on_first_use(app, "redis")

    browser = browser_with(cookie, app)
    assert browser.get("/whoami").text == "alice"
    assert browser.get("/dump").text == seen_before
    assert redis_client.exists(redis_prefix + cookie) == 0
    backend = app.extensions["sessionkeeper"].backend
    record = backend.store.load(backend.key(cookie), time.time())
    assert record.expires_at - time.time() == pytest.approx(ttl_before, abs=5)


def test_delete_old_removes_copied_records_and_nothing_else(
    redis_client: redis.Redis, redis_prefix: str, tmp_path: Path,
    fs_redis_config: dict[str, Any],
) -> None:
    cookie, _ = log_in(flask_session_app(fs_redis_config))
    pickled_sid = secrets.token_urlsafe(32)
    redis_client.set(redis_prefix + pickled_sid, pickle.dumps({"user": "carol"}), ex=3600)
    # Keys sessionkeeper itself may keep under the same prefix are never touched.
    own_key = redis_prefix + "ab" * 32
    redis_client.set(own_key, b"not Flask-Session's", ex=3600)
    app, args = moved_to_sqlite(fs_redis_config, redis_client, tmp_path)

    first = run_migrate(app, *args)
    assert count_line(first.output, "other keys under the prefix") == 1
    result = run_migrate(app, *args, "--delete-old")
    assert count_line(result.output, "already migrated") == 1  # not copied twice
    assert "Deleted 1 old records; kept 1 that could not be migrated." in result.output
    assert redis_client.exists(redis_prefix + cookie) == 0
    assert redis_client.exists(redis_prefix + pickled_sid) == 1
    assert redis_client.get(own_key) == b"not Flask-Session's"
    assert browser_with(cookie, app).get("/whoami").text == "alice"


def test_dry_run_writes_nothing(redis_client: redis.Redis, redis_prefix: str,
                                tmp_path: Path, fs_redis_config: dict[str, Any]) -> None:
    cookie, _ = log_in(flask_session_app(fs_redis_config))
    app, args = moved_to_sqlite(fs_redis_config, redis_client, tmp_path)
    result = run_migrate(app, *args, "--dry-run", "--delete-old")
    assert count_line(result.output, "migrated:") == 1
    assert "Dry run" in result.output
    assert browser_with(cookie, app).get("/whoami").text == "anonymous"
    assert redis_client.exists(redis_prefix + cookie) == 1


def with_login(app: Flask) -> Flask:
    """``app`` with Flask-Login: /sign-in logs user 7 in, /me says who is logged in."""
    import flask_login

    class User(flask_login.UserMixin):
        def __init__(self, user_id: str) -> None:
            self.id = user_id

    flask_login.LoginManager(app).user_loader(User)

    @app.post("/sign-in")
    def sign_in() -> str:
        flask_login.login_user(User("7"))
        return "signed in"

    @app.get("/me")
    def me() -> str:
        user = flask_login.current_user
        return f"user {user.id}" if user.is_authenticated else "guest"

    return app


def test_flask_login_users_stay_logged_in(redis_client: redis.Redis, tmp_path: Path,
                                          fs_redis_config: dict[str, Any]) -> None:
    old = with_login(flask_session_app(fs_redis_config)).test_client()
    old.post("/sign-in")
    cookie = old.get_cookie("session")
    assert cookie is not None and old.get("/me").text == "user 7"

    app, args = moved_to_sqlite(fs_redis_config, redis_client, tmp_path)
    with_login(app)
    assert run_migrate(app, *args).exit_code == 0
    assert browser_with(cookie.value, app).get("/me").text == "user 7"


# -- SQLAlchemy (SQLite file, PostgreSQL, MariaDB) --------------------------------------
@dataclass
class LegacyDatabase:
    """The database Flask-Session used; both tables named here are dropped afterwards."""

    url: str
    engine: Any  # for raw SQL in tests
    table: str  # Flask-Session's (SESSION_SQLALCHEMY_TABLE, read with --from-table)
    own_table: str  # sessionkeeper's, when it keeps its sessions in the same database
    cleanup: ExitStack


@pytest.fixture(params=["sqlite file", "postgresql", "mariadb"])
def legacy_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LegacyDatabase]:
    import sqlalchemy as sa
    from providers._sqlalchemy import dropped_afterwards, random_table

    if request.param == "sqlite file":
        url = f"sqlite:///{tmp_path / 'app.sqlite3'}"
    else:  # the machine's server; skips (fails in CI) naming what is missing
        url = importlib.import_module(f"providers.sqlalchemy_{request.param}").url()
    with ExitStack() as cleanup:
        engine = sa.create_engine(url)
        cleanup.callback(engine.dispose)
        database = LegacyDatabase(url, engine, random_table(), random_table(), cleanup)
        for table in (database.table, database.own_table):
            cleanup.enter_context(dropped_afterwards(engine, table))
        # The apps' engines are disposed first: no pooled connection holds a lock then.
        yield database


def sqlalchemy_app(extension: Callable[[Flask], Any], legacy_db: LegacyDatabase,
                   tmp_path: Path, **config: Any) -> Flask:
    """An app whose ``extension`` (Flask-Session or sessionkeeper) is given a
    Flask-SQLAlchemy object on the legacy database, as Flask-Session was."""
    from flask_sqlalchemy import SQLAlchemy

    db = SQLAlchemy()
    app = Flask(extension.__module__.split(".")[0], instance_path=str(tmp_path / "instance"))
    app.config.update({"SECRET_KEY": SECRET, "SESSION_TYPE": "sqlalchemy",
                       "SESSION_SQLALCHEMY": db, "SQLALCHEMY_DATABASE_URI": legacy_db.url,
                       **config})
    db.init_app(app)
    with app.app_context():
        for engine in db.engines.values():
            legacy_db.cleanup.callback(engine.dispose)
    extension(app)
    add_views(app)
    return app


def flask_session_sqlalchemy_app(legacy_db: LegacyDatabase, tmp_path: Path) -> Flask:
    return sqlalchemy_app(flask_session.Session, legacy_db, tmp_path,
                          SESSION_SQLALCHEMY_TABLE=legacy_db.table)


def sessionkeeper_sqlalchemy_app(legacy_db: LegacyDatabase, target: str, tmp_path: Path,
                                 ) -> tuple[Flask, list[str]]:
    """The app on sessionkeeper, and the migrate arguments reading Flask-Session's table."""
    args = ["--from-table", legacy_db.table]
    if target == "same store":
        pytest.importorskip("sessionkeeper.stores.sqlalchemy")
        # Flask-Session's table keeps its name; sessionkeeper's gets another.
        config = {"SESSION_SQLALCHEMY_TABLE": legacy_db.own_table}
    else:
        config = {"SESSION_TYPE": "sqlite", "SESSION_SQLITE_PATH": str(tmp_path / "new.sqlite3")}
        args += ["--from", "sqlalchemy"]
    return sqlalchemy_app(Session, legacy_db, tmp_path, **config), args


def count_rows(legacy_db: LegacyDatabase) -> int:
    import sqlalchemy as sa

    with legacy_db.engine.connect() as connection:
        return int(connection.execute(
            sa.text(f"SELECT count(*) FROM {legacy_db.table}")).scalar_one())


@pytest.mark.parametrize("target", ["same store", "sqlite"])
def test_sqlalchemy_users_stay_logged_in_after_migrate(legacy_db: LegacyDatabase,
                                                       tmp_path: Path, target: str) -> None:
    cookie, seen_before = log_in(flask_session_sqlalchemy_app(legacy_db, tmp_path))
    app, args = sessionkeeper_sqlalchemy_app(legacy_db, target, tmp_path)
    assert browser_with(cookie, app).get("/whoami").text == "anonymous"  # not yet

    result = run_migrate(app, *args)
    assert result.exit_code == 0, result.output
    assert count_line(result.output, "migrated:") == 1
    browser = browser_with(cookie, app)
    assert browser.get("/whoami").text == "alice"
    assert browser.get("/dump").text == seen_before
    assert count_rows(legacy_db) == 1  # still in place without --delete-old


def test_expired_rows_are_skipped_and_deleted_with_delete_old(legacy_db: LegacyDatabase,
                                                              tmp_path: Path) -> None:
    import sqlalchemy as sa

    cookie, _ = log_in(flask_session_sqlalchemy_app(legacy_db, tmp_path))
    # Flask-Session writes naive UTC datetimes (utcnow) into a DateTime column without
    # a time zone; the typed parameter is rendered as each dialect stores DateTime.
    past = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(minutes=1)
    expire = sa.text(f"UPDATE {legacy_db.table} SET expiry = :past").bindparams(
        sa.bindparam("past", past, type_=sa.DateTime()))
    with legacy_db.engine.begin() as connection:
        assert connection.execute(expire).rowcount == 1
    app, args = sessionkeeper_sqlalchemy_app(legacy_db, "sqlite", tmp_path)

    result = run_migrate(app, *args, "--delete-old")
    assert count_line(result.output, "skipped, expired") == 1
    assert count_line(result.output, "migrated:") == 0
    assert "Deleted 1 old records." in result.output
    assert count_rows(legacy_db) == 0
    assert browser_with(cookie, app).get("/whoami").text == "anonymous"


def test_a_table_that_is_not_flask_sessions_is_a_clear_error(legacy_db: LegacyDatabase,
                                                             tmp_path: Path) -> None:
    flask_session_sqlalchemy_app(legacy_db, tmp_path)  # creates Flask-Session's table
    app, args = sessionkeeper_sqlalchemy_app(legacy_db, "sqlite", tmp_path)
    missing = legacy_db.own_table  # never created with the "sqlite" target
    result = run_migrate(app, *args, "--from-table", missing)
    assert result.exit_code == 1
    assert f"cannot list Flask-Session's table '{missing}'" in result.output
    assert "Traceback" not in result.output


# -- filesystem (cachelib) --------------------------------------------------------------
@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Call it to make any unpickling or cachelib file read from then on fail the test.

    ``forbid(any_pickle=False)`` forbids only the migration's own: an app whose store is
    cachelib still has cachelib unpickle the bytes that store wrote.
    """

    def forbid(*, any_pickle: bool = True) -> None:
        def boom(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("unpickled or read a cachelib file while serving a request")

        monkeypatch.setattr(legacy, "load_pickled_payload", boom)
        monkeypatch.setattr(legacy_cachelib, "read_cachelib_file", boom)
        if any_pickle:
            monkeypatch.setattr(pickle, "loads", boom)
            monkeypatch.setattr(pickle, "load", boom)

    return forbid


def filesystem_config(folder: Path) -> dict[str, Any]:
    return {"SESSION_TYPE": "filesystem", "SESSION_FILE_DIR": str(folder)}


def test_filesystem_users_stay_logged_in_after_migrate_with_allow_pickle(
    tmp_path: Path, no_unpickling: Callable[..., None],
) -> None:
    folder = tmp_path / "flask_session"
    config = filesystem_config(folder)
    cookie, seen_before = log_in(flask_session_app(config))
    legacy_file = cachelib_path(folder, "session:", cookie)
    assert legacy_file.exists()

    app = sessionkeeper_app(config, tmp_path)
    migrate_on_first_use(app)
    refused = run_migrate(app)
    assert count_line(refused.output, "skipped, pickled") == 1
    assert "cachelib pickles every session" in refused.output
    assert "--allow-pickle" in refused.output and "WARNING" not in refused.output
    assert browser_with(cookie, app).get("/whoami").text == "anonymous"

    result = run_migrate(app, "--allow-pickle")
    assert result.exit_code == 0, result.output
    assert "WARNING" in result.output and "run code" in result.output
    assert count_line(result.output, "migrated:") == 1
    assert "migrate_on_first_use(app)" in result.output
    assert legacy_file.exists()  # old records stay unless --delete-old

    no_unpickling()  # from here on: serving requests only
    browser = browser_with(cookie, app)
    assert browser.get("/whoami").text == "alice"
    assert browser.get("/dump").text == seen_before
    assert not legacy_file.exists()  # handed over once, so a re-run cannot convert it again
    backend = app.extensions["sessionkeeper"].backend
    store = FileSystemStore(folder)
    assert store.load(backend.key(cookie), time.time()) is not None
    assert store.load(converted_file_key(backend, cachelib_name("session:", cookie)),
                      time.time()) is None
    assert browser_with(cookie, app).get("/whoami").text == "alice"  # now a plain session


def test_filesystem_files_are_never_read_while_serving_requests(
    tmp_path: Path, no_unpickling: Callable[..., None],
) -> None:
    folder = tmp_path / "flask_session"
    config = filesystem_config(folder)
    cookie, _ = log_in(flask_session_app(config))
    app = sessionkeeper_app(config, tmp_path)
    migrate_on_first_use(app)
    no_unpickling()
    # Without the command's explicit conversion the user logs in again; the file stays.
    assert browser_with(cookie, app).get("/whoami").text == "anonymous"
    assert cachelib_path(folder, "session:", cookie).exists()


def test_filesystem_migrate_dry_run_and_delete_old(tmp_path: Path) -> None:
    folder = tmp_path / "flask_session"
    config = filesystem_config(folder)
    cookie, _ = log_in(flask_session_app(config))
    # cachelib's layout: a native "I" expiry (here a minute ago), then the pickle.
    cachelib_path(folder, "session:", SID_SHAPED).write_bytes(
        struct.pack("I", int(time.time()) - 60) + pickle.dumps({"user": "old"}))
    app = sessionkeeper_app(config, tmp_path)
    migrate_on_first_use(app)

    dry = run_migrate(app, "--allow-pickle", "--dry-run")
    assert count_line(dry.output, "migrated:") == 1
    assert browser_with(cookie, app).get("/whoami").text == "anonymous"

    result = run_migrate(app, "--allow-pickle", "--delete-old")
    assert count_line(result.output, "migrated:") == 1
    assert count_line(result.output, "skipped, expired") == 1
    assert "Deleted 2 old records." in result.output
    assert not cachelib_path(folder, "session:", cookie).exists()
    assert browser_with(cookie, app).get("/whoami").text == "alice"  # converted before


def test_a_malicious_file_is_not_run_by_the_command(tmp_path: Path) -> None:
    folder = tmp_path / "flask_session"
    FileSystemCache(str(folder), threshold=500).set("session:" + SID_SHAPED,
                                                    {"user": Exploit()}, timeout=600)
    app = sessionkeeper_app(filesystem_config(folder), tmp_path)
    result = run_migrate(app, "--allow-pickle")
    assert count_line(result.output, "skipped, unreadable") == 1
    assert "record_that_code_ran" in result.output
    assert RAN == []


def test_first_use_migration_leaves_other_cookies_alone(tmp_path: Path) -> None:
    app = sessionkeeper_app(filesystem_config(tmp_path / "flask_session"), tmp_path)
    migrate_on_first_use(app)
    for cookie in ["../../etc/passwd", "x" * 3000, SID_SHAPED]:
        assert browser_with(cookie, app).get("/whoami").status_code == 200


def test_first_use_migration_needs_a_source_it_can_read_by_id(tmp_path: Path) -> None:
    app = sessionkeeper_app({"SESSION_TYPE": "sqlite",
                             "SESSION_SQLITE_PATH": str(tmp_path / "s.sqlite3")}, tmp_path)
    with pytest.raises(ConfigurationError, match="flask sessions migrate"):
        migrate_on_first_use(app)
    with pytest.raises(ConfigurationError, match="Session"):
        migrate_on_first_use(Flask("bare"), "memcached")


# -- memcached --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def memcached() -> Iterator[ServerGroup]:
    group = start_or_skip(start_memcached, 1)
    yield group
    group.stop()


@pytest.fixture
def memcache_client(memcached: ServerGroup) -> Iterator[MemcacheClient]:
    client = MemcacheClient(memcached[0], connect_timeout=5, timeout=5)
    yield client
    client.close()


def memcached_target(target: str, server: tuple[str, int], tmp_path: Path) -> dict[str, Any]:
    address = f"{server[0]}:{server[1]}"
    if target == "same store":
        return {"SESSION_TYPE": "memcached", "SESSION_MEMCACHED": address}
    # Reading Flask-Session's memcached while sessions move to another store.
    return {"SESSION_TYPE": "sqlite", "SESSION_MEMCACHED": address,
            "SESSION_SQLITE_PATH": str(tmp_path / "new.sqlite3")}


def test_first_use_migration_waits_until_a_view_reads_the_session(
    memcached: ServerGroup, memcache_client: MemcacheClient, tmp_path: Path,
) -> None:
    prefix = random_prefix("migration")
    config = {"SESSION_TYPE": "memcached", "SESSION_MEMCACHED": memcache_client,
              "SESSION_KEY_PREFIX": prefix}
    cookie, _ = log_in(flask_session_app(config))
    app = sessionkeeper_app(config, tmp_path)

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    migrate_on_first_use(app, "memcached")
    browser = browser_with(cookie, app)

    assert browser.get("/ping").text == "pong"
    assert memcache_client.get(prefix + cookie) is not None  # not looked up, not moved
    assert browser.get("/whoami").text == "alice"
    assert memcache_client.get(prefix + cookie) is None  # moved when the session was read


@pytest.mark.parametrize("target", ["same store", "sqlite"])
@pytest.mark.parametrize(("fmt", "signed"), [("msgpack", False), ("json", True)])
def test_memcached_users_stay_logged_in_on_their_next_visit(
    memcached: ServerGroup, memcache_client: MemcacheClient, tmp_path: Path, target: str,
    fmt: str, signed: bool,
) -> None:
    prefix = random_prefix("migration")
    config = {"SESSION_TYPE": "memcached", "SESSION_MEMCACHED": memcache_client,
              "SESSION_KEY_PREFIX": prefix, "SESSION_SERIALIZATION_FORMAT": fmt,
              "SESSION_USE_SIGNER": signed}
    cookie, seen_before = log_in(flask_session_app(config))
    old_key = prefix + cookie.split(".")[0]
    assert memcache_client.get(old_key) is not None  # where Flask-Session keeps it

    settings = {**config, **memcached_target(target, memcached[0], tmp_path)}
    without_hook = sessionkeeper_app(settings, tmp_path)
    assert browser_with(cookie, without_hook).get("/whoami").text == "anonymous"

    app = sessionkeeper_app(settings, tmp_path)
    migrate_on_first_use(app, "memcached")
    browser = browser_with(cookie, app)
    assert browser.get("/whoami").text == "alice"
    assert browser.get("/dump").text == seen_before  # values as Flask-Session gave them
    assert memcache_client.get(old_key) is None  # converted once, then served from the store
    assert browser_with(cookie, app).get("/whoami").text == "alice"
    assert browser_with(cookie, without_hook).get("/whoami").text == "alice"
    backend = app.extensions["sessionkeeper"].backend
    record = backend.store.load(backend.key(cookie.split(".")[0]), time.time())
    assert record.permanent is True


def test_memcached_pickled_records_are_never_unpickled_at_request_time(
    memcached: ServerGroup, memcache_client: MemcacheClient, tmp_path: Path,
) -> None:
    prefix = random_prefix("migration")
    sid = secrets.token_urlsafe(32)
    # What Flask-Session before 0.7 wrote, here naming code to run.
    memcache_client.set(prefix + sid, pickle.dumps({"user": Exploit()}), expire=600)
    app = sessionkeeper_app({**memcached_target("same store", memcached[0], tmp_path),
                             "SESSION_KEY_PREFIX": prefix}, tmp_path)
    migrate_on_first_use(app)
    assert browser_with(sid, app).get("/whoami").text == "anonymous"
    assert RAN == []
    assert memcache_client.get(prefix + sid) is not None  # left as it was


def test_memcached_users_stay_logged_in_with_flask_login(
    memcached: ServerGroup, memcache_client: MemcacheClient, tmp_path: Path,
) -> None:
    config = {"SESSION_TYPE": "memcached", "SESSION_MEMCACHED": memcache_client,
              "SESSION_KEY_PREFIX": random_prefix("migration")}
    old = with_login(flask_session_app(config)).test_client()
    old.post("/sign-in")
    cookie = old.get_cookie("session")
    assert cookie is not None and old.get("/me").text == "user 7"

    app = with_login(sessionkeeper_app(
        {**config, **memcached_target("same store", memcached[0], tmp_path)}, tmp_path))
    migrate_on_first_use(app)
    assert browser_with(cookie.value, app).get("/me").text == "user 7"


def test_an_unreachable_memcached_answers_503_not_a_logout(tmp_path: Path) -> None:
    port = unused_port()
    app = sessionkeeper_app({"SESSION_TYPE": "sqlite",
                             "SESSION_SQLITE_PATH": str(tmp_path / "new.sqlite3"),
                             "SESSION_MEMCACHED": f"127.0.0.1:{port}"}, tmp_path)
    migrate_on_first_use(app, "memcached")
    assert browser_with(SID_SHAPED, app).get("/whoami").status_code == 503


def test_memcached_migrate_command_points_to_first_use(memcached: ServerGroup,
                                                       tmp_path: Path) -> None:
    app = sessionkeeper_app(memcached_target("same store", memcached[0], tmp_path), tmp_path)
    result = run_migrate(app)
    assert result.exit_code == 1 and "migrate_on_first_use(app)" in result.output


# -- other sources and refusals ---------------------------------------------------------
def test_an_unreachable_source_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    port = unused_port()
    app = sessionkeeper_app({"SESSION_TYPE": "sqlite",
                             "SESSION_SQLITE_PATH": str(tmp_path / "new.sqlite3"),
                             "SESSION_REDIS": f"redis://127.0.0.1:{port}/0"}, tmp_path)
    result = run_migrate(app, "--from", "redis")
    assert result.exit_code == 1
    assert "cannot list Redis keys 'session:*'" in result.output
    assert "Traceback" not in result.output


def test_nothing_to_migrate_says_so(redis_client: redis.Redis, redis_prefix: str,
                                    tmp_path: Path) -> None:
    app, args = moved_to_sqlite({"SESSION_KEY_PREFIX": redis_prefix}, redis_client, tmp_path)
    result = run_migrate(app, *args)
    assert result.exit_code == 0
    assert "No Flask-Session sessions found there." in result.output


def test_cookie_sessions_cannot_be_a_migration_target(tmp_path: Path) -> None:
    app = sessionkeeper_app({"SESSION_TYPE": "cookie"}, tmp_path)
    result = run_migrate(app, "--from", "redis")
    assert result.exit_code == 1 and "server-side SESSION_TYPE" in result.output


@pytest.mark.parametrize(("session_type", "message"), [
    ("sqlite", "--from"), ("memory", "--from"),
])
def test_a_store_flask_session_never_had_asks_where_to_read(
    tmp_path: Path, session_type: str, message: str,
) -> None:
    app = sessionkeeper_app({"SESSION_TYPE": session_type,
                             "SESSION_SQLITE_PATH": str(tmp_path / "s.sqlite3")}, tmp_path)
    result = run_migrate(app)
    assert result.exit_code == 1 and message in result.output


def test_mongodb_users_stay_logged_in_after_migrate(tmp_path: Path) -> None:
    import pymongo
    from providers import mongodb as mongodb_provider

    url = mongodb_provider.server_url()
    name = mongodb_provider.random_collection()
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(url)
    config = {"SESSION_TYPE": "mongodb", "SESSION_MONGODB": client,
              "SESSION_MONGODB_DB": mongodb_provider.DATABASE, "SESSION_MONGODB_COLLECT": name}
    with mongodb_provider.dropped_afterwards(url, name):
        cookie, seen_before = log_in(flask_session_app(config))
        app = sessionkeeper_app(config, tmp_path)  # the very same collection
        result = run_migrate(app, "--delete-old")
        assert count_line(result.output, "migrated:") == 1
        browser = browser_with(cookie, app)
        assert browser.get("/whoami").text == "alice"
        assert browser.get("/dump").text == seen_before
        assert client[mongodb_provider.DATABASE][name].count_documents({"id": {"$exists": 1}}) \
            == 0
    client.close()


# -- payloads ---------------------------------------------------------------------------
SAMPLE = {"_permanent": True, "user": "alice", "n": 3, "ratio": 0.5, "ok": True, "none": None,
          "cart": [1, [2, 3], {"a.b": "$c"}], "raw": b"\x00\x01\xff",
          "when": datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)}


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_payloads_decode_exactly_as_flask_session_reads_them(fmt: str) -> None:
    serializer = flask_session.base.MsgSpecSerializer(Flask("x"), fmt)
    blob = serializer.encode(SAMPLE)  # type: ignore[arg-type]
    assert decode_flask_session_payload(blob) == serializer.decode(blob)


def test_an_empty_msgpack_session_is_not_mistaken_for_pickle() -> None:
    assert decode_flask_session_payload(b"\x80") == {}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_of_every_protocol_is_recognised_and_refused(protocol: int) -> None:
    blob = pickle.dumps({"user": "alice"}, protocol=protocol)
    assert is_pickle(blob)
    with pytest.raises(LegacyPickleData, match="--allow-pickle"):
        decode_flask_session_payload(blob)
    assert isinstance(LegacyPickleData(), SessionKeeperError)
    assert read_payload(blob, allow_pickle=True) == {"user": "alice"}


RAN: list[str] = []


def record_that_code_ran(marker: str) -> str:
    RAN.append(marker)
    return marker


class Exploit:
    def __reduce__(self) -> tuple[Callable[[str], str], tuple[str]]:
        return record_that_code_ran, ("pwned",)


def test_a_malicious_pickle_never_runs_even_when_pickle_is_allowed() -> None:
    blob = pickle.dumps({"user": Exploit()})
    with pytest.raises(LegacyPickleData):
        decode_flask_session_payload(blob)
    with pytest.raises(UnreadableLegacyData, match="record_that_code_ran"):
        read_payload(blob, allow_pickle=True)
    assert RAN == []
    with pytest.raises(UnreadableLegacyData, match="system"):
        load_pickled_payload(pickle.dumps({"user": ShellCommand()}))


class ShellCommand:
    def __reduce__(self) -> tuple[Callable[[str], int], tuple[str]]:
        return os.system, ("true",)  # harmless even if it ran; it must not


def test_plain_pickled_values_are_read_with_their_types() -> None:
    uid = UUID(int=7)
    when = datetime(2023, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=2)))
    from markupsafe import Markup

    data = {"u": uid, "when": when, "m": Markup("<b>hi</b>"), "t": (1, "a"), "b": b"x",
            "day": date(2024, 2, 29), "at": dt_time(9, 30), "price": Decimal("9.95"),
            "tags": {"a", "b"}, "frozen": frozenset({1, 2})}
    for protocol in range(3, pickle.HIGHEST_PROTOCOL + 1):  # what Flask-Session, cachelib wrote
        assert load_pickled_payload(pickle.dumps(data, protocol=protocol)) == data


@pytest.mark.parametrize("blob", [b"[" * 100_000 + b"]" * 100_000, b"\x91" * 100_000 + b"\xc0"],
                         ids=["json", "msgpack"])
def test_a_record_nested_past_the_recursion_limit_is_unreadable(blob: bytes) -> None:
    with pytest.raises(UnreadableLegacyData, match="nested too deeply"):
        decode_flask_session_payload(blob)


@pytest.mark.parametrize("blob", [b"", b"\x00\x01garbage", b"[1, 2]", b"\x92\x01\x02",
                                  b'{"a": 1', pickle.dumps([1, 2])[:-3]])
def test_damaged_or_foreign_payloads_are_unreadable_not_crashes(blob: bytes) -> None:
    with pytest.raises(SessionKeeperError):
        read_payload(blob, allow_pickle=True)


def test_cachelib_files_are_read_as_cachelib_writes_them(tmp_path: Path) -> None:
    cache = FileSystemCache(str(tmp_path), threshold=500, mode=0o600)
    cache.set("session:" + SID_SHAPED, {"user": "alice"}, timeout=600)
    cache.set("session:forever", {"user": "bob"}, timeout=0)
    expires_at, payload = read_cachelib_file(cachelib_path(tmp_path, "session:", SID_SHAPED))
    assert expires_at == pytest.approx(time.time() + 600, abs=5)
    assert is_pickle(payload) and load_pickled_payload(payload) == {"user": "alice"}
    forever, _ = read_cachelib_file(cachelib_path(tmp_path, "session:", "forever"))
    assert forever is None


def test_values_migrated_from_json_stay_as_flask_session_returned_them() -> None:
    serializer = flask_session.base.MsgSpecSerializer(Flask("x"), "json")
    data = decode_flask_session_payload(serializer.encode(SAMPLE))  # type: ignore[arg-type]
    codec = ValueCodec()
    # JSON had no bytes or dates: Flask-Session handed the app strings, and so do we.
    assert codec.decode(codec.encode(data["raw"])) == "AAH/"
    assert codec.decode(codec.encode(data["when"])) == "2024-01-02T03:04:05.678000Z"


def memory_backend(tmp_path: Path, **config: Any) -> Any:
    return sessionkeeper_app({"SESSION_TYPE": "memory", **config},
                             tmp_path).extensions["sessionkeeper"].backend


def test_own_store_keys_are_never_taken_for_flask_session_ids(tmp_path: Path) -> None:
    backend = memory_backend(tmp_path, SESSION_ID_LENGTH=48)  # ids of 64 characters
    assert accepts_sid(backend, secrets.token_urlsafe(48))
    assert not accepts_sid(backend, storage_key(secrets.token_urlsafe(48)))  # 64 hex digits
    assert not accepts_sid(backend, str(UUID(int=5)))  # Flask-Session before 0.6


def test_a_record_keeps_its_remaining_life_and_permanence(tmp_path: Path) -> None:
    backend = memory_backend(tmp_path, PERMANENT_SESSION_LIFETIME=3600)
    now = 1_000_000.0
    record = to_record({"_permanent": True, "user": "alice"}, backend=backend,
                       codec=backend.codec, expires_at=now + 1000, now=now)
    assert record.expires_at == now + 1000
    assert record.accessed_at == now + 1000 - 3600  # its last save, one lifetime before
    assert record.permanent is True
    assert {k: backend.codec.decode(v) for k, v in record.values.items()} == {"user": "alice"}

    browser_only = to_record({"user": "bob"}, backend=backend, codec=backend.codec,
                             expires_at=None, now=now)
    assert browser_only.permanent is False and browser_only.expires_at == now + 3600


def test_a_shorter_idle_timeout_caps_the_remaining_life(tmp_path: Path) -> None:
    backend = memory_backend(tmp_path, PERMANENT_SESSION_LIFETIME=3600,
                             SESSION_IDLE_TIMEOUT=600)
    record = to_record({"user": "alice"}, backend=backend, codec=backend.codec,
                       expires_at=10_000.0 + 3000, now=10_000.0)
    assert record.expires_at == 10_000.0 + 600


def test_values_a_session_cannot_hold_make_the_record_unreadable(tmp_path: Path) -> None:
    backend = memory_backend(tmp_path)
    with pytest.raises(UnreadableLegacyData, match="complex"):
        to_record({"tags": 1 + 2j}, backend=backend, codec=backend.codec, expires_at=None,
                  now=time.time())
