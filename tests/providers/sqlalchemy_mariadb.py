"""The SQLAlchemy store on the machine's MariaDB, in a fresh table per test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from providers import _sqlalchemy

from sessionkeeper.serialization import ValueCodec
from sessionkeeper.stores.sqlalchemy import SQLAlchemyStore

KIND = _sqlalchemy.KIND
URLS = ("mysql+pymysql://root@127.0.0.1:3306/test",)


def url() -> str:
    return _sqlalchemy.server_url(URLS, "MariaDB at 127.0.0.1:3306, database 'test'")


def connector_url() -> str:
    """The same server through MariaDB Connector/Python (``pip install mariadb``, which
    builds against Debian's libmariadb-dev)."""
    _sqlalchemy.require_driver("mariadb", "MariaDB Connector/Python (pip install mariadb)")
    return (sa.make_url(url()).set(drivername="mysql+mariadbconnector")
            .render_as_string(hide_password=False))


@contextmanager
def store(codec: ValueCodec) -> Iterator[SQLAlchemyStore]:
    with _sqlalchemy.store(url(), codec) as made:
        yield made


@contextmanager
def flask_config(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with _sqlalchemy.flask_config(url()) as config:
        yield config
