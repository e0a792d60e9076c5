"""Given an async driver (``postgresql+asyncpg://``, ``mysql+aiomysql://``,
``mysql+asyncmy://``), the SQL store's read, versioned save and refresh run on the event
loop, not in a worker thread: such requests are served while every store thread is busy.
They answer as the threaded ones do: 50 concurrent writers of one session lose nothing, a
save of a stale version reads the row again and merges, a session deleted meanwhile is
not recreated, rows are written exactly as the blocking path writes them, an unreachable
database answers 503 at once, and on trio (no asyncio loop) the calls go back to the
threads. Quart apps given such a URL or an ``AsyncEngine`` in SESSION_SQLALCHEMY get the
same."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import sqlalchemy as sa
from asgi_app import ROUTES
from native_redis import fifty_writers, loops_kept_alive, served_while_the_store_threads_are_busy
from providers import _sqlalchemy, sqlalchemy_mariadb, sqlalchemy_postgresql
from starlette.applications import Starlette
from starlette.testclient import TestClient

from sessionkeeper.serialization import ValueCodec
from sessionkeeper.starlette import SessionMiddleware
from sessionkeeper.stores.base import SessionRecord, SessionUpdate
from sessionkeeper.stores.sqlalchemy import SQLAlchemyStore, engine_from_url

#: the async drivers of the servers the blocking providers reach
ASYNC_DRIVERS = {"postgresql": ("asyncpg", sqlalchemy_postgresql),
                 "postgresql-psycopg": ("psycopg_async", sqlalchemy_postgresql),
                 "mariadb": ("aiomysql", sqlalchemy_mariadb),
                 "mariadb-asyncmy": ("asyncmy", sqlalchemy_mariadb)}
#: the module each async driver is
_MODULES = {"asyncpg": "asyncpg", "psycopg_async": "psycopg", "aiomysql": "aiomysql",
            "asyncmy": "asyncmy"}


def urls(database: str) -> tuple[str, str]:
    """The server's blocking URL and the same server through its async driver."""
    driver, provider = ASYNC_DRIVERS[database]
    module = _MODULES[driver]
    _sqlalchemy.require_driver(module, f"the {driver} driver (pip install {module})")
    blocking = sa.make_url(provider.url())
    return (blocking.render_as_string(hide_password=False),
            blocking.set(drivername=f"{blocking.get_backend_name()}+{driver}")
            .render_as_string(hide_password=False))


@pytest.fixture(params=sorted(ASYNC_DRIVERS))
def database(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, str]]:
    """(blocking URL, async URL, a fresh table), the table dropped afterwards."""
    blocking, native = urls(request.param)
    table = _sqlalchemy.random_table()
    engine = engine_from_url(blocking)
    try:
        with _sqlalchemy.dropped_afterwards(engine, table):
            yield blocking, native, table
    finally:
        engine.dispose()


def session_app(store: Any, **options: Any) -> SessionMiddleware:
    return SessionMiddleware(Starlette(routes=ROUTES), secret_key="test secret", store=store,
                             key_prefix=f"native-{secrets.token_hex(4)}:", **options)


def test_an_event_loop_that_ended_is_not_kept_alive_by_its_connections(
        database: tuple[str, str, str]) -> None:
    _, native, table = database
    assert loops_kept_alive(session_app(f"{native}?table={table}")) == 0


def test_a_read_needs_no_store_thread_on_asyncio(database: tuple[str, str, str]) -> None:
    _, native, table = database
    app = session_app(f"{native}?table={table}", store_threads=1)
    assert anyio.run(served_while_the_store_threads_are_busy, app) == 200


def test_a_change_needs_no_store_thread_on_asyncio(database: tuple[str, str, str]) -> None:
    _, native, table = database
    app = session_app(f"{native}?table={table}", store_threads=1)
    assert anyio.run(served_while_the_store_threads_are_busy, app, "POST", "/set") == 200


def test_a_refresh_needs_no_store_thread_on_asyncio(database: tuple[str, str, str]) -> None:
    # max_age=10: a read more than a second (a tenth) after the last write refreshes
    _, native, table = database
    app = session_app(f"{native}?table={table}", store_threads=1, max_age=10)
    assert anyio.run(served_while_the_store_threads_are_busy, app, "GET", "/view",
                     1.2) == 200


def test_a_url_without_prepared_statements_works_natively() -> None:
    # ?prepared_statement_cache_size=0 (PostgreSQL behind pgbouncer): asyncpg's cache
    # off on the native path, and the blocking driver never sees the option
    blocking, native = urls("postgresql")
    table = _sqlalchemy.random_table()
    engine = engine_from_url(blocking)
    app = session_app(f"{native}?table={table}&prepared_statement_cache_size=0",
                      store_threads=1)
    try:
        with _sqlalchemy.dropped_afterwards(engine, table):
            assert anyio.run(served_while_the_store_threads_are_busy, app, "POST",
                             "/set") == 200
    finally:
        engine.dispose()


def test_a_blocking_driver_url_waits_for_its_thread(database: tuple[str, str, str]) -> None:
    # The contrast that shows the tests above can fail.
    blocking, _, table = database
    app = session_app(f"{blocking}?table={table}", store_threads=1)
    assert anyio.run(served_while_the_store_threads_are_busy, app) == 0
    assert anyio.run(served_while_the_store_threads_are_busy, app, "POST", "/set") == 0


def test_fifty_concurrent_writers_of_one_session_lose_nothing(
        database: tuple[str, str, str]) -> None:
    _, native, table = database
    session = anyio.run(fifty_writers, session_app(f"{native}?table={table}"))
    assert session == {"start": True, **{f"k{n}": True for n in range(50)}}


def test_the_native_path_answers_as_the_threaded_one_and_trio_uses_threads(
        database: tuple[str, str, str]) -> None:
    _, native, table = database
    app = session_app(f"{native}?table={table}")
    with TestClient(app) as browser:
        browser.post("/set", json={"a": [1, 2], "b": "x"})
        browser.post("/login", json={"user": "laowang"})
        seen = browser.get("/view").json()
        assert seen == {"session": {"a": [1, 2], "b": "x"}, "user": "laowang"}
        with TestClient(app, backend="trio", cookies=dict(browser.cookies)) as on_trio:
            assert on_trio.get("/view").json() == seen
            assert on_trio.post("/set", json={"c": 3}).status_code == 200
        assert browser.get("/view").json()["session"] == {"a": [1, 2], "b": "x", "c": 3}
        browser.post("/logout")
        assert browser.get("/view").json() == {"session": {}, "user": None}


def test_on_trio_the_store_offers_no_native_call(database: tuple[str, str, str]) -> None:
    import trio

    blocking, native, table = database
    with built_store(blocking, native, table) as store:
        async def offered() -> list[Any]:
            return [store.async_operation(name) for name in ("load", "update", "touch")]

        assert trio.run(offered) == [None, None, None]
        assert None not in anyio.run(offered)


def test_connections_close_with_their_event_loop() -> None:
    blocking, native = urls("postgresql")
    table = _sqlalchemy.random_table()
    app = session_app(f"{native}?table={table}", store_threads=1)
    engine = engine_from_url(blocking)

    def connections() -> int:
        time.sleep(0.3)  # the server notices a closed connection promptly, not at once
        with engine.connect() as conn:  # those whose last statement was on our table
            return int(conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE :t "
                "AND pid <> pg_backend_pid()"), {"t": f"%{table}%"}).scalar_one())

    try:
        with _sqlalchemy.dropped_afterwards(engine, table):
            assert anyio.run(served_while_the_store_threads_are_busy, app) == 200
            after_one_loop = connections()
            for _ in range(3):  # three more loops one after the other, as test clients make
                assert anyio.run(served_while_the_store_threads_are_busy, app) == 200
            assert connections() == after_one_loop  # (the threads' connections stay)
    finally:
        engine.dispose()


@pytest.mark.parametrize("given", ["url", "async engine"])
def test_quart_reads_and_saves_without_a_store_thread(database: tuple[str, str, str],
                                                      given: str, tmp_path: Any) -> None:
    import asyncio
    import sys

    sys.path.insert(0, str(Path(__file__).parent.parent / "quart"))
    from quart_app import make_app as make_quart_app
    from quart_helpers import Browser
    from sqlalchemy.ext.asyncio import create_async_engine

    _, native, table = database
    # (psycopg 3's AsyncEngine says "postgresql+psycopg", as its blocking engine does)
    source: Any = native if given == "url" else create_async_engine(
        native.replace("+psycopg_async://", "+psycopg://"))
    app = make_quart_app({"SESSION_TYPE": "sqlalchemy", "SESSION_SQLALCHEMY": source,
                          "SESSION_SQLALCHEMY_TABLE": table, "SESSION_STORE_THREADS": 1},
                         tmp_path)
    threads = app.extensions["sessionkeeper"].interface.threads

    async def while_the_thread_is_busy() -> list[Any]:
        browser = Browser(app)
        await browser.post("/set", json={"a": 1})
        release = threading.Event()
        held = asyncio.ensure_future(threads.run(lambda: release.wait(10)))
        await asyncio.sleep(0.05)  # the only store thread is taken
        try:
            changed = await asyncio.wait_for(browser.post("/set", json={"b": 2}), 2)
            seen = await asyncio.wait_for(browser.get("/view"), 2)
        finally:
            release.set()
            await held
        return [changed.status_code, (await seen.get_json())["session"]]

    assert asyncio.run(while_the_thread_is_busy()) == [200, {"a": 1, "b": 2}]


def test_connections_the_server_closed_are_replaced_without_an_error() -> None:
    # As after a database restart: the pooled connections are dead when next used.
    blocking, native = urls("postgresql")
    table = _sqlalchemy.random_table()
    app = session_app(f"{native}?table={table}", breaker_seconds=0)
    engine = engine_from_url(blocking)
    try:
        with _sqlalchemy.dropped_afterwards(engine, table), TestClient(app) as browser:
            browser.post("/set", json={"a": 1})
            assert browser.get("/view").json()["session"] == {"a": 1}
            with engine.connect() as conn:  # every connection that used our table
                ended = conn.execute(sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE query LIKE :t AND pid <> pg_backend_pid()"),
                    {"t": f"%{table}%"}).scalar_one()
            assert ended >= 1
            time.sleep(0.2)
            answer = browser.get("/view")
            assert answer.status_code == 200 and answer.json()["session"] == {"a": 1}
            changed = browser.post("/set", json={"b": 2})
            assert changed.status_code == 200
            assert browser.get("/view").json()["session"] == {"a": 1, "b": 2}
    finally:
        engine.dispose()


def test_an_unreachable_database_answers_503_at_once_without_a_thread(
        database: tuple[str, str, str]) -> None:
    blocking, native, table = database
    closed_port = sa.make_url(native).set(port=_closed_port())
    with built_store(blocking, closed_port, table) as store:
        app = session_app(store, store_threads=1, breaker_seconds=0)

        async def read_while_the_thread_is_busy() -> tuple[int, float]:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://test") as browser:
                # a session written by the blocking engine (which still reaches the server)
                browser.cookies.set("session", await _stored_session(app, store))
                release = threading.Event()
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(app.threads.run, lambda: release.wait(10))
                    await anyio.sleep(0.05)  # the only store thread is taken
                    started = time.monotonic()
                    try:
                        with anyio.fail_after(2):
                            answer = await browser.get("/view")
                    finally:
                        release.set()
                    return answer.status_code, time.monotonic() - started

        status, waited = anyio.run(read_while_the_thread_is_busy)
        assert status == 503 and waited < 1


def test_a_database_that_stops_answering_gives_503_after_the_timeout_and_recovers(
        database: tuple[str, str, str]) -> None:
    blocking, native, table = database
    target = sa.make_url(native)
    with FreezingProxy(target.port or 0) as proxy, \
            built_store(blocking, target.set(port=proxy.port), table) as store:
        app = session_app(store, breaker_seconds=0)
        with TestClient(app) as browser:  # one event loop: its connections are reused
            browser.post("/set", json={"a": 1})
            assert browser.get("/view").json()["session"] == {"a": 1}
            proxy.frozen.set()  # connections stay open; nothing answers
            try:
                started = time.monotonic()
                frozen = browser.get("/view")
                waited = time.monotonic() - started
            finally:
                proxy.frozen.clear()
            assert frozen.status_code == 503 and "temporarily unavailable" in frozen.text
            assert 1.5 < waited < 4  # the store's timeout (2 s here)
            assert browser.get("/view").json()["session"] == {"a": 1}  # a new connection


def test_a_stale_save_reads_again_and_merges_and_never_recreates(
        database: tuple[str, str, str]) -> None:
    blocking, native, table = database
    with built_store(blocking, native, table) as store:
        now = time.time()
        store.create("k1", record(now, {"a": b"\x01"}))

        async def stale_then_gone() -> tuple[bool, dict[str, bytes], bool]:
            loaded = await store.async_operation("load")("k1", now)  # type: ignore[misc]
            store.update("k1", delta(now, {"b": b"\x02"}))  # another request saves first
            merged = await store.async_operation("update")(  # type: ignore[misc]
                "k1", delta(now, {"c": b"\x03"}, version=loaded.version))
            after = await store.async_operation("load")("k1", now)  # type: ignore[misc]
            store.delete("k1")  # a logout
            recreated = await store.async_operation("update")(  # type: ignore[misc]
                "k1", delta(now, {"d": b"\x04"}, version=loaded.version))
            return merged, after.values, recreated

        assert anyio.run(stale_then_gone) == (
            True, {"a": b"\x01", "b": b"\x02", "c": b"\x03"}, False)
        assert store.load("k1", now) is None


def test_native_and_blocking_saves_leave_equal_rows(database: tuple[str, str, str]) -> None:
    blocking, native, table = database
    with built_store(blocking, native, table) as store:
        now = time.time()
        for key in ("blocking", "native"):
            store.create(key, record(now, {"a": b"\x01", "gone": b"\x02"}))
        codec = ValueCodec()
        steps = [delta(now + 1, {"b": codec.encode(b"\x00\xff" * 100)}, deleted={"gone"}),
                 delta(now + 2, {"a": codec.encode("changed")}, user="l\u00e4owang")]
        for step in steps:
            store.update("blocking", step)
        store.touch("blocking", now + 3, now + 100)

        async def natively() -> None:
            for step in steps:
                assert await store.async_operation("update")("native", step)  # type: ignore[misc]
            assert await store.async_operation("touch")(  # type: ignore[misc]
                "native", now + 3, now + 100)
            loaded = await store.async_operation("load")("native", now)  # type: ignore[misc]
            assert loaded.values == store.load("blocking", now).values  # type: ignore[union-attr]

        anyio.run(natively)
        with store.engine.connect() as conn:
            rows = {row[0]: tuple(row[1:]) for row in conn.execute(sa.select(
                store.table.c.key, store.table.c.data, store.table.c.created_at,
                store.table.c.accessed_at, store.table.c.expires_at,
                store.table.c.permanent, store.table.c.user_id, store.table.c.version))}
        assert rows["native"] == rows["blocking"]
        assert rows["native"][5] == "l\u00e4owang" and rows["native"][6] == 3


# -- helpers --------------------------------------------------------------------------

class built_store:  # a context manager, named like open()
    """A store on the blocking URL's table that runs natively on ``native``."""

    def __init__(self, blocking: str, native: str | sa.URL, table: str) -> None:
        self.store = SQLAlchemyStore(engine_from_url(blocking), table=table,
                                     codec=ValueCodec(), owns_engine=True)
        assert self.store.use_async_driver(native, timeout=2)

    def __enter__(self) -> SQLAlchemyStore:
        self.store.check()
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()


def record(now: float, values: dict[str, bytes]) -> SessionRecord:
    return SessionRecord(values=values, created_at=now, accessed_at=now,
                         expires_at=now + 60, permanent=True)


def delta(now: float, values: dict[str, bytes], *, deleted: set[str] | None = None,
          user: str | None = None, version: Any = None) -> SessionUpdate:
    return SessionUpdate(set_values=values, deleted_keys=deleted or set(), replace=False,
                         accessed_at=now, expires_at=now + 60, permanent=True,
                         user_id=user, user_id_changed=user is not None, version=version)


class FreezingProxy:
    """A TCP proxy on loopback to ``port`` that stops passing bytes while ``frozen``
    is set, as a hung server or a link gone dark would."""

    def __init__(self, port: int) -> None:
        import socket

        self.target = port
        self.frozen = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[Any] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(("127.0.0.1", self.target))
            self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: Any, sink: Any) -> None:
        try:
            while data := source.recv(65536):
                while self.frozen.is_set():
                    time.sleep(0.01)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                end.close()

    def __enter__(self) -> FreezingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.frozen.clear()
        for sock in self._sockets:
            sock.close()


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _stored_session(app: SessionMiddleware, store: SQLAlchemyStore) -> str:
    """The cookie of a session holding {"a": 1}, written in a thread (the blocking engine)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as browser:
        # the native path is down: the write goes through the blocking engine
        native, store._native = store._native, None
        try:
            answer = await browser.post("/set", json={"a": 1})
        finally:
            store._native = native
        assert answer.status_code == 200
        return answer.cookies["session"]
