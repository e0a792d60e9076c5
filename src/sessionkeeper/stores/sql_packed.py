"""MariaDB/MySQL: a session read as one result column, the row's columns packed into it,
instead of seven.

pymysql (and aiomysql, which shares its protocol code) parses every column's
description of a result in Python, about 50,000 instructions a column: for the read
every request makes, seven columns cost more than the round trip itself. Packed, they
are one binary string the server builds::

    created_at accessed_at expires_at permanent version length(user_id) user_id+data

fields separated by one space; the length is ``-`` for a NULL user id, and the user id
(spaces and all) and the data follow it without a separator. The data fits: the store
keeps it under half of max_allowed_packet (stores/sql_limits.py), which bounds CONCAT.
Times are DOUBLEs, which the server must format in digits enough to read back the same
float. MariaDB and MySQL print the shortest such digits, but that is asked once
(:data:`PROBE`) before the packed read is used: a server that rounds keeps the seven
columns. sql_rows.unpack_row turns the string back into the row.

A save's read of the row it merges into (after losing a race) is packed the same way,
version and data (sql_rows.unpack_current).

PostgreSQL's psycopg2 pays for each result column too (about 5,000 instructions a
column: its description, a name decoded through a Python codec, a type cast). There the
row is packed in binary, which no server setting formats (:func:`binary_row`)::

    float8send(created_at) float8send(accessed_at) float8send(expires_at)
    boolsend(permanent) int8send(version) int4send(length of the UTF-8 user id, -1: NULL)
    user id (UTF-8) data

read back by sql_rows.unpack_binary_row. The functions take only the column types the
store creates (or ones PostgreSQL widens to them exactly); the read is tried once
before it is used, and a table of another layout keeps the seven columns.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

#: the dialects whose read is packed as text (:func:`packed_row`)
PACKING_DIALECTS = ("mysql", "mariadb")
#: the dialects whose read is packed in binary (:func:`binary_row`)
BINARY_PACKING_DIALECTS = ("postgresql",)

#: doubles whose shortest round-trip digits are long: a timestamp with 17 significant
#: digits, a sum that is not its decimal look-alike, large and small exponents
_PROBE_VALUES = (1764848000.1234567, 0.30000000000000004, -1234.5678901234567,
                 1.2345678901234567e300, 2.2250738585072014e-308)
#: the probe: the values as DOUBLE literals (the exponent makes them DOUBLE, not
#: DECIMAL), formatted by the server as CONCAT formats the time columns
PROBE = sa.text("SELECT CONCAT(1764848000.1234567e0, ' ', 0.30000000000000004e0, ' ', "
                "-1234.5678901234567e0, ' ', 1.2345678901234567e300, ' ', "
                "2.2250738585072014e-308)")


def packed_row(table: sa.Table) -> sa.ColumnElement[Any]:
    """The columns of ``table`` a read needs as one binary string (left as the driver
    returns it: bytes)."""
    c = table.c
    space = sa.literal_column("' '")
    packed = sa.func.concat(
        c.created_at, space, c.accessed_at, space, c.expires_at, space, c.permanent, space,
        c.version, space, sa.func.ifnull(sa.func.length(c.user_id), sa.literal_column("'-'")),
        space, sa.func.ifnull(c.user_id, sa.literal_column("''")), c.data)
    return sa.type_coerce(packed, sa.types.NullType()).label("packed")


def binary_row(table: sa.Table) -> sa.ColumnElement[Any]:
    """PostgreSQL: the columns of ``table`` a read needs as one bytea (sql_rows.PG_FIELDS,
    then the user id and the data). ``byteacat`` takes bytea only: a data column of
    another type fails the statement instead of turning it into text."""
    c, func = table.c, sa.func
    user_id = func.convert_to(c.user_id, sa.literal_column("'UTF8'"))
    fields = [func.float8send(c.created_at), func.float8send(c.accessed_at),
              func.float8send(c.expires_at), func.boolsend(c.permanent),
              func.int8send(c.version),
              func.int4send(func.coalesce(func.octet_length(user_id), sa.literal_column("-1"))),
              func.coalesce(user_id, sa.literal_column("''::bytea"))]
    header = fields[0]
    for field in fields[1:]:
        header = header.op("||")(field)
    packed = func.byteacat(header, c.data)
    return sa.type_coerce(packed, sa.types.NullType()).label("packed")


def packed_current(table: sa.Table) -> sa.ColumnElement[Any]:
    """What a save reads of a row, ``version data``, as one binary string: no times in
    it, so the same on every server."""
    c = table.c
    packed = sa.func.concat(c.version, sa.literal_column("' '"), c.data)
    return sa.type_coerce(packed, sa.types.NullType()).label("packed")


def formats_exactly(probed: Any) -> bool:
    """Whether the server's answer to :data:`PROBE` reads back as the values it was sent."""
    if isinstance(probed, bytes | bytearray):
        probed = bytes(probed).decode("ascii", "replace")
    if not isinstance(probed, str):
        return False
    try:
        return tuple(float(field) for field in probed.split(" ")) == _PROBE_VALUES
    except ValueError:
        return False
