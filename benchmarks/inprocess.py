"""Load-independent cost of one request: a WSGI loop for call profiles and instruction counts.

Wall-clock numbers on a shared 2-core machine move with other processes' load;
the number of instructions a request executes does not. This runs N direct WSGI
calls of one route for one variant (the same app as the HTTP benchmark, with a
logged-in session cookie), so that

    python benchmarks/inprocess.py sk-redis /read --profile       # cProfile, top functions
    python benchmarks/inprocess.py sk-redis /read --instructions  # valgrind instruction count
    python benchmarks/inprocess.py sk-redis /read --instructions --src /tmp/old/src  # before

show where a request's time goes. ``--instructions`` runs the loop twice under
``valgrind --tool=callgrind`` (N and 2N calls) and reports the difference divided by N,
so start-up and imports cancel out. The store's own server work (Redis, memcached) is in
another process and is not counted; SQLite, being embedded, is.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import secrets
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

from common import (
    REDIS_PORT,
    SRC_DIR,
    STORE_OF_VARIANT,
    BenchSettings,
    instructions_per_call,
)

#: routes whose first response must be 200 with a live session
ROUTES = ("/ping", "/read", "/write")
ENV_MEMCACHED_PORT = "BENCH_INPROCESS_MEMCACHED_PORT"
ENV_DYNAMODB_PORT = "BENCH_INPROCESS_DYNAMODB_PORT"


@dataclass(frozen=True)
class StorePorts:
    """Running store servers on 127.0.0.1 (0: none) for the variants that need one."""

    memcached: int
    redis: int
    dynamodb: int

    def argv(self) -> list[str]:
        return ["--memcached-port", str(self.memcached), "--redis-port", str(self.redis),
                "--dynamodb-port", str(self.dynamodb)]


def build_call(variant: str, route: str, settings: BenchSettings) -> Any:
    from app import create_app
    from overhead import WsgiGet, login_cookie

    app = create_app(variant, settings)
    cookie = "" if variant == "plain" else login_cookie(app)
    call = WsgiGet(app, route, cookie)
    call()
    if not call.last_status.startswith("200"):
        raise RuntimeError(f"{variant} {route} answered {call.last_status}")
    return call


def run_loop(variant: str, route: str, calls: int, profile: bool, ports: StorePorts) -> None:
    with tempfile.TemporaryDirectory(prefix="sk-inprocess-") as tmp:
        settings = BenchSettings(
            key_prefix=f"bench-inprocess-{secrets.token_hex(4)}:",
            data_dir=tmp, counter_dir=tmp, memcached_port=ports.memcached,
            redis_port=ports.redis, dynamodb_port=ports.dynamodb,
        )
        call = build_call(variant, route, settings)
        for _ in range(50):  # warm pools, caches and lazily built objects
            call()
        # Start-up objects go to the permanent generation (as in a pre-fork server that
        # preloads the app): otherwise one full collection of everything a variant
        # imported, landing in one of the two callgrind runs, swamps the difference.
        gc.collect()
        gc.freeze()
        try:
            if profile:
                profiler = cProfile.Profile()
                profiler.enable()
                for _ in range(calls):
                    call()
                profiler.disable()
                stats = pstats.Stats(profiler)
                stats.sort_stats("tottime").print_stats(25)
                stats.sort_stats("cumulative").print_stats(40)
            else:
                for _ in range(calls):
                    call()
        finally:
            if STORE_OF_VARIANT.get(variant) == "redis":  # sk-/fs-cachelib too
                from app import redis_client
                from stores import delete_redis_prefix

                delete_redis_prefix(redis_client(settings), settings.key_prefix)


def instructions(variant: str, route: str, calls: int, ports: StorePorts, src: str) -> float:
    """Instructions per request: callgrind totals of 2N and N calls, differenced."""
    return instructions_per_call("inprocess.py", [variant, route, *ports.argv(), "--src", src],
                                 calls)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant")
    parser.add_argument("route", choices=ROUTES)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--profile", action="store_true", help="print a cProfile summary")
    parser.add_argument("--instructions", action="store_true",
                        help="instructions per request under callgrind (uses --calls, "
                             "default 2000: keep it >= 200)")
    parser.add_argument("--memcached-port", type=int,
                        default=int(os.environ.get(ENV_MEMCACHED_PORT, "0")),
                        help="a running memcached for sk-/fs-memcached")
    parser.add_argument("--redis-port", type=int, default=REDIS_PORT,
                        help="Redis on 127.0.0.1 for the redis variants (DB 9)")
    parser.add_argument("--dynamodb-port", type=int,
                        default=int(os.environ.get(ENV_DYNAMODB_PORT, "0")),
                        help="a running dynalite on 127.0.0.1 for the dynamodb variants "
                             "(its tables are left in it)")
    parser.add_argument("--src", default=str(SRC_DIR),
                        help="the sessionkeeper source tree to measure (default: this "
                             "checkout's src/); e.g. an older commit's, extracted with "
                             "`git archive <commit> src | tar -x -C DIR`, for before/after")
    args = parser.parse_args(argv)
    sys.path.insert(0, args.src)
    ports = StorePorts(args.memcached_port, args.redis_port, args.dynamodb_port)
    if args.instructions:
        per_call = instructions(args.variant, args.route, args.calls, ports, args.src)
        print(f"{args.variant} {args.route}: {per_call:,.0f} instructions per request")
        return 0
    run_loop(args.variant, args.route, args.calls, args.profile, ports)
    return 0


if __name__ == "__main__":
    sys.exit(main())
