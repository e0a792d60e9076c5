"""``store=`` as a URL or a driver's client object, for every store.

A Starlette app on each keeps a value and a login across requests and a logout deletes
them, through each real server (what is stored is read back with a store of its own).
Building the store reaches no server: an app starts while its store is down, answers 503
for what needs the store, and sets the store up (tables, TTL) on first use once it is up.
"""

from __future__ import annotations

import re
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from asgi_app import make_app
from providers import sqlalchemy_mariadb, sqlalchemy_postgresql
from servers import (
    RedisSentinel,
    mongodb_url,
    start_dynalite,
    start_memcached,
    start_or_skip,
    start_redis_cluster,
    unused_port,
)
from starlette.testclient import TestClient

from sessionkeeper.errors import ConfigurationError
from sessionkeeper.ids import storage_key
from sessionkeeper.model import is_reserved
from sessionkeeper.serialization import ValueCodec
from sessionkeeper.starlette import SessionMiddleware
from sessionkeeper.starlette.stores import store_from
from sessionkeeper.stores.base import SessionRecord, SessionStore

LOGIN_COOKIE = re.compile(r"session=([\w-]{43}); path=/; Max-Age=1209600; httponly; samesite=lax")
DELETED_COOKIE = ("session=null; path=/; expires=Thu, 01 Jan 1970 00:00:00 GMT; httponly; "
                  "samesite=lax")


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    # dynalite takes any credentials; boto3 finds these as it would on AWS
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")


def random_table() -> str:
    return f"sk_{secrets.token_hex(4)}"


@contextmanager
def dropped_afterwards(server_url: str, table: str) -> Iterator[sa.Engine]:
    """An engine on the server, and ``table`` dropped from it at the end."""
    engine = sa.create_engine(server_url)
    try:
        yield engine
    finally:
        sa.Table(table, sa.MetaData()).drop(engine, checkfirst=True)
        engine.dispose()


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server: an Engine given as store= uses the store's
    default table name, which must be this test's own."""
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


# -- the stores: each yields what is passed as store= -------------------------------------
Kind = Callable[[Path, pytest.MonkeyPatch], Iterator[Any]]


def _memcached_url(tmp: Path, env: pytest.MonkeyPatch) -> Iterator[Any]:
    group = start_or_skip(start_memcached, 2)
    try:
        yield "memcached://" + ",".join(f"{host}:{port}" for host, port in group)
    finally:
        group.stop()


def _memcached_client(tmp: Path, env: pytest.MonkeyPatch) -> Iterator[Any]:
    from pymemcache.client.hash import HashClient

    group = start_or_skip(start_memcached, 1)
    try:
        yield HashClient([f"{host}:{port}" for host, port in group], default_noreply=False)
    finally:
        group.stop()


def _file(tmp: Path, env: pytest.MonkeyPatch) -> Iterator[Any]:
    yield f"file://{tmp / 'sessions'}"


def _sql_url(provider: Any) -> Kind:
    def made(tmp: Path, env: pytest.MonkeyPatch) -> Iterator[Any]:
        table = random_table()
        with dropped_afterwards(provider.url(), table):
            yield f"{provider.url()}?table={table}"
    return made


def _sqlite_url(tmp: Path, env: pytest.MonkeyPatch) -> Iterator[Any]:
    yield f"sqlite+pysqlite:///{tmp / 'sessions.db'}"


def _engine(tmp: Path, env: pytest.MonkeyPatch) -> Iterator[Any]:
    with fresh_database(sqlalchemy_postgresql.url()) as url:
        engine = sa.create_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


def _dynamodb_url(tmp: Path, env: pytest.MonkeyPatch) -> Iterator[Any]:
    server = start_or_skip(start_dynalite)
    try:
        yield f"dynamodb://{server.host}:{server.port}?table={random_table()}"
    finally:
        server.stop()


def _dynamodb_from_environment(tmp: Path, env: pytest.MonkeyPatch) -> Iterator[Any]:
    """dynamodb:// with no host: the endpoint and region boto3 finds, as on AWS."""
    server = start_or_skip(start_dynalite)
    env.setenv("AWS_ENDPOINT_URL_DYNAMODB", server.endpoint_url)
    env.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    try:
        yield f"dynamodb://?table={random_table()}"
    finally:
        server.stop()


def _dynamodb_client(tmp: Path, env: pytest.MonkeyPatch) -> Iterator[Any]:
    import boto3

    server = start_or_skip(start_dynalite)
    try:
        yield boto3.client("dynamodb", endpoint_url=server.endpoint_url, region_name="us-east-1")
    finally:
        server.stop()


def _dynamodb_resource(tmp: Path, env: pytest.MonkeyPatch) -> Iterator[Any]:
    import boto3

    server = start_or_skip(start_dynalite)
    try:
        yield boto3.resource("dynamodb", endpoint_url=server.endpoint_url,
                             region_name="us-east-1")
    finally:
        server.stop()


def _redis_client(tmp: Path, env: pytest.MonkeyPatch) -> Iterator[Any]:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=0)
    yield client
    client.close()


def _redis_sentinel_url(tmp: Path, env: pytest.MonkeyPatch) -> Iterator[Any]:
    sentinel = start_or_skip(RedisSentinel, "mymaster")
    try:
        yield f"redis+sentinel://{sentinel.host}:{sentinel.port}/{sentinel.master_name}"
    finally:
        sentinel.stop()


def _redis_cluster_client(tmp: Path, env: pytest.MonkeyPatch) -> Iterator[Any]:
    from redis.cluster import RedisCluster

    cluster = start_or_skip(start_redis_cluster)
    try:
        host, port = cluster[0]
        client = RedisCluster(host=host, port=port)
        yield client
        client.close()
    finally:
        cluster.stop()


def _cachelib(tmp: Path, env: pytest.MonkeyPatch) -> Iterator[Any]:
    from cachelib import FileSystemCache

    yield FileSystemCache(str(tmp / "cache"), threshold=0)


def _mongodb_server() -> str:
    url = mongodb_url()
    if url is None:
        pytest.skip("no MongoDB server: set MONGODB_URL to a real server")
    return url


def _mongodb_url(tmp: Path, env: pytest.MonkeyPatch) -> Iterator[Any]:
    yield _mongodb_server()


def _mongodb_client(tmp: Path, env: pytest.MonkeyPatch) -> Iterator[Any]:
    import pymongo

    client: pymongo.MongoClient[Any] = pymongo.MongoClient(_mongodb_server())
    yield client
    client.close()


STORES: dict[str, Kind] = {
    "memcached-url": _memcached_url,
    "memcached-client": _memcached_client,
    "file-url": _file,
    "postgresql-url": _sql_url(sqlalchemy_postgresql),
    "mariadb-url": _sql_url(sqlalchemy_mariadb),
    "sqlalchemy-sqlite-url": _sqlite_url,
    "sqlalchemy-engine": _engine,
    "dynamodb-url": _dynamodb_url,
    "dynamodb-url-from-environment": _dynamodb_from_environment,
    "dynamodb-client": _dynamodb_client,
    "dynamodb-resource": _dynamodb_resource,
    "redis-client": _redis_client,
    "redis-sentinel-url": _redis_sentinel_url,
    "redis-cluster-client": _redis_cluster_client,
    "cachelib-object": _cachelib,
    "mongodb-url": _mongodb_url,
    "mongodb-client": _mongodb_client,
}


@pytest.fixture(params=list(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    yield from STORES[request.param](tmp_path, monkeypatch)


def stored(store: SessionStore, prefix: str, token: str) -> SessionRecord | None:
    return store.load(prefix + storage_key(token), time.time())


def values(record: SessionRecord | None) -> dict[str, Any]:
    """The app's values of a stored record (sessionkeeper's reserved ones left out)."""
    assert record is not None
    return {key: ValueCodec().decode(value) for key, value in record.values.items()
            if not is_reserved(key)}


def login_token(response: httpx.Response) -> str:
    assert response.status_code == 200
    found = LOGIN_COOKIE.fullmatch(response.headers["set-cookie"])
    assert found is not None, response.headers["set-cookie"]
    return found.group(1)


def test_a_value_and_a_login_are_kept_and_a_logout_deletes_them(store: Any) -> None:
    prefix = f"t{secrets.token_hex(4)}:"
    app = make_app(store=store, key_prefix=prefix)
    # The same store, built apart from the app: what the server holds.
    server = store_from(store, codec=ValueCodec(), key_prefix=prefix)
    try:
        with TestClient(app) as browser:
            fresh = browser.get("/view")
            assert fresh.status_code == 200 and "set-cookie" not in fresh.headers
            assert fresh.json() == {"session": {}, "user": None}

            first = login_token(browser.post("/set", json={"cart": ["tea"]}))
            assert values(stored(server, prefix, first)) == {"cart": ["tea"]}

            logged_in = browser.post("/login", json={"user": "laowang"})
            token = login_token(logged_in)  # a login gives the session a new id
            assert token != first and stored(server, prefix, first) is None
            record = stored(server, prefix, token)
            assert record is not None and record.user_id == "laowang"
            assert values(record) == {"cart": ["tea"]}

            read = browser.get("/view")  # the next request reads it back
            assert read.status_code == 200 and "set-cookie" not in read.headers
            assert read.json() == {"session": {"cart": ["tea"]}, "user": "laowang"}

            logged_out = browser.post("/logout")
            assert logged_out.status_code == 200
            assert logged_out.headers["set-cookie"] == DELETED_COOKIE
            assert stored(server, prefix, token) is None
            assert browser.get("/view").json() == {"session": {}, "user": None}
        with TestClient(app, cookies={"session": token}) as replay:
            assert replay.get("/view").json() == {"session": {}, "user": None}
    finally:
        if isinstance(store, str):  # (a client object is the fixture's to close)
            server.close()


# -- the store is down when the app starts --------------------------------------------------
DOWN = {
    "memcached": "memcached://127.0.0.1:{port}",
    "redis-sentinel": "redis+sentinel://127.0.0.1:{port}/mymaster",
    "postgresql": "postgresql+psycopg2://postgres@127.0.0.1:{port}/test",
    "mariadb": "mysql+pymysql://root@127.0.0.1:{port}/test",
    "mongodb": "mongodb://127.0.0.1:{port}/",
    "dynamodb": "dynamodb://127.0.0.1:{port}?table=Sessions",
}


@pytest.mark.parametrize("url", list(DOWN.values()), ids=list(DOWN))
def test_an_app_starts_while_its_store_is_down(url: str) -> None:
    app = make_app(store=url.format(port=unused_port()), breaker_seconds=0)
    with TestClient(app) as browser:  # started: the store was built, not reached
        assert browser.get("/health").text == "ok"
        fresh = browser.get("/view")  # no session cookie: nothing to read
        assert fresh.status_code == 200 and fresh.json() == {"session": {}, "user": None}
        saving = browser.post("/set", json={"a": 1})
        assert saving.status_code == 503 and "set-cookie" not in saving.headers
        assert "could not be saved" in saving.text
        browser.cookies.set("session", secrets.token_urlsafe(32))
        loading = browser.get("/view")
        assert loading.status_code == 503 and "temporarily unavailable" in loading.text


def test_the_dynamodb_table_is_created_once_the_server_is_up() -> None:
    port = unused_port()
    table = random_table()
    app = make_app(store=f"dynamodb://127.0.0.1:{port}?table={table}", breaker_seconds=0)
    with TestClient(app) as browser:
        assert browser.post("/set", json={"a": 1}).status_code == 503
        server = start_or_skip(start_dynalite, port=port)
        try:
            token = login_token(browser.post("/set", json={"a": 1}))
            assert browser.get("/view").json() == {"session": {"a": 1}, "user": None}
            import boto3

            client = boto3.client("dynamodb", endpoint_url=server.endpoint_url,
                                  region_name="us-east-1")
            described = client.describe_table(TableName=table)["Table"]
            assert described["TableStatus"] == "ACTIVE"
            key = {"id": {"S": "session:" + storage_key(token)}}
            assert "Item" in client.get_item(TableName=table, Key=key)
        finally:
            server.stop()


def test_the_sql_table_is_created_when_the_app_starts() -> None:
    url = sqlalchemy_postgresql.url()
    table = random_table()
    with dropped_afterwards(url, table) as engine:
        app = make_app(store=f"{url}?table={table}")
        assert not sa.inspect(engine).has_table(table)  # building the app reaches no server
        with TestClient(app) as browser:  # its lifespan starts: the check runs
            assert sa.inspect(engine).has_table(table)
            token = login_token(browser.post("/set", json={"a": 1}))
        with engine.connect() as conn:
            keys = conn.execute(sa.text(f"SELECT key FROM {table}")).scalars().all()
        assert keys == ["session:" + storage_key(token)]


def test_without_a_lifespan_the_table_is_created_on_first_use() -> None:
    url = sqlalchemy_postgresql.url()
    table = random_table()
    with dropped_afterwards(url, table) as engine:
        browser = TestClient(make_app(store=f"{url}?table={table}"))  # no `with`: no lifespan
        assert browser.get("/view").status_code == 200  # no cookie: the store is not used
        assert not sa.inspect(engine).has_table(table)
        login_token(browser.post("/set", json={"a": 1}))
        assert sa.inspect(engine).has_table(table)


def test_a_misconfiguration_the_server_reports_stops_the_start() -> None:
    from cachelib import NullCache  # keeps nothing: sessions would vanish silently

    with pytest.raises(ConfigurationError, match=r"it keeps nothing \(a NullCache\?\)"), \
            TestClient(make_app(store=NullCache())):
        pass


def test_without_a_lifespan_a_misconfiguration_is_a_logged_503(
        caplog: pytest.LogCaptureFixture) -> None:
    from cachelib import NullCache

    browser = TestClient(make_app(store=NullCache()))
    assert browser.get("/view").status_code == 200
    saving = browser.post("/set", json={"a": 1})
    assert saving.status_code == 503 and "set-cookie" not in saving.headers
    assert "misconfigured: SESSION_CACHELIB NullCache gave back NoneType" in caplog.text


# -- what cannot be used ----------------------------------------------------------------
@pytest.mark.parametrize(("store", "expected"), [
    ("memcached://", "name the servers, memcached://host:port"),
    ("file://relative/dir", "give an absolute directory, file:///path"),
    ("redis+sentinel://127.0.0.1:26379", "name the sentinels and the service they monitor"),
    ("redis+sentinel://127.0.0.1:26379/mymaster/1", "a database other than 0 pass Sentinel"),
    ("dynamodb://127.0.0.1:8000?tabel=Sessions", r"takes a host:port and \?table=Name"),
    ("dynamodb://127.0.0.1:8000?table=no%20spaces", "must be a DynamoDB table name"),
    ("postgresql+nosuchdriver://h/db", "needs a database driver that is not installed"),
    ("ftp://example.com", "store= takes a URL: 'memory://'"),
    ("memory", "store= takes a URL"),
    (object(), r"store= takes a URL: .*; got a object$"),
    (42, "got a int$"),
])
def test_unusable_stores_say_what_is_accepted(store: Any, expected: str) -> None:
    with pytest.raises(ConfigurationError, match=expected), \
            TestClient(make_app(store=store)) as client:
        client.get("/view")


def test_the_accepted_list_names_every_form() -> None:
    with pytest.raises(ConfigurationError) as refused:
        SessionMiddleware(make_app(), secret_key="k", store="ftp://example.com")
    message = str(refused.value)
    for form in ("'memory://'", "'sqlite:///", "'redis://", "'redis+sentinel://", "memcached://",
                 "'file:///", "'postgresql+psycopg2://", "'mysql+pymysql://", "'mongodb://",
                 "'dynamodb://'", "'dynamodb://host:port'", "RedisCluster", "pymemcache",
                 "SQLAlchemy Engine", "MongoClient", "boto3", "cachelib", "SessionStore"):
        assert form in message, form
    assert message.endswith("got 'ftp://example.com'")


def test_a_sentinel_password_is_refused_without_being_echoed() -> None:
    with pytest.raises(ConfigurationError, match="takes no password") as refused:
        SessionMiddleware(make_app(), secret_key="k",
                          store="redis+sentinel://hunter2@127.0.0.1:26379/mymaster")
    assert "hunter2" not in str(refused.value)


def test_a_sentinel_object_asks_for_its_master_client() -> None:
    from redis.sentinel import Sentinel

    with pytest.raises(ConfigurationError, match=r"master_for\('mymaster'\)"):
        SessionMiddleware(make_app(), secret_key="k", store=Sentinel([("127.0.0.1", 1)]))


def test_dynamodb_without_a_region_says_how_to_give_one(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ConfigurationError, match=r"set AWS_DEFAULT_REGION, or add \?region="):
        SessionMiddleware(make_app(), secret_key="k", store="dynamodb://")


@pytest.mark.parametrize(("store", "modules", "extra"), [
    ("memcached://127.0.0.1:11211", ["pymemcache", "sessionkeeper.stores.memcached"],
     "memcached"),
    ("redis+sentinel://127.0.0.1:26379/mymaster", ["redis", "sessionkeeper.stores.redis"],
     "redis"),
    ("mongodb://127.0.0.1/", ["pymongo", "sessionkeeper.stores.mongodb"], "mongodb"),
    ("dynamodb://127.0.0.1:8000", ["boto3", "sessionkeeper.stores.dynamodb_client"],
     "dynamodb"),
    ("postgresql+psycopg2://postgres@127.0.0.1/test", ["sqlalchemy"], "sqlalchemy"),
])
def test_a_missing_driver_names_its_pip_extra(
        monkeypatch: pytest.MonkeyPatch, store: str, modules: list[str], extra: str) -> None:
    for module in modules:  # None in sys.modules: importing it fails, as when absent
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ConfigurationError,
                       match=re.escape(f"pip install 'sessionkeeper[{extra}]'")):
        SessionMiddleware(make_app(), secret_key="k", store=store)


def test_a_mongodb_url_names_the_database() -> None:
    # (pymongo connects in the background: this needs no server)
    made = store_from("mongodb://127.0.0.1:1/appdb?appname=x", codec=ValueCodec(),
                      key_prefix="p:")
    try:
        assert made.collection.database.name == "appdb"  # type: ignore[attr-defined]
    finally:
        made.close()
