"""The session's Set-Cookie header, as werkzeug's ``dump_cookie`` writes it, for less.

``response.set_cookie`` quotes the path, encodes the domain, checks SameSite and
formats every attribute again on each response that sends the session cookie (every
write, and every request of a permanent cookie session): about a tenth of what a
session write costs in Flask. The attributes only change with the app's config, so they
are formatted once, by werkzeug itself, and a response adds the value and the
expiry. A value werkzeug would quote, or a header over the response's size limit
(which werkzeug warns about), is left to ``set_cookie``.
"""

from __future__ import annotations

import re
import time
from typing import Any, Protocol

from werkzeug import http as werkzeug_http
from werkzeug.datastructures import Headers
from werkzeug.http import dump_cookie, http_date

#: werkzeug's own test of a value it sends unquoted (None: an unknown release; then
#: every value goes through set_cookie)
_PLAIN_VALUE: re.Pattern[str] | None = getattr(werkzeug_http, "_cookie_no_quote_re", None)


class CookieResponse(Protocol):
    """A werkzeug-based response: Flask's, Quart's."""

    headers: Headers
    max_cookie_size: int

    def set_cookie(self, key: str, value: str = "", **options: Any) -> None: ...


class SetCookie:
    """Writes one cookie's Set-Cookie header; built once per cookie configuration."""

    def __init__(self, name: str, options: dict[str, Any]) -> None:
        self.name, self.options = name, options
        # werkzeug's header for an empty value and no expiry, cut where the value and
        # the expiry go: "name=" | "; Domain=d" | (Expires, Max-Age) | "; Secure; Path=/..."
        first, *attributes = dump_cookie(name, "", **options).split("; ")
        domain = [a for a in attributes if a.startswith("Domain=")]
        rest = [a for a in attributes if not a.startswith("Domain=")]
        self._head = first
        self._domain = "".join(f"; {a}" for a in domain)
        self._tail = "".join(f"; {a}" for a in rest)
        self._expires_second = -1
        self._expires = ""

    def add_to(self, response: CookieResponse, value: str, max_age: int | None,
               size_limit: int | None = None) -> None:
        """``response.set_cookie(name, value, max_age=max_age, **options)``;
        ``size_limit``: ``response.max_cookie_size``, when the caller knows it."""
        header = self.header(value, max_age, time.time())
        limit = response.max_cookie_size if size_limit is None else size_limit
        if header is None or (limit and len(header) > limit):
            response.set_cookie(self.name, value, max_age=max_age, **self.options)
        else:
            response.headers.add("Set-Cookie", header)

    def header(self, value: str, max_age: int | None, now: float) -> str | None:
        """The header ``dump_cookie`` writes at ``now``; None for a value it quotes."""
        if _PLAIN_VALUE is None or not _PLAIN_VALUE.fullmatch(value):
            return None
        if max_age is None:
            return f"{self._head}{value}{self._domain}{self._tail}"
        return (f"{self._head}{value}{self._domain}; Expires={self._expires_at(now + max_age)}"
                f"; Max-Age={max_age}{self._tail}")

    def _expires_at(self, moment: float) -> str:
        # HTTP dates have whole seconds: one formatting per second, not per response.
        second = int(moment)
        if second != self._expires_second:
            self._expires, self._expires_second = http_date(moment), second
        return self._expires
