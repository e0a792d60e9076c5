"""Running the Quart test client from synchronous tests, and reading its responses."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


def in_event_loop(test: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """Run an ``async def`` test in a fresh event loop (one per test, as a server runs
    one loop per worker)."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return asyncio.run(test(*args, **kwargs))

    return run


def set_cookies(response: Any) -> list[str]:
    return list(response.headers.getlist("Set-Cookie"))


def session_cookie(response: Any, name: str = "session") -> str | None:
    """The value the response sets for cookie ``name`` ("" when it deletes it)."""
    for header in set_cookies(response):
        key, _, rest = header.partition("=")
        if key == name:
            return rest.split(";", 1)[0]
    return None


class Browser:
    """A Quart test client that keeps the session cookie as a browser would, so tests
    can read, keep or forge it."""

    def __init__(self, app: Any, cookie_name: str = "session") -> None:
        self.client = app.test_client(use_cookies=False)
        self.cookie_name = cookie_name
        self.cookie: str | None = None

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", {}))
        if self.cookie:
            headers["Cookie"] = f"{self.cookie_name}={self.cookie}"
        response = await self.client.open(path, method=method, headers=headers, **kwargs)
        sent = session_cookie(response, self.cookie_name)
        if sent is not None:
            self.cookie = sent or None  # "" deletes it
        return response

    async def get(self, path: str, **kwargs: Any) -> Any:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Any:
        return await self.request("POST", path, **kwargs)
