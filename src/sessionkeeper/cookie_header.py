"""Reading one cookie out of a request's ``Cookie`` header, cheaply.

Every request that uses the session reads its cookie. Parsing the whole header into a
multidict (what ``request.cookies`` does) costs several times more than finding the one
name this layer needs. So a header written the way browsers write it (RFC 6265's
``name=value; name=value`` with plain tokens and unquoted values) is read by hand, and
anything else - quotes, backslashes, stray spaces or control characters, non-ASCII - is
left to werkzeug's own parser. Werkzeug has changed how it reads such headers between
releases (3.1.9 rewrote it); asking it directly keeps ``session`` equal to what
``request.cookies`` gives on whichever version is installed.
"""

from __future__ import annotations

import re

from werkzeug.sansio.http import parse_cookie

# RFC 6265 section 4.1.1: cookie-name is a token, cookie-value (unquoted) is cookie-octets,
# pairs are joined by "; ". Every werkzeug release reads such a header the same way: no
# space, quote, backslash, comma or non-ASCII character anywhere but the separators.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_OCTETS = r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*"
_PLAIN_HEADER = re.compile(rf"{_TOKEN}={_OCTETS}(?:; ?{_TOKEN}={_OCTETS})*")


def cookie_value(header: str | None, name: str) -> str | None:
    """The first value of cookie ``name`` in a ``Cookie`` header, exactly as
    ``werkzeug.sansio.http.parse_cookie(header).get(name)`` reads it."""
    if not header or name not in header:
        return None  # werkzeug's keys and their names appear verbatim in the header
    if _PLAIN_HEADER.fullmatch(header) is None:
        return parse_cookie(header).get(name)
    for part in header.split(";"):
        key, _, value = part.lstrip(" ").partition("=")
        if key == name:
            return value
    return None
