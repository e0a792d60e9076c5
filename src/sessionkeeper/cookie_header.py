"""Reading one cookie out of a request's ``Cookie`` header, cheaply.

Every request that uses the session reads its cookie. Parsing the whole header into a
multidict (what ``request.cookies`` does) costs several times more than finding the one
name this layer needs, so the common case is done by hand with exactly the semantics
of werkzeug's parser, and anything unusual is left to that parser.
"""

from __future__ import annotations

from werkzeug.sansio.http import parse_cookie

# werkzeug's cookie pattern matches whitespace in ASCII mode: str.strip() with no
# argument would also strip non-ASCII spaces such as U+00A0 and U+0085.
_ASCII_SPACE = " \t\n\r\f\v"


def cookie_value(header: str | None, name: str) -> str | None:
    """The first value of cookie ``name`` in a ``Cookie`` header, exactly as
    ``werkzeug.sansio.http.parse_cookie(header).get(name)`` reads it."""
    if not header or name not in header:
        return None
    if '"' in header:  # quoted values (with escapes, or holding ';'): werkzeug's job
        return parse_cookie(header).get(name)
    for part in header.split(";"):
        key, _, value = part.partition("=")
        if key.strip(_ASCII_SPACE) == name:
            return value.strip(_ASCII_SPACE)
    return None
