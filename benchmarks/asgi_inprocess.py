"""Load-independent cost of one ASGI request: direct calls of an asgi_app.py variant.

Runs N requests of one route with a logged-in session cookie on one asyncio loop, no
server and no sockets but the store's, ``--concurrency`` of them at a time, and prints
the wall time per request; ``--instructions`` runs it twice under callgrind (N and 2N
requests) and prints the difference divided by N (every thread's instructions, the
store threads' too; the database server's are in its own process and not counted)::

    python benchmarks/asgi_inprocess.py asgi-sk-postgresql /read
    python benchmarks/asgi_inprocess.py asgi-sk-postgresql-asyncpg /write --concurrency 8
    python benchmarks/asgi_inprocess.py asgi-sk-postgresql-asyncpg /read --instructions
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
import time
from typing import Any

from common import BenchSettings, instructions_per_call

ROUTES = ("/ping", "/read", "/write")


async def requests(variant: str, route: str, calls: int, concurrency: int) -> float:
    """Seconds per request, after a warm-up, for ``calls`` requests."""
    from asgi_app import create_app

    with tempfile.TemporaryDirectory(prefix="sk-asgi-inprocess-") as tmp:
        settings = BenchSettings(key_prefix=f"bench-asgi-{secrets.token_hex(4)}:",
                                 data_dir=tmp, counter_dir=tmp, memcached_port=0)
        app = create_app(variant, settings)
        cookie = (await call(app, "/login", None))[1]
        for _ in range(50):  # warm pools, statement caches, lazily built objects
            await call(app, route, cookie)
        started = time.perf_counter()
        per_task, extra = divmod(calls, concurrency)

        async def client(n: int) -> None:
            for _ in range(n):
                status, _ = await call(app, route, cookie)
                assert status == 200, status

        await asyncio.gather(*(client(per_task + (i < extra)) for i in range(concurrency)))
        return (time.perf_counter() - started) / calls


async def call(app: Any, path: str, cookie: bytes | None) -> tuple[int, bytes | None]:
    """One GET through the app: its status and the session cookie it set (or was sent)."""
    headers = [(b"host", b"bench")] + ([(b"cookie", cookie)] if cookie else [])
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("bench", 80)}
    status = 0
    sent = cookie

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, sent
        if message["type"] == "http.response.start":
            status = message["status"]
            for name, value in message.get("headers", []):
                if name == b"set-cookie":
                    sent = value.split(b";", 1)[0]

    await app(scope, receive, send)
    return status, sent


def instructions(variant: str, route: str, calls: int, concurrency: int) -> float:
    """Instructions per request: callgrind totals of 2N and N requests, differenced."""
    return instructions_per_call("asgi_inprocess.py",
                                 [variant, route, "--concurrency", str(concurrency)], calls)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant")
    parser.add_argument("route", choices=ROUTES)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--instructions", action="store_true",
                        help="instructions per request under callgrind (keep --calls >= 200)")
    options = parser.parse_args(argv)
    if options.instructions:
        count = instructions(options.variant, options.route, options.calls,
                             options.concurrency)
        print(f"{options.variant} {options.route}: {count:,.0f} instructions/request")
        return 0
    seconds = asyncio.run(requests(options.variant, options.route, options.calls,
                                   options.concurrency))
    print(f"{options.variant} {options.route} x{options.concurrency}: "
          f"{seconds * 1e6:,.0f} us/request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
