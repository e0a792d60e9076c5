"""The one benchmark app; only the session configuration differs between variants.

gunicorn loads it as `app:create_app_from_env()` with BENCH_VARIANT and
BENCH_SETTINGS set by run.py.  `python benchmarks/app.py VARIANT` builds the
app once and exits; run.py uses that to create tables/files before the
workers start (so two workers never race on CREATE TABLE) and to surface
import errors.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import (
    DYNAMODB_REGION,
    DYNAMODB_TABLE,
    ENV_VARIANT,
    FS_DYNAMODB_TABLE,
    MARIADB_TABLE,
    POSTGRES_TABLE,
    RAW_DYNAMODB_TABLE,
    RAW_MARIADB_TABLE,
    RAW_POSTGRES_TABLE,
    READ_BODY,
    REDIS_HOST,
    SESSION_THEME,
    SESSION_USER,
    BenchSettings,
)
from flask import Flask, Response, make_response, request, session
from workercounters import WorkerCounters

SECRET_KEY = "benchmark-secret-key-not-for-production"


def register_routes(app: Flask) -> None:
    @app.get("/ping")
    def ping() -> str:
        return "pong"

    @app.get("/login")
    def login() -> str:
        session["user"] = SESSION_USER
        session["theme"] = SESSION_THEME
        return "ok"

    @app.get("/read")
    def read() -> str:
        # run.py checks this body equals common.READ_BODY before measuring.
        return f"{session.get('user')} {session.get('theme')}"

    @app.get("/write")
    def write() -> str:
        session["counter"] = session.get("counter", 0) + 1
        return str(session["counter"])


# --- variant configuration -------------------------------------------------------


def redis_client(settings: BenchSettings) -> Any:
    import redis

    return redis.Redis(host=REDIS_HOST, port=settings.redis_port, db=settings.redis_db)


def redis_cluster_client(settings: BenchSettings) -> Any:
    """A RedisCluster client on the run's private cluster; each worker builds its own
    (gunicorn loads the app after forking), so no connection is shared across processes."""
    from redis.cluster import ClusterNode, RedisCluster

    if not settings.redis_cluster_ports:
        raise RuntimeError("no Redis Cluster ports in BenchSettings (start it via run.py)")
    nodes = [ClusterNode(REDIS_HOST, port) for port in settings.redis_cluster_ports]
    return RedisCluster(startup_nodes=nodes)


def cachelib_redis(settings: BenchSettings, prefix: str) -> Any:
    """A cachelib RedisCache on the run's Redis DB, its keys under the run's prefix (so the
    runner deletes them); the client has timeouts, as sessionkeeper's docs ask."""
    import redis
    from cachelib.redis import RedisCache

    client = redis.Redis(host=REDIS_HOST, port=settings.redis_port, db=settings.redis_db,
                         socket_timeout=5, socket_connect_timeout=5)
    return RedisCache(host=client, key_prefix=f"{settings.key_prefix}{prefix}")


def dynamodb_endpoint(settings: BenchSettings) -> dict[str, Any]:
    """boto3 arguments for the run's private dynalite: dummy credentials, explicit region
    and timeouts, at most one retry (so nothing here can reach AWS or hang a worker)."""
    from botocore.config import Config

    if not settings.dynamodb_port:
        raise RuntimeError("no dynalite port in BenchSettings (start it via run.py)")
    return {
        "endpoint_url": f"http://127.0.0.1:{settings.dynamodb_port}",
        "region_name": DYNAMODB_REGION,
        "aws_access_key_id": "dummy",
        "aws_secret_access_key": "dummy",
        "config": Config(connect_timeout=5, read_timeout=5,
                         retries={"total_max_attempts": 2, "mode": "standard"}),
    }


def dynamodb_client(app: Flask, settings: BenchSettings) -> Any:
    """A low-level DynamoDB client whose requests this worker counts."""
    import boto3
    from workercounters import install_botocore_counter

    client = boto3.client("dynamodb", **dynamodb_endpoint(settings))
    install_botocore_counter(app.extensions["bench_counters"], client)
    return client


def data_path(settings: BenchSettings, name: str) -> str:
    return str(Path(settings.data_dir) / name)


def configure_plain(app: Flask, settings: BenchSettings) -> None:
    # No SECRET_KEY: Flask's default interface then hands out a NullSession
    # without parsing the cookie, i.e. no session work at all.
    app.config["SECRET_KEY"] = None


def configure_raw_redis(app: Flask, settings: BenchSettings) -> None:
    """No session layer: /read is one raw GET and /write one GET plus one SET, the
    fewest round trips any Redis session can make. This is the ceiling for Redis
    variants on this machine: what is left between it and plain /ping is the round trip
    itself (two sync workers block on it while wrk and Redis share the same cores)."""
    configure_plain(app, settings)
    client = redis_client(settings)
    key = f"{settings.key_prefix}raw:{READ_BODY}"
    client.set(key, READ_BODY)

    def login() -> Response:
        response = make_response("ok")
        response.set_cookie("raw", "1")  # the runner wants a cookie to send back
        return response

    def read() -> str:
        value = client.get(key)
        return value.decode() if value is not None else "missing"

    def write() -> str:
        value = client.get(key)
        client.set(key, value if value is not None else READ_BODY)
        return "ok"

    app.view_functions.update(login=login, read=read, write=write)


RAW_COOKIE = "raw"
RAW_ID_LENGTH = 32  # secrets.token_hex(16)


def install_raw_routes(
    app: Flask,
    load: Callable[[str], bytes | None],
    save: Callable[[str, bytes], None],
) -> None:
    """/login, /read and /write of a ceiling variant that keeps one raw entry per client.

    /login stores READ_BODY under a fresh random id and sends it as the cookie; /read
    is one `load` of that id, /write a `load` plus a `save` of the value with a counter
    after it, bumped: the fewest round trips a session on that store can make, with
    none of a session layer's work around them.
    """

    def client_id() -> str | None:
        value = request.cookies.get(RAW_COOKIE, "")
        # Only ids /login made reach the store, so a bad cookie cannot make a bad key.
        return value if len(value) == RAW_ID_LENGTH and value.isalnum() else None

    def login() -> Response:
        new_id = secrets.token_hex(RAW_ID_LENGTH // 2)
        save(new_id, READ_BODY.encode())
        response = make_response("ok")
        response.set_cookie(RAW_COOKIE, new_id)
        return response

    def read() -> str:
        entry_id = client_id()
        value = load(entry_id) if entry_id else None
        return value.partition(b"|")[0].decode() if value is not None else "missing"

    def write() -> str:
        entry_id = client_id()
        value = load(entry_id) if entry_id else None
        if entry_id is None or value is None:
            return "missing"
        # A changed value each time, as the session's counter changes: a store may skip
        # writing bytes it already holds (InnoDB does: no redo log, no flush to disk),
        # which no session save that counts can.
        body, _, count = value.partition(b"|")
        save(entry_id, b"%s|%d" % (body, int(count or 0) + 1))
        return "ok"

    app.view_functions.update(login=login, read=read, write=write)


def configure_raw_memcached(app: Flask, settings: BenchSettings) -> None:
    """The memcached ceiling: one raw `get` per /read, `get` + `set` per /write, on a
    client with TCP_NODELAY like the one sessionkeeper builds (replies awaited)."""
    from pymemcache.client.base import Client

    configure_plain(app, settings)
    client = Client(("127.0.0.1", settings.memcached_port), no_delay=True)
    prefix = f"{settings.key_prefix}raw:"

    def load(entry_id: str) -> bytes | None:
        value: bytes | None = client.get(prefix + entry_id)
        return value

    def save(entry_id: str, value: bytes) -> None:
        client.set(prefix + entry_id, value, noreply=False)

    install_raw_routes(app, load, save)


def configure_raw_memcached_cas(app: Flask, settings: BenchSettings) -> None:
    """The memcached ceiling for a store that writes with compare-and-set (as
    sessionkeeper's does, so concurrent writers lose nothing): `gets` per /read,
    `gets` + `cas` per /write."""
    from pymemcache.client.base import Client

    configure_plain(app, settings)
    client = Client(("127.0.0.1", settings.memcached_port), no_delay=True)
    prefix = f"{settings.key_prefix}rawcas:"
    tokens: dict[str, bytes] = {}  # the cas token of the last gets, per entry

    def load(entry_id: str) -> bytes | None:
        value, token = client.gets(prefix + entry_id)
        if token is not None:
            tokens[entry_id] = token
        return value  # type: ignore[no-any-return]

    def save(entry_id: str, value: bytes) -> None:
        token = tokens.pop(entry_id, None)
        if token is None:
            client.set(prefix + entry_id, value, noreply=False)  # /login's fresh id
        else:
            client.cas(prefix + entry_id, value, token, noreply=False)

    install_raw_routes(app, load, save)


def configure_raw_sqlite(app: Flask, settings: BenchSettings) -> None:
    """The SQLite ceiling: one primary-key SELECT per /read, SELECT + UPDATE per /write,
    on one autocommit connection per worker to a WAL file (as sessionkeeper's store)."""
    import sqlite3

    install_sql_counter(app, "sqlite")
    configure_plain(app, settings)
    connection = sqlite3.connect(data_path(settings, "raw.sqlite3"), isolation_level=None,
                                 check_same_thread=False, timeout=10)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("CREATE TABLE IF NOT EXISTS raw (key TEXT PRIMARY KEY, data BLOB)")

    def load(entry_id: str) -> bytes | None:
        row = connection.execute("SELECT data FROM raw WHERE key = ?", (entry_id,)).fetchone()
        return bytes(row[0]) if row is not None else None

    def save(entry_id: str, value: bytes) -> None:
        connection.execute("INSERT OR REPLACE INTO raw (key, data) VALUES (?, ?)",
                           (entry_id, value))

    install_raw_routes(app, load, save)


def configure_raw_mariadb(app: Flask, settings: BenchSettings) -> None:
    """The MariaDB ceiling: one primary-key SELECT per /read, SELECT + UPDATE per
    /write, on one autocommit pymysql connection per worker."""
    import pymysql

    install_sql_counter(app, "mariadb")
    configure_plain(app, settings)
    url = sa_url(settings.mariadb_url)
    connection = pymysql.connect(host=url.host, port=url.port or 3306, user=url.username,
                                 password=url.password or "", database=url.database,
                                 autocommit=True, connect_timeout=5)
    table = f"`{RAW_MARIADB_TABLE}`"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {table} "
                       "(`key` VARCHAR(64) PRIMARY KEY, data BLOB NOT NULL)")

    def load(entry_id: str) -> bytes | None:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT data FROM {table} WHERE `key` = %s", (entry_id,))
            row = cursor.fetchone()
        return bytes(row[0]) if row is not None else None

    def save(entry_id: str, value: bytes) -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"INSERT INTO {table} (`key`, data) VALUES (%s, %s) "
                           "ON DUPLICATE KEY UPDATE data = VALUES(data)", (entry_id, value))

    install_raw_routes(app, load, save)


def configure_raw_filesystem(app: Flask, settings: BenchSettings) -> None:
    """The files ceiling: one file read per /read, a read and an atomic replace (write a
    temporary file, rename it over) per /write, one file per entry."""
    import os
    import tempfile

    configure_plain(app, settings)
    directory = data_path(settings, "raw-files")
    os.makedirs(directory, exist_ok=True)

    def load(entry_id: str) -> bytes | None:
        try:
            with open(os.path.join(directory, entry_id), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def save(entry_id: str, value: bytes) -> None:
        handle, temporary = tempfile.mkstemp(dir=directory)
        with os.fdopen(handle, "wb") as f:
            f.write(value)
        os.replace(temporary, os.path.join(directory, entry_id))

    install_raw_routes(app, load, save)


def sa_url(url: str) -> Any:
    """An SQLAlchemy URL's parts (host, port, user, password, database)."""
    from sqlalchemy.engine import make_url

    return make_url(url)

def libpq_url(sqlalchemy_url: str) -> str:
    """'postgresql+psycopg2://...' (SQLAlchemy) as the 'postgresql://...' psycopg2 takes."""
    scheme, _, rest = sqlalchemy_url.partition("://")
    return f"{scheme.split('+', 1)[0]}://{rest}"


def configure_raw_postgresql(app: Flask, settings: BenchSettings) -> None:
    """The PostgreSQL ceiling: one primary-key SELECT per /read, SELECT + UPDATE per
    /write, on one autocommit psycopg2 connection per worker (no BEGIN/COMMIT trips)."""
    install_sql_counter(app, "postgresql")
    import psycopg2

    configure_plain(app, settings)
    connection = psycopg2.connect(libpq_url(settings.postgres_url), connect_timeout=5)
    connection.autocommit = True
    table = f'"{RAW_POSTGRES_TABLE}"'
    with connection.cursor() as cursor:
        # The prepare step creates it before the workers start, so they never race here.
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (key text PRIMARY KEY, data bytea NOT NULL)"
        )
    select = f"SELECT data FROM {table} WHERE key = %s"
    update = f"UPDATE {table} SET data = %s WHERE key = %s"
    insert = f"INSERT INTO {table} (key, data) VALUES (%s, %s)"

    def load(entry_id: str) -> bytes | None:
        with connection.cursor() as cursor:
            cursor.execute(select, (entry_id,))
            row = cursor.fetchone()
        return bytes(row[0]) if row is not None else None

    def save(entry_id: str, value: bytes) -> None:
        with connection.cursor() as cursor:
            cursor.execute(update, (value, entry_id))
            if cursor.rowcount == 0:  # only /login's fresh id has no row yet
                cursor.execute(insert, (entry_id, value))

    install_raw_routes(app, load, save)


def configure_raw_dynamodb(app: Flask, settings: BenchSettings) -> None:
    """The DynamoDB ceiling: one GetItem per /read, GetItem + UpdateItem per /write, on
    the same kind of client sk-dynamodb gets (strongly consistent reads, as its loads)."""
    configure_plain(app, settings)
    client = dynamodb_client(app, settings)
    # The prepare step creates it before the workers start; they find it there.
    with contextlib.suppress(client.exceptions.ResourceInUseException):
        client.create_table(
            TableName=RAW_DYNAMODB_TABLE,
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )

    def load(entry_id: str) -> bytes | None:
        item = client.get_item(TableName=RAW_DYNAMODB_TABLE, Key={"id": {"S": entry_id}},
                               ConsistentRead=True).get("Item")
        return bytes(item["data"]["B"]) if item is not None else None

    def save(entry_id: str, value: bytes) -> None:
        # UpdateItem creates the item too, so /login's fresh id needs no other call.
        client.update_item(TableName=RAW_DYNAMODB_TABLE, Key={"id": {"S": entry_id}},
                           UpdateExpression="SET #d = :v",
                           ExpressionAttributeNames={"#d": "data"},
                           ExpressionAttributeValues={":v": {"B": value}})

    install_raw_routes(app, load, save)


def configure_flask_cookie(app: Flask, settings: BenchSettings) -> None:
    pass  # Flask's built-in signed-cookie session needs only SECRET_KEY


def init_flask_session(app: Flask) -> None:
    from flask_session import Session

    Session(app)


def configure_fs_redis(app: Flask, settings: BenchSettings) -> None:
    app.config["SESSION_TYPE"] = "redis"
    app.config["SESSION_REDIS"] = redis_client(settings)
    app.config["SESSION_KEY_PREFIX"] = f"{settings.key_prefix}fs:"
    init_flask_session(app)


def configure_fs_memcached(app: Flask, settings: BenchSettings) -> None:
    from pymemcache.client.base import Client

    # pymemcache defaults (no TCP_NODELAY, noreply sets): how Flask-Session ships it.
    app.config["SESSION_TYPE"] = "memcached"
    app.config["SESSION_MEMCACHED"] = Client(("127.0.0.1", settings.memcached_port))
    app.config["SESSION_KEY_PREFIX"] = f"{settings.key_prefix}fs:"
    init_flask_session(app)


def configure_fs_sqlalchemy_sqlite(app: Flask, settings: BenchSettings) -> None:
    from flask_sqlalchemy import SQLAlchemy

    install_sql_counter(app, "sqlite")
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + data_path(settings, "fs.sqlite3")
    app.config["SESSION_TYPE"] = "sqlalchemy"
    app.config["SESSION_SQLALCHEMY"] = SQLAlchemy(app)
    init_flask_session(app)


def configure_fs_filesystem(app: Flask, settings: BenchSettings) -> None:
    from cachelib.file import FileSystemCache

    # Flask-Session 0.8's recommended form; same defaults as its SESSION_FILE_* keys.
    app.config["SESSION_TYPE"] = "cachelib"
    app.config["SESSION_CACHELIB"] = FileSystemCache(
        data_path(settings, "fs-files"), threshold=500, mode=0o600
    )
    init_flask_session(app)


def configure_fs_cachelib(app: Flask, settings: BenchSettings) -> None:
    app.config["SESSION_TYPE"] = "cachelib"
    app.config["SESSION_CACHELIB"] = cachelib_redis(settings, "fs-cachelib:")
    init_flask_session(app)


def configure_fs_dynamodb(app: Flask, settings: BenchSettings) -> None:
    """Flask-Session 0.8 wants a boto3 resource; it creates its table when missing."""
    import boto3
    from workercounters import install_botocore_counter

    resource = boto3.resource("dynamodb", **dynamodb_endpoint(settings))
    install_botocore_counter(app.extensions["bench_counters"], resource.meta.client)
    app.config["SESSION_TYPE"] = "dynamodb"
    app.config["SESSION_DYNAMODB"] = resource
    app.config["SESSION_DYNAMODB_TABLE"] = FS_DYNAMODB_TABLE
    init_flask_session(app)


def init_sessionkeeper(app: Flask) -> None:
    from sessionkeeper.flask import Session

    Session(app)


def configure_sk_sqlite(app: Flask, settings: BenchSettings) -> None:
    install_sql_counter(app, "sqlite")
    app.config["SESSION_SQLITE_PATH"] = data_path(settings, "sk.sqlite3")
    init_sessionkeeper(app)  # SESSION_TYPE unset: the embedded default


def configure_sk_cookie(app: Flask, settings: BenchSettings) -> None:
    app.config["SESSION_TYPE"] = "cookie"
    init_sessionkeeper(app)


def configure_sk_memory(app: Flask, settings: BenchSettings) -> None:
    """The process-memory store: the session layer's own work with no I/O at all (for
    instruction counts; one worker's memory is not shared, so not for HTTP runs)."""
    app.config["SESSION_TYPE"] = "memory"
    init_sessionkeeper(app)


def configure_sk_cookie_permanent(app: Flask, settings: BenchSettings) -> None:
    """Permanent cookie sessions, refreshed (re-signed and re-sent) on every request that
    carries one, as Flask's permanent sessions are (SESSION_REFRESH_FRACTION 0, the
    cookie store's default)."""
    app.config["SESSION_TYPE"] = "cookie"
    app.config["SESSION_PERMANENT"] = True
    init_sessionkeeper(app)


def configure_sk_cookie_throttled(app: Flask, settings: BenchSettings) -> None:
    """Permanent cookie sessions refreshed at most once per tenth of their lifetime: the
    lazy mode. (With the default browser-session cookies, as in sk-cookie, there is no
    expiry to refresh, so the fraction would change nothing.)"""
    app.config["SESSION_TYPE"] = "cookie"
    app.config["SESSION_PERMANENT"] = True
    app.config["SESSION_REFRESH_FRACTION"] = 0.1
    init_sessionkeeper(app)


def configure_sk_redis(app: Flask, settings: BenchSettings) -> None:
    app.config["SESSION_TYPE"] = "redis"
    app.config["SESSION_REDIS"] = redis_client(settings)
    app.config["SESSION_KEY_PREFIX"] = f"{settings.key_prefix}sk:"
    init_sessionkeeper(app)


def configure_sk_redis_cluster(app: Flask, settings: BenchSettings) -> None:
    app.config["SESSION_TYPE"] = "redis"
    app.config["SESSION_REDIS"] = redis_cluster_client(settings)
    app.config["SESSION_KEY_PREFIX"] = f"{settings.key_prefix}sk:"
    init_sessionkeeper(app)


def configure_sk_memcached(app: Flask, settings: BenchSettings) -> None:
    # A "host:port" list lets sessionkeeper build its own client with its own socket options.
    app.config["SESSION_TYPE"] = "memcached"
    app.config["SESSION_MEMCACHED"] = [f"127.0.0.1:{settings.memcached_port}"]
    app.config["SESSION_KEY_PREFIX"] = f"{settings.key_prefix}sk:"
    init_sessionkeeper(app)


def configure_sk_filesystem(app: Flask, settings: BenchSettings) -> None:
    app.config["SESSION_TYPE"] = "filesystem"
    app.config["SESSION_FILE_DIR"] = data_path(settings, "sk-files")
    init_sessionkeeper(app)


def use_sk_sql(app: Flask, settings: BenchSettings, driver: str, url: str,
               table: str | None = None) -> None:
    """sessionkeeper's SQLAlchemy store from a URL: it builds its own autocommit engine."""
    install_sql_counter(app, driver)
    app.config["SESSION_TYPE"] = "sqlalchemy"
    app.config["SESSION_SQLALCHEMY"] = url
    if table is not None:
        app.config["SESSION_SQLALCHEMY_TABLE"] = table
    app.config["SESSION_KEY_PREFIX"] = f"{settings.key_prefix}sk:"
    init_sessionkeeper(app)


def configure_sk_postgresql(app: Flask, settings: BenchSettings) -> None:
    use_sk_sql(app, settings, "postgresql", settings.postgres_url, POSTGRES_TABLE)


def configure_sk_mariadb(app: Flask, settings: BenchSettings) -> None:
    use_sk_sql(app, settings, "mariadb", settings.mariadb_url, MARIADB_TABLE)


def configure_sk_sqlalchemy_sqlite(app: Flask, settings: BenchSettings) -> None:
    use_sk_sql(app, settings, "sqlite",
               "sqlite:///" + data_path(settings, "sk-sqlalchemy.sqlite3"))


def configure_sk_cachelib(app: Flask, settings: BenchSettings) -> None:
    app.config["SESSION_TYPE"] = "cachelib"
    app.config["SESSION_CACHELIB"] = cachelib_redis(settings, "sk-cachelib:")
    init_sessionkeeper(app)


def configure_sk_cachelib_files(app: Flask, settings: BenchSettings) -> None:
    from cachelib.file import FileSystemCache

    # threshold=0, as sessionkeeper's docs ask: its default 500 deletes live sessions.
    app.config["SESSION_TYPE"] = "cachelib"
    app.config["SESSION_CACHELIB"] = FileSystemCache(
        data_path(settings, "sk-cachelib-files"), threshold=0, mode=0o600
    )
    init_sessionkeeper(app)


def configure_sk_dynamodb(app: Flask, settings: BenchSettings) -> None:
    app.config["SESSION_TYPE"] = "dynamodb"
    app.config["SESSION_DYNAMODB"] = dynamodb_client(app, settings)
    app.config["SESSION_DYNAMODB_TABLE"] = DYNAMODB_TABLE
    app.config["SESSION_KEY_PREFIX"] = f"{settings.key_prefix}sk:"
    init_sessionkeeper(app)


Configurer = Callable[[Flask, BenchSettings], None]

CONFIGURERS: dict[str, Configurer] = {
    "plain": configure_plain,
    "flask-cookie": configure_flask_cookie,
    "raw-redis": configure_raw_redis,
    "raw-memcached": configure_raw_memcached,
    "raw-postgresql": configure_raw_postgresql,
    "raw-dynamodb": configure_raw_dynamodb,
    "raw-memcached-cas": configure_raw_memcached_cas,
    "raw-sqlite": configure_raw_sqlite,
    "raw-mariadb": configure_raw_mariadb,
    "raw-filesystem": configure_raw_filesystem,
    "fs-redis": configure_fs_redis,
    "fs-memcached": configure_fs_memcached,
    "fs-sqlalchemy-sqlite": configure_fs_sqlalchemy_sqlite,
    "fs-filesystem": configure_fs_filesystem,
    "fs-cachelib": configure_fs_cachelib,
    "fs-dynamodb": configure_fs_dynamodb,
    "sk-sqlite": configure_sk_sqlite,
    "sk-cookie": configure_sk_cookie,
    "sk-memory": configure_sk_memory,
    "sk-cookie-permanent": configure_sk_cookie_permanent,
    "sk-cookie-throttled": configure_sk_cookie_throttled,
    "sk-redis": configure_sk_redis,
    "sk-redis-cluster": configure_sk_redis_cluster,
    "sk-memcached": configure_sk_memcached,
    "sk-filesystem": configure_sk_filesystem,
    "sk-postgresql": configure_sk_postgresql,
    "sk-mariadb": configure_sk_mariadb,
    "sk-sqlalchemy-sqlite": configure_sk_sqlalchemy_sqlite,
    "sk-cachelib": configure_sk_cachelib,
    "sk-cachelib-files": configure_sk_cachelib_files,
    "sk-dynamodb": configure_sk_dynamodb,
}


def install_sql_counter(app: Flask, driver: str) -> None:
    """Count SQL statements in this process; must run before any DB connection opens."""
    from workercounters import (
        install_psycopg2_counter,
        install_pymysql_counter,
        install_sqlite_counter,
    )

    installers = {
        "sqlite": install_sqlite_counter,
        "postgresql": install_psycopg2_counter,
        "mariadb": install_pymysql_counter,
    }
    installers[driver](app.extensions["bench_counters"])


def count_requests(app: Flask, counters: WorkerCounters) -> None:
    """Count requests as they enter, so store ops can be divided by requests served."""
    inner = app.wsgi_app

    def counting_wsgi_app(environ: Any, start_response: Any) -> Any:
        counters.count_request()
        return inner(environ, start_response)

    app.wsgi_app = counting_wsgi_app  # type: ignore[method-assign]


# --- factories ---------------------------------------------------------------------


def create_app(variant: str, settings: BenchSettings | None = None) -> Flask:
    if variant not in CONFIGURERS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(CONFIGURERS)}")
    settings = settings or BenchSettings.from_env()
    app = Flask(__name__)
    app.config["SECRET_KEY"] = SECRET_KEY
    register_routes(app)
    counters = WorkerCounters(settings.counter_dir)
    app.extensions["bench_counters"] = counters
    count_requests(app, counters)
    CONFIGURERS[variant](app, settings)
    return app


def create_app_from_env() -> Flask:
    """gunicorn entry point: the variant comes from BENCH_VARIANT."""
    return create_app(os.environ[ENV_VARIANT])


if __name__ == "__main__":
    # Prepare step: build the app once (creates tables/dirs), then exit.
    create_app(sys.argv[1])
