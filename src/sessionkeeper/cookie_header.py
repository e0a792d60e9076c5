"""Reading one cookie out of a request's ``Cookie`` header, cheaply.

Every request that uses the session reads its cookie. Parsing the whole header into a
multidict (what ``request.cookies`` does) costs several times more than finding the one
name this layer needs, so the common case is done by hand with exactly the semantics
of werkzeug's parser, and anything unusual is left to that parser.
"""

from __future__ import annotations

from werkzeug.sansio.http import parse_cookie


def cookie_value(header: str | None, name: str) -> str | None:
    """The first value of cookie ``name`` in a ``Cookie`` header, exactly as
    ``werkzeug.sansio.http.parse_cookie(header).get(name)`` reads it."""
    if not header or name not in header:
        return None
    if '"' in header:  # quoted values (with escapes, or holding ';'): werkzeug's job
        return parse_cookie(header).get(name)
    for part in header.split(";"):
        key, _, value = part.partition("=")
        # werkzeug strips both with str.strip(): non-ASCII spaces (U+00A0...) go too
        if key.strip() == name:
            return value.strip()
    return None
