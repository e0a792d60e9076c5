"""Helpers of the SQLAlchemy store providers: one random table per test, dropped after."""

from __future__ import annotations

import importlib
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

import sqlalchemy as sa
from servers import require

from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.sqlalchemy import SQLAlchemyStore, engine_from_url

KIND = "sqlalchemy"


def random_table() -> str:
    return f"sktest_{secrets.token_hex(4)}"


@cache
def _first_reachable(urls: tuple[str, ...]) -> str | None:
    for url in urls:
        engine = engine_from_url(url, timeout=2)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.DBAPIError:
            continue
        finally:
            engine.dispose()
        return url
    return None


def server_url(urls: Sequence[str], what: str) -> str:
    """The first of ``urls`` that answers; skips (fails in CI) naming ``what`` otherwise."""
    url = _first_reachable(tuple(urls))
    require(url is not None, f"{what} (tried {', '.join(urls)})")
    assert url is not None
    return url


def require_driver(module: str, what: str) -> None:
    """Skip (fail in CI) unless the DB-API driver ``module`` imports."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        require(False, f"{what}: {exc}")


@contextmanager
def dropped_afterwards(engine: sa.Engine, table: str) -> Iterator[None]:
    try:
        yield
    finally:
        sa.Table(table, sa.MetaData()).drop(engine, checkfirst=True)


@contextmanager
def store(url: str, codec: ValueCodec) -> Iterator[SQLAlchemyStore]:
    table = random_table()
    made = SQLAlchemyStore(engine_from_url(url), table=table, codec=codec, owns_engine=True)
    try:
        with dropped_afterwards(made.engine, table):
            made.check()
            yield made
    finally:
        made.close()


@contextmanager
def flask_config(url: str) -> Iterator[dict[str, Any]]:
    """App config using a fresh table through an engine that is disposed afterwards."""
    table = random_table()
    # An Engine rather than the URL: the app's pool is closed when the test ends, so
    # hundreds of test apps never pile up connections on a shared server.
    engine = engine_from_url(url)
    try:
        with dropped_afterwards(engine, table):
            yield {"SESSION_TYPE": KIND, "SESSION_SQLALCHEMY": engine,
                   "SESSION_SQLALCHEMY_TABLE": table}
    finally:
        engine.dispose()
