"""Medians, ratios, the Markdown report and the PNG chart."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import ROUTES, STORE_OF_VARIANT, VARIANTS, is_asgi_variant

STORE_LABELS = {
    "redis": "Redis commands (INFO commandstats)",
    "redis-cluster": "Redis commands (INFO commandstats, summed over the cluster's nodes)",
    "memcached": "memcached commands (stats)",
    "sql": "SQL statements (driver-side counter)",
    "dynamodb": "DynamoDB requests (client-side counter, per HTTP request sent)",
}
NO_STORE_NOTE = {
    "plain": "no session",
    "flask-cookie": "cookie only",
    "sk-cookie": "cookie only",
    "sk-cookie-permanent": "cookie only",
    "sk-cookie-throttled": "cookie only",
    "fs-filesystem": "files (not counted)",
    "raw-filesystem": "files (not counted)",
    "sk-filesystem": "files (not counted)",
    "sk-cachelib-files": "files (not counted)",
    "asgi-plain": "no session",
    "asgi-starlette-cookie": "cookie only",
    "asgi-starsessions-cookie": "cookie only",
    "asgi-sk-cookie": "cookie only",
}


@dataclass(frozen=True)
class Measurement:
    """One wrk run: a variant's route in one repetition, with store counter deltas."""

    variant: str
    route: str
    rep: int
    requests: int
    seconds: float
    requests_per_s: float
    non_2xx: int
    socket_errors: int
    ops: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RouteSummary:
    variant: str
    route: str
    reps: int
    median_rps: float
    ratio_to_plain_ping: float | None
    ops_per_request: dict[str, float]  # this variant's own store only, median over reps
    total_ops_per_request: float | None
    bad_responses: int


def requests_served(measurement: Measurement) -> int:
    """Requests the app counted during the wrk run, falling back to wrk's count.

    The two differ only by the requests in flight when wrk stops (at most one
    per connection); the app's count matches the store ops those requests did.
    """
    return measurement.ops.get("app:requests", 0) or measurement.requests


def store_ops_per_request(measurement: Measurement) -> dict[str, float]:
    """The variant's own store counters divided by the requests served."""
    store = STORE_OF_VARIANT[measurement.variant]
    served = requests_served(measurement)
    if store == "none" or served == 0:
        return {}
    prefix = f"{store}:"
    return {
        key.removeprefix(prefix): value / served
        for key, value in measurement.ops.items()
        if key.startswith(prefix)
    }


def ratio_to_plain(group: list[Measurement], plain_by_rep: dict[int, float]) -> float | None:
    """Median over repetitions of req/s ÷ plain /ping req/s of the same repetition.

    Pairing within a repetition cancels slow drift in machine load between reps.
    """
    ratios = [m.requests_per_s / plain_by_rep[m.rep] for m in group if plain_by_rep.get(m.rep)]
    return statistics.median(ratios) if ratios else None


def summarize_route(group: list[Measurement], plain_by_rep: dict[int, float]) -> RouteSummary:
    first = group[0]
    per_rep = [store_ops_per_request(m) for m in group]
    counters = sorted({key for ops in per_rep for key in ops})
    ops = {key: statistics.median(ops.get(key, 0.0) for ops in per_rep) for key in counters}
    has_store = STORE_OF_VARIANT[first.variant] != "none"
    total = statistics.median(sum(ops.values()) for ops in per_rep) if has_store else None
    return RouteSummary(
        variant=first.variant,
        route=first.route,
        reps=len(group),
        median_rps=statistics.median(m.requests_per_s for m in group),
        ratio_to_plain_ping=ratio_to_plain(group, plain_by_rep),
        ops_per_request=ops,
        total_ops_per_request=total,
        bad_responses=sum(m.non_2xx + m.socket_errors for m in group),
    )


def plain_of(variant: str) -> str:
    """The variant whose /ping is this one's denominator: the same framework, no session."""
    return "asgi-plain" if is_asgi_variant(variant) else "plain"


def summarize(measurements: list[Measurement]) -> list[RouteSummary]:
    groups: dict[tuple[str, str], list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.variant, m.route), []).append(m)
    plains = {plain: {m.rep: m.requests_per_s for m in groups.get((plain, "/ping"), [])}
              for plain in ("plain", "asgi-plain")}
    ordered = sorted(groups, key=lambda key: (VARIANTS.index(key[0]), ROUTES.index(key[1])))
    return [summarize_route(groups[key], plains[plain_of(key[0])]) for key in ordered]


#: the ASGI targets: (what, variant and route, the other side, the least ratio)
ASGI_TARGETS = (
    ("/ping with a session cookie ≥ 0.95 x plain Starlette (Redis, preloaded)",
     ("asgi-sk-redis", "/ping"), ("asgi-plain", "/ping"), 0.95),
    ("/ping with a session cookie ≥ 0.95 x plain Starlette (Redis, preload=False)",
     ("asgi-sk-redis-on-demand", "/ping"), ("asgi-plain", "/ping"), 0.95),
    ("cookie /ping ≥ 0.95 x plain Starlette",
     ("asgi-sk-cookie", "/ping"), ("asgi-plain", "/ping"), 0.95),
    ("Redis /read ≥ 0.95 x raw redis.asyncio /read",
     ("asgi-sk-redis", "/read"), ("asgi-raw-redis", "/read"), 0.95),
    ("cookie /read ≥ Starlette's SessionMiddleware",
     ("asgi-sk-cookie", "/read"), ("asgi-starlette-cookie", "/read"), 1.0),
    *((f"Redis {route} ahead of starsessions' Redis store",
       ("asgi-sk-redis", route), ("asgi-starsessions-redis", route), 1.0)
      for route in ROUTES),
)


#: each store's floor: the raw driver making the same round trips from a plain view
FLOORS = (
    ("Redis", "sk-redis", "raw-redis"),
    ("memcached", "sk-memcached", "raw-memcached-cas"),
    ("PostgreSQL", "sk-postgresql", "raw-postgresql"),
    ("MariaDB", "sk-mariadb", "raw-mariadb"),
    ("SQLite", "sk-sqlite", "raw-sqlite"),
    ("files", "sk-filesystem", "raw-filesystem"),
    ("DynamoDB", "sk-dynamodb", "raw-dynamodb"),
)
#: the Flask targets (the performance issue), as the ASGI ones
FLASK_TARGETS = (
    *((f"{store} {route} ≥ 0.95 x its raw floor ({raw})", (ours, route), (raw, route), 0.95)
      for store, ours, raw in FLOORS for route in ("/read", "/write")),
    *((f"SQLAlchemy on SQLite {route} within 10 % of the embedded sqlite store",
       ("sk-sqlalchemy-sqlite", route), ("sk-sqlite", route), 0.90) for route in ROUTES),
    ("cookie /read ≥ 1.10 x Flask's cookie session",
     ("sk-cookie", "/read"), ("flask-cookie", "/read"), 1.10),
    ("cookie /ping ≥ 0.95 x plain Flask", ("sk-cookie", "/ping"), ("plain", "/ping"), 0.95),
)

#: why a floor is not reached, from profiles (benchmarks/inprocess.py --instructions and
#: --profile; the instruction counts do not move with the machine's load)
FLOOR_REASONS = """\
Where a store stays under its floor, the profiles say why. The table "each store against
its raw floor" under *Instructions per request* gives this run's counts (the whole Flask
app in process; the store servers' own work is not counted); the figures below were
measured with `python benchmarks/inprocess.py VARIANT ROUTE --instructions` and, for the
servers' side, `python benchmarks/server_time.py VARIANT ROUTE` (each statement's time
in the server's own log) on 2026-12-04 and, for the instruction counts, 2026-12-05:

- The session layer itself: `sk-memory` executes 423k instructions on `/read` and
  498k on `/write`, 91k and 166k above plain Flask's `/ping` (332k in the same
  measurement); a raw view reads no
  cookie, checks no id, hashes none, decodes no values, keeps no expiry and sends no
  Set-Cookie, and sessionkeeper does each of these once per request that uses the
  session (a save alone: about 75k, of which the Set-Cookie header is 20k). Against a
  cheap round trip (Redis, memcached, files) this is most of the gap.
- Redis: one `HGETALL` and one `EVALSHA` (the delta applied in Redis only if the session
  still exists, so a logout is never undone) against `GET` + `SET`: the same two round
  trips. In the app, `sk-redis` is 487k and 636k instructions against
  raw's 462k and 610k; in the server, the script's run costs
  23 us per `/write`, against 3 us for `GET` + `SET`: Lua's own
  start-up, not the commands it runs. On two shared cores that is about 2 % of a write.
- memcached: the same `gets` + `cas` as the floor; the store's own part is as lean as the
  raw client's (a read: 95k above `sk-memory` against 119k above plain for the raw
  `get`), so the difference is the session layer.
- PostgreSQL: the read is packed into one `bytea` (psycopg2 pays about 5k instructions a
  result column; times, flag and version in PostgreSQL's binary send format), decoded
  strictly (a damaged row is a fresh session, not a 500), and both statements run
  prepared, once per connection (the server parses and plans the packed read in about
  20 us otherwise). The versioned `UPDATE` sends 7 parameters against 2 (the store
  writes them into the statement itself rather than have psycopg2 adapt each one:
  53k instructions less per write), and the store checks each read for statement
  listeners (`sk-postgresql` 538k / 750k instructions vs 450k / 501k raw; server time
  per request 31 us / 237 us vs 40 us / 226 us).
- MariaDB: the session row has seven columns (data, three times, permanent, user, version:
  what expiry, idle and absolute timeouts, the per-user index and the no-lost-update check
  need) against the raw variant's one; pymysql parses each result column's description in
  Python, about 50k instructions a column, so the store has the server pack them into one
  column (times in shortest round-trip digits, checked once at start-up), which costs the
  server about 30 us a read. Writes are one versioned `UPDATE` (the compare-and-set that
  keeps concurrent saves from losing each other's keys) where the raw variant overwrites
  its row unconditionally; no extra round trip. The store writes that statement's seven
  parameters into it itself, which costs 30k instructions less per write than pymysql's
  own escaping. `sk-mariadb` runs 675k / 928k instructions against 574k / 670k raw, and
  the server spends 70 us / 318 us per request against 37 us / 235 us. The raw `/write`
  used to save the value it had read: InnoDB left the unchanged row alone (no redo log,
  no flush to disk), a floor no session can reach (0.51 in the run of 2026-12-04
  16:05); it now saves a changed value, as a session's save does.
- SQLite (in process, so its own work is counted): the save's `UPDATE` maintains the
  expiry index (about 12k instructions) and writes the row and its WAL frame; a save
  leaves `user_id` out of its `SET` when the user stays (SQLite rewrites an index whose
  column is set, even to its value).
- files: a write opens the session's file and takes its `flock` (concurrent requests of
  one session never lose each other's changes), checks the path still names the locked
  file, reads it again under the lock, writes a temporary file, sets its mtime to the
  expiry (what the sweep reads) and renames it over: 15 system calls on bare descriptors
  against the raw variant's 17 through file objects. The wall clock of both is mostly
  the kernel: replacing a file frees the old one, which on ext4 waits for the writeback
  the previous rename started (1-2 ms per write on this VM, varying with the disk's load).
- DynamoDB: the same round trips as the floor (a consistent `GetItem` per read, and
  `GetItem` + one conditional `UpdateItem` per write; the condition, the item's expiry
  compared with now, is what refuses a write after a logout, at no extra round trip).
  The item has eight attributes (ten with a user) against the raw variant's two (values, three
  times, permanent, version, TTL; what expiry, the TTL, the per-user index and
  the no-lost-update rewrite need), and the update writes six: botocore validates,
  serializes and parses each one in Python (`sk-dynamodb` `/write` 7,822k instructions
  vs 6,903k raw, `/read` 3,681k vs 3,629k), and dynalite, on the same two cores, spends
  about twice the raw update's CPU evaluating the longer expressions.
"""


def shown_ratio(ratio: float, least: float) -> str:
    """``ratio`` with two decimals, or as many more as it takes for the figure shown to
    fall on the same side of ``least`` as the ratio (0.9496 against 0.95 reads 0.9496,
    not a "0.95" that is not met)."""
    for digits in range(2, 10):
        shown = f"{ratio:.{digits}f}"
        if (float(shown) >= least) == (ratio >= least):
            return shown
    return shown


def target_lines(title: str, targets: tuple[Any, ...], summaries: list[RouteSummary],
                 notes: str = "") -> list[str]:
    """Each target met or not, as ratios of medians in this run."""
    by_key = {(s.variant, s.route): s for s in summaries}
    lines = []
    for what, ours, theirs, least in targets:
        a, b = by_key.get(ours), by_key.get(theirs)
        if a is None or b is None or not b.median_rps:
            continue
        ratio = a.median_rps / b.median_rps
        verdict = "met" if ratio >= least else "**not met**"
        lines.append(f"- {what}: {shown_ratio(ratio, least)} ({a.median_rps:,.0f} vs "
                     f"{b.median_rps:,.0f} req/s): {verdict}")
    if not lines:
        return []
    return [f"## {title}", "", *lines, "", *([notes] if notes else [])]


#: why /ping with a server-side session's cookie cannot reach plain Starlette
ASGI_NOTES = """\
`request.session` is a plain attribute in Starlette, read without `await`, so a
server-side session must be in memory before the endpoint runs: a request that carries
a session cookie pays one store read (`asgi-sk-redis` `/ping`: one `HGETALL`), the
loading rule the ASGI issue sets, whether or not the endpoint then reads the session.
A cookie session is read on first use instead (`asgi-sk-cookie` `/ping`: nothing).
With `SessionMiddleware(preload=False)` a stored session is read only where the app
loads it (`await load_session(request)`, `SessionDep`, or `SessionAutoloadMiddleware`
for the paths it lists; `asgi-sk-redis-on-demand` autoloads `/login`, `/read`, `/write`):
its `/ping` reads nothing.

Wall-clock ratios here move between runs by 0.1 to 0.3 on a shared 2-core machine (the
cookie paths, unchanged, read 1.01 and 1.02 one run and 0.71 and 0.67 the next): judge a
change by instructions per request, which do not move with the machine
(`python benchmarks/asgi_inprocess.py VARIANT ROUTE --instructions`; 2026-12-04:
`asgi-sk-redis` `/read` 422k against `asgi-raw-redis` 418k, `asgi-sk-cookie` `/read`
247k against `asgi-starlette-cookie` 254k).
"""


def asgi_target_lines(summaries: list[RouteSummary]) -> list[str]:
    return target_lines("ASGI targets", ASGI_TARGETS, summaries, ASGI_NOTES)


#: the drop-in's configuration work, measured against a build without it
COMPATIBILITY_COST = """\
The compatibility work of the drop-in (Flask's session settings read from `app.config`
on every request, as Flask reads them: `flask/live_config.py`) costs at most 0.9 % of a
request: instructions per request with it and in a copy of `src/` whose
`LiveConfig.refresh` returns the settings resolved first (measured 2026-12-04,
`python benchmarks/inprocess.py VARIANT ROUTE --instructions --calls 1000 [--src COPY]`):
`sk-memory` 326k/325k, 465k/461k, 598k/595k; `sk-redis` 326k/327k, 518k/515k, 737k/734k;
`sk-cookie` 400k/396k, 468k/470k, 811k/814k (`/ping`, `/read`, `/write`; differences
of 3k either way are the count's own noise between runs). Target: at most 2 % (met).
"""


def flask_target_lines(summaries: list[RouteSummary]) -> list[str]:
    return target_lines("Flask targets: each store against its floor", FLASK_TARGETS,
                        summaries, FLOOR_REASONS + "\n" + COMPATIBILITY_COST)


def background_redis_ops_per_s(measurements: list[Measurement]) -> float | None:
    """Redis commands seen while a non-Redis variant ran: other clients' noise."""
    windows = [m for m in measurements if STORE_OF_VARIANT[m.variant] != "redis"]
    seconds = sum(m.seconds for m in windows)
    if not seconds:
        return None
    calls = sum(v for m in windows for k, v in m.ops.items() if k.startswith("redis:"))
    return calls / seconds


# --- Markdown ----------------------------------------------------------------------


BREAKDOWN_MIN = 0.05  # smaller per-command rates are lumped together (often other clients)


def format_ops(summary: RouteSummary) -> tuple[str, str]:
    """(total, breakdown) cells for the store-ops columns."""
    if summary.total_ops_per_request is None:
        return "—", NO_STORE_NOTE.get(summary.variant, "")
    parts = sorted(summary.ops_per_request.items(), key=lambda item: -item[1])
    shown = [f"{name} {value:.2f}" for name, value in parts if value >= BREAKDOWN_MIN]
    rest = sum(value for _, value in parts if value < BREAKDOWN_MIN)
    if rest >= 0.005:
        shown.append(f"others {rest:.2f}")
    return f"{summary.total_ops_per_request:.2f}", ", ".join(shown) or "none"


def results_table(summaries: list[RouteSummary]) -> list[str]:
    lines = [
        "| Variant | Route | Median req/s | x plain /ping¹ | Store ops/request | Breakdown |",
        "|---|---|---:|---:|---:|---|",
    ]
    for s in summaries:
        ratio = f"{s.ratio_to_plain_ping:.2f}" if s.ratio_to_plain_ping is not None else "—"
        total, breakdown = format_ops(s)
        flag = f" ⚠ {s.bad_responses} bad responses" if s.bad_responses else ""
        lines.append(
            f"| {s.variant} | `{s.route}` | {s.median_rps:,.0f} | {ratio} | {total} "
            f"| {breakdown}{flag} |"
        )
    if any(is_asgi_variant(s.variant) for s in summaries):
        lines += ["", "¹ Flask variants: ÷ plain Flask's `/ping` (`plain`); `asgi-*` variants: "
                      "÷ plain Starlette's `/ping` (`asgi-plain`), same repetition."]
    return lines


def instructions_section(overhead: dict[str, Any] | None) -> list[str]:
    text = (overhead or {}).get("instructions")
    if not text:
        return []
    return ["## Instructions per request (`benchmarks/instructions.py`)", "",
            *text.strip().splitlines(), ""]


def overhead_section(overhead: dict[str, Any] | None) -> list[str]:
    if not overhead or not ("error" in overhead or "variants" in overhead):
        return []
    if "error" in overhead:
        return ["## Session-layer overhead (in-process)", "", f"Not run: {overhead['error']}", ""]
    lines = [
        "## Session-layer overhead (in-process, `benchmarks/overhead.py`)",
        "",
        "Direct WSGI calls of `/read` (no HTTP, no gunicorn): "
        f"{overhead['rounds']} interleaved rounds x {overhead['calls']} calls; each time "
        "is the best round, as with `timeit` (other processes only add time). "
        "Session overhead = `/read` time minus the same app's `/read` with no session "
        "layer (`plain`), expressed as a multiple of one raw redis-py `GET` on the "
        "same client connection (the floor: a server-side session cannot load with less). "
        "`raw-redis` makes that GET from its view, with no session layer: its row is what "
        "one redis-py round trip costs inside a request, where caches are colder than in "
        "a loop of GETs. While timing, this process and the Redis server share one CPU: "
        "a round trip to an idle core also pays for waking it, which on a virtual machine "
        "varies several-fold between runs.",
        "",
        f"- pinned: {overhead.get('pinned') or 'no'}",
        f"- raw redis-py GET: **{overhead['raw_get_us']:.1f} µs**",
        f"- plain `/read` (framework only): {overhead['plain_read_us']:.1f} µs",
        "",
        "| Variant | `/read` µs | Session overhead µs | Overhead x raw GET |",
        "|---|---:|---:|---:|",
    ]
    for variant, row in overhead["variants"].items():
        if "unavailable" in row:
            lines.append(f"| {variant} | unavailable: {row['unavailable']} | | |")
            continue
        lines.append(
            f"| {variant} | {row['read_us']:.1f} | {row['overhead_us']:.1f} "
            f"| {row['overhead_x_get']:.2f} |"
        )
    return [*lines, ""]


def render_markdown(
    summaries: list[RouteSummary],
    statuses: dict[str, str],
    meta: dict[str, Any],
    overhead: dict[str, Any] | None,
    background_redis: float | None,
) -> str:
    lines = [
        "# Session benchmarks: sessionkeeper vs Flask-Session vs Flask",
        "",
        "Generated by `benchmarks/run.py` — do not edit by hand.",
        "",
        f"**Command:** `{meta['command']}`",
        "",
    ]
    if meta.get("busy"):
        lines += [
            f"> **Busy machine:** load average {meta['load_start']} at start and "
            f"{meta['load_end']} at end on {meta['machine']['nproc']} cores; other "
            "processes competed for CPU, so compare ratios within this run only.",
            "",
        ]
    if meta.get("quick"):
        lines += [
            "> **Quick smoke run** (1 repetition, short durations): numbers are "
            "noisy; use the default run for published figures.",
            "",
        ]
    lines += ["![Throughput relative to plain Flask /ping](benchmarks.png)", ""]
    lines += ["## Results", "", *results_table(summaries), ""]
    lines += flask_target_lines(summaries)
    lines += asgi_target_lines(summaries)
    lines += variant_status_lines(statuses)
    lines += method_lines(meta, background_redis)
    lines += overhead_section(overhead)
    lines += instructions_section(overhead)
    lines += machine_lines(meta)
    return "\n".join(lines).rstrip() + "\n"


def variant_status_lines(statuses: dict[str, str]) -> list[str]:
    missing = {v: s for v, s in statuses.items() if s != "ok"}
    if not missing:
        return []
    lines = ["Variants not measured:", ""]
    lines += [f"- `{variant}`: {status}" for variant, status in missing.items()]
    return [*lines, ""]


METHOD_NOTES = """
- ASGI variants (`asgi-*`, `benchmarks/asgi_app.py`): the same routes on a Starlette
  app, served by uvicorn ({workers} worker processes, its default HTTP and event-loop
  implementations) under the same wrk load. `asgi-starsessions-*` use starsessions'
  `SessionMiddleware` and `SessionAutoloadMiddleware` (rolling sessions, as
  sessionkeeper's refresh); `asgi-raw-redis` makes one `redis.asyncio` `GET` (`/read`)
  or a `GET` and a `SET` (`/write`) from its handler, with no session layer.
  sessionkeeper gets 40 store threads, as many as anyio's default pool.
- Same Flask app (`benchmarks/app.py`) for every variant, served by gunicorn
  ({workers} sync workers) on 127.0.0.1 and loaded by
  `wrk -t{threads} -c{connections} -d{duration_s}s` from a separate process.
  gunicorn's sync worker closes the connection after each response, so wrk
  reconnects per request for every variant alike.
- Routes: `/ping` never touches the session, `/read` reads two keys, `/write`
  increments a counter. Each server start does `/login` once per simulated client
  ({sessions} sessions) and checks that `/read` returns the two keys with each
  cookie. wrk (`benchmarks/sessions.lua`) rotates the `Cookie` header over those
  sessions, each wrk thread over its own share, so every measured request carries a
  valid session cookie and concurrent requests mostly belong to different sessions,
  as with real users (`plain` has no session and is measured on `/ping` only).
- {reps} repetition(s), variant order shuffled per repetition (seed {seed}),
  {warmup_s} s warm-up of each route per server start. Req/s are medians over repetitions; the
  ratio is the median over repetitions of req/s ÷ `plain` `/ping` req/s of the same
  repetition.
- `raw-*` rows are ceilings: the same app with no session layer, doing only the
  store round trips a session cannot avoid (`/read`: one Redis `GET`, one memcached
  `get` on a `no_delay` client, or one primary-key `SELECT` on an autocommit psycopg2
  connection per worker, or one strongly consistent `GetItem`; `/write`: that read
  plus one `SET`/`set`/`UPDATE`/`UpdateItem`). A ceiling's ratio is the most any
  variant on that store can reach on this machine.
- Cookie variants: `flask-cookie` and `sk-cookie` keep Flask's default
  browser-session cookies, which a request that only reads never re-sends.
  `sk-cookie-permanent` makes sessions permanent and re-signs the cookie on every
  request that carries one, as Flask does for permanent sessions (the cookie store's
  default `SESSION_REFRESH_FRACTION = 0`); `sk-cookie-throttled` does so at most once
  per tenth of the lifetime (`SESSION_REFRESH_FRACTION = 0.1`).
- cachelib variants: `fs-cachelib` (Flask-Session's `cachelib` type) and
  `sk-cachelib` use one cachelib `RedisCache` each on the same Redis DB (its
  commands counted like the Redis variants'); `sk-cachelib-files` uses a
  `FileSystemCache(threshold=0)`, beside `fs-filesystem`'s `FileSystemCache`.
- DynamoDB variants run against a private dynalite (a DynamoDB-compatible server
  on Node.js, tables in memory) started for the run: these rows measure the
  client and session layer against a local server, not AWS latency.
  `sk-dynamodb` and `raw-dynamodb` get the same boto3 client (dummy credentials,
  at most one retry); `fs-dynamodb` a boto3 resource with the same settings, as
  Flask-Session 0.8 requires.
- Flask-Session 0.8 and sessionkeeper run with default options (Flask-Session:
  permanent sessions, stored again on every request). Flask-Session's memcached
  client is pymemcache with its defaults (no TCP_NODELAY, `noreply` sets), as
  shipped; sessionkeeper gets a `host:port` list and builds its own client. With
  those pymemcache defaults the server never answers a set, so the next request's
  small GET waits behind Nagle's algorithm for the delayed ACK (~40 ms on Linux):
  that, not memcached, is what limits `fs-memcached`.
- Store ops/request = server-side counter delta over one wrk run divided by the
  requests the app served in that window (counted in the app; this differs from
  wrk's count only by the requests in flight when wrk stops, at most one per
  connection, which matters only for the slowest variants).
  Redis: `INFO commandstats` of the {redis} (server-wide; the runner's own INFO
  excluded; keys live under a random per-run prefix and are deleted afterwards);
  it counts commands, so pipelined commands count one each, and so do the commands a
  Lua script runs inside the server: sessionkeeper's `/write` is two round trips
  (`HGETALL`, then one `EVALSHA` whose script runs `EXISTS`, `HSET`, `PEXPIREAT`).
  memcached: a private `memcached` started for the run; `stats` deltas of cmd_get,
  cmd_set, cmd_touch, delete_hits+delete_misses and cas_* (memcached's cmd_set also
  counts cas commands; those are subtracted, so a cas is reported once, as cas).
  SQL: each worker counts the statements its driver actually executes (SQLite: the
  sqlite3 trace callback, including the BEGIN/COMMIT the sqlite3 module issues;
  PostgreSQL: a psycopg2 connection/cursor subclass counting executes plus the
  implicit BEGIN and real COMMIT/ROLLBACK round trips; MariaDB: a pymysql
  connection subclass counting every query it sends plus every BEGIN/COMMIT/ROLLBACK,
  which pymysql sends on each call, autocommit or not) into a memory-mapped file
  the runner sums. `pg_stat_statements` is not loaded on this server and
  `pg_stat_database` is flushed lazily, so neither can be cut per wrk run.
  DynamoDB: dynalite keeps no statistics, so each worker counts the HTTP requests
  its botocore client sends (botocore's `before-send` event, once per attempt, so
  a retry counts as another round trip), by operation, into the same files.
  Filesystem variants do no network I/O and are not counted.
"""


def method_lines(meta: dict[str, Any], background_redis: float | None) -> list[str]:
    lines = ["## Method", "", *METHOD_NOTES.format(**meta).strip().splitlines()]
    if meta.get("redis_cluster"):
        lines += [
            f"- `sk-redis-cluster`: sessionkeeper on a `redis.cluster.RedisCluster` client "
            f"(built by each worker) for {meta['redis_cluster']}, started for the run from "
            "`redis-server` (`cluster-enabled yes`, no persistence) and stopped afterwards. "
            "Its ops are `INFO commandstats` deltas summed over the nodes (the runner's own "
            "INFO excluded); its keys are deleted by prefix on every node.",
        ]
    if background_redis is not None:
        lines.append(
            "- Background Redis traffic from other clients, measured while non-Redis "
            f"variants ran: {background_redis:.1f} commands/s. Divided by a Redis "
            "variant's req/s, that bounds how much of its ops/request may be other "
            "clients' traffic (0 means the Redis columns are clean; `--redis private` "
            "isolates them)."
        )
    return [*lines, ""]


def machine_lines(meta: dict[str, Any]) -> list[str]:
    lines = ["## Machine", ""]
    lines += [f"- {key}: {value}" for key, value in meta["machine"].items()]
    lines.append(f"- run started: {meta['started']}, wall time {meta['wall_s']:.0f} s")
    lines.append(
        f"- load average (1/5/15 min): {meta['load_start']} at start, {meta['load_end']} at end"
    )
    return [*lines, ""]


# --- chart -------------------------------------------------------------------------


def render_chart(summaries: list[RouteSummary], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = [v for v in VARIANTS if any(s.variant == v for s in summaries)]
    by_key = {(s.variant, s.route): s for s in summaries}
    width = 0.27
    fig, ax = plt.subplots(figsize=(max(8.0, 1.1 * len(variants) + 2), 5.0))
    for offset, route in enumerate(ROUTES):
        xs, heights = [], []
        for index, variant in enumerate(variants):
            summary = by_key.get((variant, route))
            if summary is not None and summary.ratio_to_plain_ping is not None:
                xs.append(index + (offset - 1) * width)
                heights.append(summary.ratio_to_plain_ping)
        bars = ax.bar(xs, heights, width, label=route)
        ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=1)
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xticks(range(len(variants)), variants, rotation=30, ha="right")
    tallest = max((s.ratio_to_plain_ping or 0.0 for s in summaries), default=1.0)
    ax.set_ylim(0, max(1.0, tallest) * 1.2)  # head room for the legend row
    ax.set_ylabel("req/s ÷ plain /ping (higher is better)")
    ax.set_title("Throughput relative to plain Flask /ping (median, same run)")
    ax.legend(title="route", loc="upper right", ncols=len(ROUTES))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
