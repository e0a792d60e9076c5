"""The direct statements' server-side prepared form on PostgreSQL through psycopg2.

psycopg2 sends every statement as text, which PostgreSQL parses, analyses and plans
anew each time: for the store's packed read (a dozen functions and operators to
resolve) that is most of the statement's time on the server, measured at about
70 us against 49 us for the same statement prepared (``log_min_duration_statement``,
PostgreSQL 15, local). Each connection prepares a statement once (``PREPARE``, one
extra round trip the first time) and then sends ``EXECUTE name(parameters)``.

A connection pooler that hands each transaction another server connection (PgBouncer
in transaction or statement mode) can send the ``EXECUTE`` where nothing was prepared:
PostgreSQL answers "prepared statement does not exist", the statement is run as plain
text instead, and the engine never prepares again. psycopg 3 prepares on its own;
other drivers keep plain statements.

The ``EXECUTE`` arguments are written in by the store where it can (sql_literals.py).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa

from .sql_literals import POSTGRESQL_LITERALS, PYFORMAT_PLACEHOLDER, literals_of

logger = logging.getLogger("sessionkeeper")

#: PostgreSQL's SQLSTATE for an unknown prepared statement (invalid_sql_statement_name)
UNKNOWN_PREPARED_STATEMENT = "26000"
#: (DBAPI connection, names it has prepared), in its pool record's info: a connection
#: the pool replaced (after a disconnect, say) prepares again
_PREPARED_ON_CONNECTION = "sessionkeeper_prepared"

Bind = Callable[[Mapping[str, Any]], Any]


class PreparedForm:
    """``PREPARE``/``EXECUTE`` texts of one pyformat statement, and whether the engine
    still uses them (a pooler may rule them out: see the module's text)."""

    def __init__(self, sql: str) -> None:
        numbers: dict[str, int] = {}

        def number(match: re.Match[str]) -> str:
            return f"${numbers.setdefault(match.group(1), len(numbers) + 1)}"

        # Parameter types are left to PostgreSQL to infer from the statement, as it
        # does for the same literals sent inline.
        body = PYFORMAT_PLACEHOLDER.sub(number, sql).replace("%%", "%")
        self.name = "sessionkeeper_" + hashlib.sha256(body.encode()).hexdigest()[:20]
        self.prepare_sql = f"PREPARE {self.name} AS {body}"
        self.execute_sql = (f"EXECUTE {self.name}("
                            + ", ".join(f"%({name})s" for name in numbers) + ")"
                            if numbers else f"EXECUTE {self.name}")
        self._names = tuple(numbers)
        self.usable = True

    def execute_text(self, params: Mapping[str, Any]) -> str | None:
        """The ``EXECUTE`` with ``params`` written in (sql_literals.py), or None when one
        of them is not a type written there."""
        if not self._names:
            return self.execute_sql
        literals = literals_of(self._names, params, POSTGRESQL_LITERALS)
        return None if literals is None else f"EXECUTE {self.name}({', '.join(literals)})"

    def execute(self, connection: Any, cursor: Any, params: Mapping[str, Any],
                plain_sql: str, bind: Bind) -> None:
        """Run the statement on ``connection`` (a pooled DBAPI connection) by ``cursor``,
        prepared when it can be, else as ``plain_sql``."""
        dbapi_connection = connection.dbapi_connection
        entry = connection.info.get(_PREPARED_ON_CONNECTION)
        if entry is None or entry[0] is not dbapi_connection:  # (a pool that kept info)
            entry = connection.info[_PREPARED_ON_CONNECTION] = (dbapi_connection, set())
        prepared = entry[1]
        if self.name not in prepared:
            cursor.execute(self.prepare_sql)
            prepared.add(self.name)
        text = self.execute_text(params)
        try:
            if text is None:
                cursor.execute(self.execute_sql, params)
            else:
                cursor.execute(text)  # no parameters: psycopg2 sends it as it is
        except Exception as exc:
            if getattr(exc, "pgcode", None) != UNKNOWN_PREPARED_STATEMENT:
                raise
            self.usable = False
            logger.info("the database lost a prepared statement between two statements "
                        "of one connection (a pooler such as PgBouncer in transaction "
                        "mode?); sending plain statements from now on")
            cursor.execute(plain_sql, bind(params))


def prepared_form(engine: sa.Engine, compiled: sa.engine.Compiled) -> PreparedForm | None:
    """A :class:`PreparedForm` of a statement ``compiled`` for ``engine``, when its driver
    is psycopg2 (pyformat parameters); else None."""
    if engine.dialect.driver != "psycopg2" or compiled.positional:
        return None
    return PreparedForm(str(compiled))
