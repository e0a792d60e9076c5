"""How large a session the SQL stores can keep, checked before a row is sent.

A record over the database's limit is no outage: retrying never helps. MariaDB/MySQL
answer it with "Got a packet bigger than 'max_allowed_packet'" or by dropping the
connection ("server has gone away"), which used to read as an unreachable store (503).
The stores check the packed data against the limit first and raise
:class:`SQLRecordTooLarge`, which names the limit and what raises it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from ..errors import SessionKeeperError

#: room for the rest of a statement around the data: its text, the key, the user id
STATEMENT_ROOM = 4096
#: SQLite's compiled-in SQLITE_MAX_LENGTH, for Pythons without Connection.getlimit (3.10)
SQLITE_DEFAULT_LENGTH = 1_000_000_000
#: PostgreSQL's largest allocation (MaxAllocSize): a statement, a string, a bytea value.
#: psycopg2 sends bytea as hex text, two characters a byte, inside the statement.
POSTGRESQL_MAX_ALLOC = 2**30 - 1
#: MariaDB/MySQL's error code for a statement over max_allowed_packet (ER_NET_PACKET_TOO_LARGE)
MYSQL_PACKET_TOO_LARGE = 1153


@dataclass(frozen=True)
class DataLimit:
    """The most bytes of packed session data a store keeps, and where that comes from."""

    size: int
    reason: str


class SQLRecordTooLarge(SessionKeeperError):
    """A session is larger than the SQL database can store in one row.

    Raised by the storing request (a 500 the app's logs explain), never retried: the
    session must hold less, or the database's limit be raised.
    """

    def __init__(self, store: str, size: int, limit: DataLimit) -> None:
        self.size = size
        self.limit = limit.size
        super().__init__(
            f"the session record is {size} bytes, more than the {store} store keeps in one "
            f"row ({limit.size} bytes: {limit.reason}); store less in the session")


def mysql_limit(max_allowed_packet: int) -> DataLimit:
    # The server needs the statement, and the data unescaped out of it, within one
    # max_allowed_packet: measured on MariaDB 10.11 with pymysql, a 16 MB packet takes
    # 8 MB of data, however the data escapes.
    return DataLimit(
        max(0, (max_allowed_packet - STATEMENT_ROOM) // 2),
        f"half the server's max_allowed_packet of {max_allowed_packet} bytes, less "
        f"{STATEMENT_ROOM} for the statement; raise max_allowed_packet on the server to "
        "keep larger sessions")


def sqlite_length(dbapi_connection: Any) -> int:
    """SQLITE_LIMIT_LENGTH of a ``sqlite3`` connection: the most bytes in a row."""
    getlimit = getattr(dbapi_connection, "getlimit", None)
    return int(getlimit(sqlite3.SQLITE_LIMIT_LENGTH)) if getlimit else SQLITE_DEFAULT_LENGTH


def sqlite_limit(length: int) -> DataLimit:
    return DataLimit(max(0, length - STATEMENT_ROOM),
                     f"SQLite's SQLITE_LIMIT_LENGTH of {length} bytes a row, less "
                     f"{STATEMENT_ROOM} for the rest of the row")


def postgresql_limit() -> DataLimit:
    return DataLimit((POSTGRESQL_MAX_ALLOC - STATEMENT_ROOM) // 2,
                     f"PostgreSQL takes at most {POSTGRESQL_MAX_ALLOC} bytes in one "
                     "statement, and the data travels in it as hex, two characters a byte")


def is_packet_too_large(error: BaseException | str) -> bool:
    """Whether a DBAPI error is MariaDB/MySQL refusing a statement over max_allowed_packet."""
    # pymysql and mysqlclient: args[0]; MariaDB Connector/Python: errno
    code = getattr(error, "errno", None)
    args = getattr(error, "args", ())
    return MYSQL_PACKET_TOO_LARGE in (code, args[0] if args else None)
