"""The benchmark's app on ASGI: Starlette under uvicorn, one variant per session layer.

Routes mean what they mean on Flask (app.py): /ping never touches the session, /login
stores the user and the theme, /read returns them, /write increments a counter.

    asgi-plain                 no session layer (only /ping is measured)
    asgi-starlette-cookie      Starlette's own SessionMiddleware (a signed cookie)
    asgi-starsessions-cookie   starsessions, CookieStore, with its autoload middleware
    asgi-starsessions-redis    starsessions, RedisStore (redis.asyncio)
    asgi-sk-cookie             sessionkeeper, no store: Starlette's cookie
    asgi-sk-redis              sessionkeeper, store="redis://..."
    asgi-sk-sqlite             sessionkeeper, store="sqlite:///..."
    asgi-sk-postgresql         sessionkeeper, store="postgresql+psycopg2://..."
    asgi-sk-postgresql-asyncpg sessionkeeper, store="postgresql+asyncpg://...": the read,
                               save and refresh on asyncpg from the event loop, no thread
    asgi-sk-mariadb            sessionkeeper, store="mysql+pymysql://..." (threads); with
    asgi-sk-mariadb-aiomysql   -aiomysql and -asyncmy the read, save and refresh natively:
    asgi-sk-mariadb-asyncmy    in process only (asgi_inprocess.py), not in run.py's list
    asgi-raw-redis             no session layer: /read one redis.asyncio GET, /write a GET
                               and a SET (the floor of round trips for a Redis session)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from common import (
    ASGI_MARIADB_TABLE,
    ASGI_POSTGRES_TABLE,
    ENV_VARIANT,
    READ_BODY,
    REDIS_HOST,
    SESSION_THEME,
    SESSION_USER,
    BenchSettings,
)
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from workercounters import (
    WorkerCounters,
    install_asyncpg_counter,
    install_psycopg2_counter,
    install_sqlite_counter,
)

SECRET_KEY = "benchmark-secret-key-not-for-production"
ONE_DAY = 24 * 60 * 60
#: sessionkeeper's store threads: as many as anyio's default pool (Starlette's own thread
#: work), so no variant gets more threads than another
THREADS = 40


async def ping(request: Request) -> Response:
    return PlainTextResponse("pong")


async def login(request: Request) -> Response:
    request.session["user"] = SESSION_USER
    request.session["theme"] = SESSION_THEME
    return PlainTextResponse("ok")


async def read(request: Request) -> Response:
    session = request.session
    return PlainTextResponse(f"{session.get('user')} {session.get('theme')}")


async def write(request: Request) -> Response:
    session = request.session
    session["counter"] = session.get("counter", 0) + 1
    return PlainTextResponse(str(session["counter"]))


def session_routes() -> list[Route]:
    return [Route("/ping", ping), Route("/login", login), Route("/read", read),
            Route("/write", write)]


def redis_url(settings: BenchSettings) -> str:
    return f"redis://{REDIS_HOST}:{settings.redis_port}/{settings.redis_db}"


# --- variants --------------------------------------------------------------------------
def plain(settings: BenchSettings, counters: WorkerCounters) -> Starlette:
    return Starlette(routes=[Route("/ping", ping)])


def starlette_cookie(settings: BenchSettings, counters: WorkerCounters) -> Starlette:
    from starlette.middleware.sessions import SessionMiddleware

    return Starlette(routes=session_routes(), middleware=[
        Middleware(SessionMiddleware, secret_key=SECRET_KEY, max_age=ONE_DAY)])


def _starsessions(store: Any) -> Starlette:
    from starsessions import SessionAutoloadMiddleware, SessionMiddleware

    return Starlette(routes=session_routes(), middleware=[
        Middleware(SessionMiddleware, store=store, lifetime=ONE_DAY, rolling=True,
                   cookie_https_only=False),
        Middleware(SessionAutoloadMiddleware),
    ])


def starsessions_cookie(settings: BenchSettings, counters: WorkerCounters) -> Starlette:
    from starsessions import CookieStore

    return _starsessions(CookieStore(secret_key=SECRET_KEY))


def starsessions_redis(settings: BenchSettings, counters: WorkerCounters) -> Starlette:
    from starsessions.stores.redis import RedisStore

    return _starsessions(RedisStore(redis_url(settings), prefix=settings.key_prefix))


def _sessionkeeper(store: str | None, settings: BenchSettings,
                   on_demand: bool = False) -> Starlette:
    from sessionkeeper.starlette import SessionAutoloadMiddleware, SessionMiddleware

    # On demand: the routes that use the session are loaded by the autoload middleware
    # (the endpoints stay the same); /ping reads nothing.
    autoload = [Middleware(SessionAutoloadMiddleware, paths=["/login", "/read", "/write"])]
    return Starlette(routes=session_routes(), middleware=[
        Middleware(SessionMiddleware, secret_key=SECRET_KEY, max_age=ONE_DAY, store=store,
                   key_prefix=settings.key_prefix, store_threads=THREADS,
                   preload=not on_demand),
        *(autoload if on_demand else []),
    ])


def sk_cookie(settings: BenchSettings, counters: WorkerCounters) -> Starlette:
    return _sessionkeeper(None, settings)


def sk_redis(settings: BenchSettings, counters: WorkerCounters) -> Starlette:
    return _sessionkeeper(redis_url(settings), settings)


def sk_redis_on_demand(settings: BenchSettings, counters: WorkerCounters) -> Starlette:
    return _sessionkeeper(redis_url(settings), settings, on_demand=True)


def sk_sqlite(settings: BenchSettings, counters: WorkerCounters) -> Starlette:
    install_sqlite_counter(counters)
    return _sessionkeeper(f"sqlite:///{os.path.join(settings.data_dir, 'asgi-sk.sqlite3')}",
                          settings)


def sk_postgresql(settings: BenchSettings, counters: WorkerCounters) -> Starlette:
    install_psycopg2_counter(counters)
    return _sessionkeeper(f"{settings.postgres_url}?table={ASGI_POSTGRES_TABLE}", settings)


def sk_postgresql_asyncpg(settings: BenchSettings, counters: WorkerCounters) -> Starlette:
    install_psycopg2_counter(counters)  # what stays on the blocking engine (the login)
    install_asyncpg_counter(counters)
    url = settings.postgres_url.replace("+psycopg2://", "+asyncpg://")
    return _sessionkeeper(f"{url}?table={ASGI_POSTGRES_TABLE}", settings)


def _sk_mariadb(driver: str, settings: BenchSettings) -> Starlette:
    url = settings.mariadb_url.replace("+pymysql://", f"+{driver}://")
    return _sessionkeeper(f"{url}?table={ASGI_MARIADB_TABLE}", settings)


def sk_mariadb(settings: BenchSettings, counters: WorkerCounters) -> Starlette:
    return _sk_mariadb("pymysql", settings)


def sk_mariadb_aiomysql(settings: BenchSettings, counters: WorkerCounters) -> Starlette:
    return _sk_mariadb("aiomysql", settings)


def sk_mariadb_asyncmy(settings: BenchSettings, counters: WorkerCounters) -> Starlette:
    return _sk_mariadb("asyncmy", settings)


def raw_redis(settings: BenchSettings, counters: WorkerCounters) -> Starlette:
    """No session layer: the fewest round trips a Redis session can make, on
    redis.asyncio from the handler."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url(settings))
    key = f"{settings.key_prefix}raw:{READ_BODY}"

    async def raw_login(request: Request) -> Response:
        await client.set(key, READ_BODY)
        response = PlainTextResponse("ok")
        response.set_cookie("raw", "1")  # the runner wants a cookie to send back
        return response

    async def raw_read(request: Request) -> Response:
        value = await client.get(key)
        return PlainTextResponse(value.decode() if value is not None else "missing")

    async def raw_write(request: Request) -> Response:
        value = await client.get(key)
        await client.set(key, value if value is not None else READ_BODY)
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/ping", ping), Route("/login", raw_login),
                             Route("/read", raw_read), Route("/write", raw_write)])


VARIANTS: dict[str, Callable[[BenchSettings, WorkerCounters], Starlette]] = {
    "asgi-plain": plain,
    "asgi-starlette-cookie": starlette_cookie,
    "asgi-starsessions-cookie": starsessions_cookie,
    "asgi-starsessions-redis": starsessions_redis,
    "asgi-sk-cookie": sk_cookie,
    "asgi-sk-redis": sk_redis,
    "asgi-sk-redis-on-demand": sk_redis_on_demand,
    "asgi-sk-sqlite": sk_sqlite,
    "asgi-sk-postgresql": sk_postgresql,
    "asgi-sk-postgresql-asyncpg": sk_postgresql_asyncpg,
    "asgi-sk-mariadb": sk_mariadb,
    "asgi-sk-mariadb-aiomysql": sk_mariadb_aiomysql,
    "asgi-sk-mariadb-asyncmy": sk_mariadb_asyncmy,
    "asgi-raw-redis": raw_redis,
}


class CountingRequests:
    """Counts HTTP requests as they enter, so store ops can be divided by requests."""

    def __init__(self, app: ASGIApp, counters: WorkerCounters) -> None:
        self.app = app
        self.counters = counters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.counters.count_request()
        await self.app(scope, receive, send)


def create_app(variant: str, settings: BenchSettings | None = None) -> ASGIApp:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    settings = settings or BenchSettings.from_env()
    counters = WorkerCounters(settings.counter_dir)
    return CountingRequests(VARIANTS[variant](settings, counters), counters)


def create_app_from_env() -> ASGIApp:
    """uvicorn entry point (--factory): the variant comes from BENCH_VARIANT."""
    return create_app(os.environ[ENV_VARIANT])


if __name__ == "__main__":
    # Prepare step: build the app once (creates tables and files), then exit.
    import asyncio

    app = create_app(sys.argv[1])

    async def start_and_stop() -> None:
        messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

        async def receive() -> dict[str, Any]:
            return next(messages)

        async def send(message: Any) -> None:
            if message["type"].endswith("failed"):
                raise RuntimeError(message.get("message", "start-up failed"))

        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)

    asyncio.run(start_and_stop())
