"""In-process cost of the session layer per /read request, in units of one raw Redis GET.

Calls the WSGI app directly (no HTTP, no gunicorn) for fs-redis and sk-redis,
plus `plain` (same app, no session layer) as the framework floor, and times
one raw redis-py GET on the same client connection as the store floor. raw-redis
(the same app doing that GET in its view, no session layer) shows what one round trip
costs inside a request, where caches are colder than in a loop of GETs.
Measurements are interleaved in shuffled order and the best per-call time
over the rounds is reported.

This process and the Redis server are pinned to one CPU while timing (their affinity is
restored afterwards). A round trip to a server on another, idle core includes waking
that core, which on a virtual machine costs tens of microseconds and varies several-fold
from run to run; on one core a round trip is two context switches, so the numbers
measure the work each variant does rather than the machine's idle states.

    python benchmarks/overhead.py [--rounds 9] [--calls 1000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from common import READ_BODY, REDIS_PORT, SRC_DIR, BenchSettings, last_line

# raw-redis: the same GET made from a view, i.e. what one round trip costs inside a request
DEFAULT_VARIANTS = ("raw-redis", "fs-redis", "sk-redis")
Call = Callable[[], Any]


def login_cookie(app: Any) -> str:
    response = app.test_client().get("/login")
    pairs = [header.split(";", 1)[0] for header in response.headers.getlist("Set-Cookie")]
    if response.status_code != 200 or not pairs:
        raise RuntimeError(f"/login gave {response.status_code}")
    return "; ".join(pairs)


class WsgiGet:
    """One full WSGI GET request per call (no HTTP); remembers the last status line."""

    def __init__(self, app: Any, path: str, cookie: str) -> None:
        from werkzeug.test import EnvironBuilder

        headers = [("Cookie", cookie)] if cookie else []
        self._app = app
        self._environ = EnvironBuilder(path=path, headers=headers).get_environ()
        self.last_status = ""

    def _start_response(self, status: str, headers: Any, exc_info: Any = None) -> None:
        self.last_status = status

    def __call__(self) -> bytes:
        body_iter: Iterable[bytes] = self._app(dict(self._environ), self._start_response)
        try:  # dict() above: WSGI apps may mutate their environ
            return b"".join(body_iter)
        finally:
            close = getattr(body_iter, "close", None)
            if close is not None:
                close()


def time_per_call_us(call: Call, calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        call()
    return (time.perf_counter_ns() - start) / calls / 1000.0


def interleaved_rounds(
    calls_by_name: dict[str, Call], rounds: int, calls: int
) -> list[dict[str, float]]:
    """µs/call per function for each round; order shuffled per round so drift hits all."""
    rng = random.Random(0)
    for call in calls_by_name.values():  # warm caches, pools and connections
        time_per_call_us(call, max(10, calls // 10))
    results = []
    for _ in range(rounds):
        names = list(calls_by_name)
        rng.shuffle(names)
        results.append({name: time_per_call_us(calls_by_name[name], calls) for name in names})
    return results


def build_read_call(variant: str, settings: BenchSettings) -> tuple[Call, Any]:
    """(call doing /read with a valid session cookie, the app) for one variant."""
    from app import create_app

    app = create_app(variant, settings)
    cookie = "" if variant == "plain" else login_cookie(app)
    call = WsgiGet(app, "/read", cookie)
    body = call().decode()
    status = call.last_status
    expected = "None None" if variant == "plain" else READ_BODY  # plain has no session
    if not status.startswith("200") or body != expected:
        raise RuntimeError(f"/read returned {status} {body[:80]!r}, expected {expected!r}")
    return call, app


def raw_get_call(client: Any, key: str) -> Call:
    client.set(key, b"x" * 96)  # about the size of a small msgpack session

    def call() -> Any:
        return client.get(key)

    return call


def measure(variants: list[str], rounds: int, calls: int, redis_port: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sk-overhead-") as tmp:
        settings = BenchSettings(
            key_prefix=f"bench-overhead-{secrets.token_hex(4)}:",
            data_dir=tmp,
            counter_dir=tmp,
            memcached_port=0,  # no memcached variant here
            redis_port=redis_port,
        )
        return measure_with(settings, variants, rounds, calls)


def measure_with(
    settings: BenchSettings, variants: list[str], rounds: int, calls: int
) -> dict[str, Any]:
    from app import redis_client
    from stores import delete_redis_prefix

    plain_call, _ = build_read_call("plain", settings)
    calls_by_name: dict[str, Call] = {"plain": plain_call}
    unavailable: dict[str, str] = {}
    floor_client: Any = None
    try:
        for variant in variants:
            try:
                call, app = build_read_call(variant, settings)
            except Exception as exc:  # an sk-* variant may not import yet: report, go on
                unavailable[variant] = last_line(f"{type(exc).__name__}: {exc}")
                continue
            calls_by_name[variant] = call
            # The floor GET uses the very client (and pooled connection) a variant uses.
            floor_client = floor_client or app.config.get("SESSION_REDIS")
        floor_client = floor_client or redis_client(settings)
        calls_by_name["raw-get"] = raw_get_call(floor_client, f"{settings.key_prefix}floor")
        with on_one_cpu(floor_client) as pinned:
            samples = interleaved_rounds(calls_by_name, rounds, calls)
    finally:
        delete_redis_prefix(floor_client or redis_client(settings), settings.key_prefix)
    return overhead_result(variants, samples, unavailable, calls, pinned)


@contextmanager
def on_one_cpu(client: Any) -> Iterator[str]:
    """Pin this process and the Redis server behind ``client`` to one CPU; yields what
    was pinned (for the report). A server this user may not pin is left alone."""
    cpu = min(os.sched_getaffinity(0))
    server_pid = int(client.info("server")["process_id"])
    saved: dict[int, set[int]] = {}
    try:
        for pid in (0, server_pid):
            try:
                saved[pid] = os.sched_getaffinity(pid)
                os.sched_setaffinity(pid, {cpu})
            except OSError:  # another user's server, or a server on another host
                saved.pop(pid, None)
        yield (f"this process and redis-server (pid {server_pid}) on CPU {cpu}"
               if server_pid in saved else f"this process on CPU {cpu}; redis-server not pinned")
    finally:
        for pid, cpus in saved.items():
            os.sched_setaffinity(pid, cpus)


def overhead_result(
    variants: list[str],
    samples: list[dict[str, float]],
    unavailable: dict[str, str],
    calls: int,
    pinned: str = "",
) -> dict[str, Any]:
    """Best round per function (as timeit does): on a shared machine other processes
    only ever add time, so the fastest round is the least disturbed estimate."""

    def best(name: str) -> float:
        return min(sample[name] for sample in samples)

    raw_get, plain = best("raw-get"), best("plain")
    rows: dict[str, dict[str, Any]] = {}
    for variant in variants:
        if variant in unavailable:
            rows[variant] = {"unavailable": unavailable[variant]}
            continue
        overhead = best(variant) - plain
        rows[variant] = {
            "read_us": best(variant),
            "overhead_us": overhead,
            "overhead_x_get": overhead / raw_get,
        }
    return {
        "rounds": len(samples),
        "calls": calls,
        "pinned": pinned,
        "raw_get_us": raw_get,
        "plain_read_us": plain,
        "variants": rows,
    }


def print_result(result: dict[str, Any]) -> None:
    if result.get("pinned"):
        print(f"pinned: {result['pinned']}")
    print(
        f"raw redis-py GET: {result['raw_get_us']:.1f} us; "
        f"plain /read: {result['plain_read_us']:.1f} us"
    )
    for variant, row in result["variants"].items():
        if "unavailable" in row:
            print(f"{variant:>10}: unavailable: {row['unavailable']}")
        else:
            print(
                f"{variant:>10}: /read {row['read_us']:.1f} us, session overhead "
                f"{row['overhead_us']:.1f} us = {row['overhead_x_get']:.2f} x raw GET"
            )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help="comma-separated, from: " + ",".join(DEFAULT_VARIANTS),
    )
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (median)")
    parser.add_argument("--calls", type=int, default=1000, help="calls per timed batch")
    parser.add_argument(
        "--redis-port", type=int, default=REDIS_PORT, help="Redis on 127.0.0.1 to use (DB 9)"
    )
    parser.add_argument("--json", dest="json_path", help="also write the result as JSON here")
    args = parser.parse_args(argv)
    if not (1 <= args.rounds <= 100 and 10 <= args.calls <= 100_000):
        parser.error("--rounds must be 1..100 and --calls 10..100000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(SRC_DIR))  # same precedence as the gunicorn workers get
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(DEFAULT_VARIANTS))
    if unknown:
        print(f"unknown variants {unknown}; choose from {DEFAULT_VARIANTS}", file=sys.stderr)
        return 2
    result = measure(variants, args.rounds, args.calls, args.redis_port)
    print_result(result)
    if args.json_path:
        with open(args.json_path, "w") as handle:
            json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
