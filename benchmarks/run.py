"""Side-by-side session benchmark: one command, writes docs/benchmarks.md and .png.

    python benchmarks/run.py                 # full run (~17 min on 2 cores)
    python benchmarks/run.py --quick         # ~1 min smoke run
    python benchmarks/run.py --variants plain,fs-redis,sk-redis --reps 5

See benchmarks/README.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from common import (
    ASGI_POSTGRES_TABLE,
    DATABASE_OF_VARIANT,
    MARIADB_HOST,
    MARIADB_PORT,
    MARIADB_TABLE,
    MARIADB_URL,
    POSTGRES_TABLE,
    POSTGRES_URL,
    RAW_MARIADB_TABLE,
    RAW_POSTGRES_TABLE,
    READ_BODY,
    REDIS_CLUSTER_MASTERS,
    REDIS_DB,
    REDIS_HOST,
    REDIS_PORT,
    REPO_ROOT,
    ROUTES,
    STORE_OF_VARIANT,
    VARIANTS,
    BenchSettings,
    is_asgi_variant,
    is_sessionkeeper_variant,
    last_line,
    sessionkeeper_import_error,
    subprocess_env,
)
from loadgen import (
    BenchError,
    GunicornServer,
    WrkLoad,
    check_route,
    obtain_session_cookies,
    prepare_variant,
    run_wrk,
)
from report import (
    Measurement,
    background_redis_ops_per_s,
    render_chart,
    render_markdown,
    summarize,
)
from stores import (
    ChildServer,
    RedisClusterServer,
    StoreProbe,
    counter_delta,
    delete_redis_cluster_prefix,
    delete_redis_prefix,
    drop_sql_table,
    dynalite_binary,
    dynalite_server,
    dynalite_version,
    memcached_server,
    redis_cluster_node_clients,
    redis_server,
    sql_server_version,
)

SETTLE_S = 0.2  # lets requests in flight when wrk stops finish before the "after" snapshot
OVERHEAD_VARIANTS = ("raw-redis", "fs-redis", "sk-redis")


@dataclass(frozen=True)
class Options:
    variants: list[str]
    reps: int
    duration_s: int
    warmup_s: int
    threads: int
    connections: int
    sessions: int
    workers: int
    seed: int
    docs_dir: Path
    overhead: bool
    instructions: bool
    redis: str
    json_path: Path | None
    quick: bool
    max_minutes: float


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        description="Benchmark Flask session variants with gunicorn + wrk.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 rep, 1 s per route, short overhead bench"
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated subset of: " + ",".join(VARIANTS) + " (default: all; "
        "'plain' is always added as the ratio base)",
    )
    parser.add_argument("--reps", type=int, help="interleaved repetitions (default 3, quick 1)")
    parser.add_argument("--duration", type=int, help="wrk seconds per route (default 3, quick 1)")
    parser.add_argument(
        "--warmup", type=int,
        help="wrk warm-up seconds per route at each server start (default 1, 0 disables)"
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--connections", type=int, default=10, help="wrk connections (default 10)")
    parser.add_argument(
        "--sessions",
        type=int,
        help="distinct session cookies (simulated clients) wrk rotates over "
        "(default: one per connection)",
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers (default 2)")
    parser.add_argument("--seed", type=int, help="shuffle seed (default: random, printed)")
    parser.add_argument(
        "--docs-dir",
        type=Path,
        default=REPO_ROOT / "docs",
        help="where benchmarks.md and benchmarks.png are written (default: docs/)",
    )
    parser.add_argument(
        "--no-overhead", action="store_true", help="skip the in-process overhead.py microbenchmark"
    )
    parser.add_argument(
        "--no-instructions", action="store_true",
        help="skip the instruction counts (instructions.py, ~11 min; not run with --quick)",
    )
    parser.add_argument(
        "--redis",
        choices=("shared", "private"),
        default="shared",
        help="shared: the Redis at 127.0.0.1:6379 (DB 9, random key prefix); private: "
        "start a throw-away redis-server so INFO commandstats holds only this run's traffic "
        "(default: shared)",
    )
    parser.add_argument(
        "--json", type=Path, dest="json_path", help="also write raw measurements as JSON"
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=15.0,
        help="start no new repetition after this much wall time (default 15)",
    )
    args = parser.parse_args(argv)
    variants = parse_variants(parser, args.variants)
    options = Options(
        variants=variants,
        reps=pick(args.reps, 1 if args.quick else 3),
        duration_s=pick(args.duration, 1 if args.quick else 3),
        warmup_s=pick(args.warmup, 1),
        threads=args.threads,
        connections=args.connections,
        sessions=pick(args.sessions, args.connections),
        workers=args.workers,
        seed=pick(args.seed, secrets.randbelow(1_000_000)),
        docs_dir=args.docs_dir,
        overhead=not args.no_overhead,
        instructions=not (args.no_instructions or args.quick),
        redis=args.redis,
        json_path=args.json_path,
        quick=args.quick,
        max_minutes=args.max_minutes,
    )
    check_bounds(parser, options)
    return options


def pick(given: int | None, default: int) -> int:
    """The option's value if given (0 included), else the mode's default."""
    return default if given is None else given


def parse_variants(parser: argparse.ArgumentParser, text: str) -> list[str]:
    requested = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in requested if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    wanted = {"plain", *requested}  # plain /ping is the denominator of every ratio
    if any(is_asgi_variant(v) for v in requested):
        wanted.add("asgi-plain")  # the ASGI rows' denominator
    return [v for v in VARIANTS if v in wanted]


def check_bounds(parser: argparse.ArgumentParser, o: Options) -> None:
    limits = {
        "reps": (o.reps, 1, 50),
        "duration": (o.duration_s, 1, 120),
        "warmup": (o.warmup_s, 0, 60),
        "threads": (o.threads, 1, 64),
        "connections": (o.connections, 1, 1000),
        "sessions": (o.sessions, 1, 200),  # cookies travel on wrk's command line
        "workers": (o.workers, 1, 64),
    }
    for name, (value, low, high) in limits.items():
        if not low <= value <= high:
            parser.error(f"--{name} must be between {low} and {high}")
    if o.connections < o.threads:
        parser.error("wrk needs --connections >= --threads")


# --- availability ------------------------------------------------------------------


def check_tools(options: Options) -> None:
    stores = {STORE_OF_VARIANT[v] for v in options.variants}
    tools = ["wrk"]
    tools += ["memcached"] if "memcached" in stores else []
    private_redis = options.redis == "private" and needs_redis(options)
    tools += ["redis-server"] if private_redis or "redis-cluster" in stores else []
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        sys.exit(f"missing tools: {', '.join(missing)} (apt-get install -y {' '.join(missing)})")


def needs_redis(options: Options) -> bool:
    redis_variants = any(STORE_OF_VARIANT[v] == "redis" for v in options.variants)
    overhead = options.overhead and any(v in OVERHEAD_VARIANTS for v in options.variants)
    return redis_variants or overhead


@dataclass
class Services:
    """Store endpoints for this run, and the child servers started for them."""

    redis_port: int = REDIS_PORT
    redis_client: Any | None = None
    memcached_port: int | None = None
    dynamodb_port: int | None = None  # the private dynalite (DynamoDB variants)
    dynalite_version: str | None = None
    # the private Redis Cluster (sk-redis-cluster): its nodes' ports and one client per node
    redis_cluster_ports: list[int] = field(default_factory=list)
    redis_cluster_clients: list[Any] = field(default_factory=list)
    mariadb_version: str | None = None  # None: MariaDB not used in this run
    # store or database (DATABASE_OF_VARIANT) -> why it is unavailable
    errors: dict[str, str] = field(default_factory=dict)
    children: list[ChildServer | RedisClusterServer] = field(default_factory=list)

    def start_child(self, store: str, server: ChildServer | RedisClusterServer) -> bool:
        self.children.append(server)  # stopped in stop() even if start() fails midway
        try:
            server.start()
        except (OSError, RuntimeError) as exc:
            self.errors[store] = str(exc)
            return False
        return True

    def stop(self) -> None:
        for client in self.redis_cluster_clients:
            client.close()
        for child in reversed(self.children):
            child.stop()


def start_services(options: Options) -> Services:
    """Start and check every store this run needs; stops what it started if it fails."""
    services = Services()
    try:
        start_stores(options, services)
    except BaseException:
        services.stop()
        raise
    return services


def start_stores(options: Options, services: Services) -> None:
    stores = {STORE_OF_VARIANT[v] for v in options.variants}
    if "memcached" in stores:
        server = memcached_server()
        if services.start_child("memcached", server):
            services.memcached_port = server.port
    if "dynamodb" in stores:
        start_dynalite(services)
    if needs_redis(options):
        if options.redis == "private":
            server = redis_server()
            if services.start_child("redis", server):
                services.redis_port = server.port
        if "redis" not in services.errors:
            services.redis_client, error = connect_redis(services.redis_port)
            if error:
                services.errors["redis"] = error
    if any(DATABASE_OF_VARIANT.get(v) == "mariadb" for v in options.variants):
        try:
            services.mariadb_version = sql_server_version(MARIADB_URL)
        except Exception as exc:  # driver missing, server down, access denied, ...
            where = f"MariaDB at {MARIADB_HOST}:{MARIADB_PORT}"
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            services.errors["mariadb"] = f"{where} not reachable: {reason}"
    if "redis-cluster" in stores:
        cluster = RedisClusterServer(REDIS_CLUSTER_MASTERS)
        if services.start_child("redis-cluster", cluster):
            error = check_redis_cluster(cluster.ports)
            if error:
                services.errors["redis-cluster"] = error
            else:
                services.redis_cluster_ports = list(cluster.ports)
                services.redis_cluster_clients = redis_cluster_node_clients(cluster.ports)


def start_dynalite(services: Services) -> None:
    """The private dynalite; not installed (it comes from npm, not apt) makes the DynamoDB
    variants unavailable rather than stopping the run."""
    try:
        binary = dynalite_binary()
        server = dynalite_server()
    except (RuntimeError, ImportError) as exc:  # not installed, or boto3 missing
        services.errors["dynamodb"] = str(exc)
        return
    if services.start_child("dynamodb", server):
        services.dynamodb_port = server.port
        services.dynalite_version = dynalite_version(binary)


def connect_redis(port: int) -> tuple[Any | None, str | None]:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=port, db=REDIS_DB, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        return None, f"Redis at {REDIS_HOST}:{port} not reachable: {exc}"
    return client, None


def check_redis_cluster(ports: list[int]) -> str | None:
    """None if a RedisCluster client (as the app builds it) sees every master, else why."""
    import redis
    from redis.cluster import ClusterNode, RedisCluster

    try:
        client = RedisCluster(
            startup_nodes=[ClusterNode(REDIS_HOST, port) for port in ports], socket_timeout=5
        )
        try:
            masters = len(client.get_primaries())
            client.ping(target_nodes=RedisCluster.ALL_NODES)
        finally:
            client.close()
    except redis.RedisError as exc:
        return f"Redis Cluster on ports {ports} not usable: {exc}"
    if masters != len(ports):
        return f"Redis Cluster on ports {ports} shows {masters} masters, not {len(ports)}"
    return None


def initial_statuses(variants: list[str], store_errors: dict[str, str]) -> dict[str, str]:
    """'ok' or 'unavailable: <why>' per variant, decided before any app server starts."""
    sk_error = None
    if any(is_sessionkeeper_variant(v) for v in variants):
        sk_error = sessionkeeper_import_error()
    statuses = {}
    for variant in variants:
        store_error = store_errors.get(STORE_OF_VARIANT[variant]) or store_errors.get(
            DATABASE_OF_VARIANT.get(variant, "")
        )
        if is_sessionkeeper_variant(variant) and sk_error:
            statuses[variant] = f"unavailable: {sk_error}"
        elif store_error:
            statuses[variant] = f"unavailable: {store_error}"
        else:
            statuses[variant] = "ok"
    return statuses


# --- measuring ---------------------------------------------------------------------


def routes_for(variant: str) -> tuple[str, ...]:
    return ("/ping",) if variant in ("plain", "asgi-plain") else ROUTES


def start_checked_server(
    variant: str, settings: BenchSettings, options: Options, log_path: Path
) -> tuple[GunicornServer, list[str]]:
    """Start gunicorn, log the clients in, and verify each cookie carries its session."""
    server = GunicornServer(variant, settings, options.workers, log_path)
    server.start()
    try:
        cookies = (
            [] if variant in ("plain", "asgi-plain")
            else obtain_session_cookies(server.port, options.sessions)
        )
        check_route(server.port, "/ping", "", "pong")
        for cookie in cookies:
            check_route(server.port, "/read", cookie, READ_BODY)
        if cookies:
            check_route(server.port, "/write", cookies[0], None)
    except (BenchError, OSError) as exc:
        server.stop()
        raise BenchError(f"{exc} (server log: {server.log_tail()})") from exc
    return server, cookies


def measure_route(
    variant: str, route: str, rep: int, port: int, probe: StoreProbe, load: WrkLoad, duration_s: int
) -> Measurement:
    """One wrk run with store counter snapshots around it."""
    before = probe.snapshot()
    wrk = run_wrk(port, route, duration_s, load)
    time.sleep(SETTLE_S)
    after = probe.snapshot()
    print(
        f"  rep {rep} {variant:<22} {route:<6} {wrk.requests_per_s:>9,.0f} req/s"
        + (f"  ({wrk.non_2xx} non-2xx)" if wrk.non_2xx else ""),
        flush=True,
    )
    return Measurement(
        variant=variant,
        route=route,
        rep=rep,
        requests=wrk.requests,
        seconds=wrk.seconds,
        requests_per_s=wrk.requests_per_s,
        non_2xx=wrk.non_2xx,
        socket_errors=wrk.socket_errors,
        ops=counter_delta(before, after),
    )


def measure_block(
    variant: str,
    rep: int,
    settings: BenchSettings,
    probe: StoreProbe,
    options: Options,
    log_path: Path,
) -> list[Measurement]:
    """One server lifetime: warm up, then one wrk run per route."""
    server, cookies = start_checked_server(variant, settings, options, log_path)
    load = WrkLoad(options.threads, options.connections, tuple(cookies))
    try:
        if options.warmup_s:
            # Every route, not just one: a route measured first after the server started
            # ran slower than the same route measured later (interpreter caches, the
            # store client's pools and connections are filled route by route).
            for route in routes_for(variant):
                run_wrk(server.port, route, options.warmup_s, load)
            time.sleep(SETTLE_S)  # warm-up stragglers must not land in the first window
        return [
            measure_route(variant, route, rep, server.port, probe, load, options.duration_s)
            for route in routes_for(variant)
        ]
    finally:
        server.stop()


@dataclass
class RunState:
    options: Options
    base_settings: BenchSettings
    work_dir: Path
    services: Services
    statuses: dict[str, str]

    def active_variants(self) -> list[str]:
        return [v for v, status in self.statuses.items() if status == "ok"]

    def settings_for_block(self, variant: str, rep: int) -> BenchSettings:
        counter_dir = self.work_dir / "counters" / f"{variant}-{rep}"
        counter_dir.mkdir(parents=True, exist_ok=True)
        return replace(self.base_settings, counter_dir=str(counter_dir))

    def probe_for(self, settings: BenchSettings) -> StoreProbe:
        services = self.services
        return StoreProbe(
            services.redis_client,
            services.memcached_port,
            settings.counter_dir,
            services.redis_cluster_clients or None,
        )


def prepare_all(state: RunState) -> None:
    for variant in state.active_variants():
        try:
            prepare_variant(variant, state.settings_for_block(variant, 0))
        except (BenchError, subprocess.TimeoutExpired) as exc:
            # A sessionkeeper store still being written is "unavailable", not a failure.
            kind = "unavailable" if is_sessionkeeper_variant(variant) else "failed"
            state.statuses[variant] = f"{kind}: {exc}"
            print(f"  {variant}: {state.statuses[variant]}", flush=True)


def run_schedule(state: RunState) -> tuple[list[Measurement], int]:
    """All repetitions, variant order shuffled per repetition; returns (data, reps done)."""
    options = state.options
    rng = random.Random(options.seed)
    deadline = time.monotonic() + options.max_minutes * 60
    measurements: list[Measurement] = []
    reps_done = 0
    for rep in range(1, options.reps + 1):
        if time.monotonic() > deadline:
            print(f"--max-minutes reached: stopping after {reps_done} repetition(s)")
            break
        order = state.active_variants()
        rng.shuffle(order)
        print(f"repetition {rep}/{options.reps}: {' '.join(order)}", flush=True)
        for variant in order:
            measurements += run_block(state, variant, rep)
        reps_done = rep
    failed = {v for v, s in state.statuses.items() if s.startswith("failed")}
    return [m for m in measurements if m.variant not in failed], reps_done


def run_block(state: RunState, variant: str, rep: int) -> list[Measurement]:
    settings = state.settings_for_block(variant, rep)
    log_path = state.work_dir / f"gunicorn-{variant}-{rep}.log"
    try:
        return measure_block(
            variant, rep, settings, state.probe_for(settings), state.options, log_path
        )
    except (BenchError, OSError, subprocess.TimeoutExpired) as exc:
        state.statuses[variant] = f"failed in repetition {rep}: {exc}"
        print(f"  {variant}: {state.statuses[variant]}", flush=True)
        return []


def run_overhead(options: Options, work_dir: Path, redis_port: int) -> dict[str, Any] | None:
    wanted = [v for v in OVERHEAD_VARIANTS if v in options.variants]
    if not options.overhead or not wanted:
        return None
    out = work_dir / "overhead.json"
    rounds, calls = ("3", "300") if options.quick else ("9", "1000")
    command = [
        sys.executable,
        str(Path(__file__).with_name("overhead.py")),
        "--variants",
        ",".join(wanted),
        "--rounds",
        rounds,
        "--calls",
        calls,
        "--redis-port",
        str(redis_port),
        "--json",
        str(out),
    ]
    print("overhead microbenchmark:", flush=True)
    proc = subprocess.run(
        command, env=subprocess_env(), capture_output=True, text=True, timeout=600, check=False
    )
    print(proc.stdout.rstrip(), flush=True)
    if proc.returncode != 0 or not out.exists():
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return {"error": tail[0]}
    result: dict[str, Any] = json.loads(out.read_text())
    return result


# --- metadata and output -----------------------------------------------------------


def tool_version(command: list[str]) -> str:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (proc.stdout or proc.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"


def package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(
    redis_version: str,
    mariadb_version: str | None,
    redis_cluster: str | None = None,
    dynalite: str | None = None,
) -> dict[str, str]:
    packages = (
        "flask",
        "flask-session",
        "sqlalchemy",
        "redis",
        "pymemcache",
        "psycopg2-binary",
        "pymysql",
        "gunicorn",
        "cachelib",
        "boto3",
    )
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "CPU": cpu_model(),
        "OS": platform.platform(),
        "Python": platform.python_version(),
        "packages": ", ".join(f"{p} {package_version(p)}" for p in packages),
        "servers": f"Redis {redis_version}; {tool_version(['memcached', '-V'])}; "
        f"{tool_version(['psql', '--version'])} (server at 127.0.0.1:5432)"
        + (
            f"; MariaDB {mariadb_version} (server at {MARIADB_HOST}:{MARIADB_PORT})"
            if mariadb_version
            else ""
        )
        + (f"; {redis_cluster}" if redis_cluster else "")
        + (f"; dynalite {dynalite} (private, in memory; DynamoDB-compatible, not AWS)"
           if dynalite else ""),
        "load generator": tool_version(["wrk", "-v"]),
    }


def write_outputs(
    options: Options,
    measurements: list[Measurement],
    statuses: dict[str, str],
    meta: dict[str, Any],
    overhead: dict[str, Any] | None,
) -> None:
    summaries = summarize(measurements)
    options.docs_dir.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(
        summaries, statuses, meta, overhead, background_redis_ops_per_s(measurements)
    )
    (options.docs_dir / "benchmarks.md").write_text(markdown)
    if options.json_path:
        raw = {
            "meta": meta,
            "statuses": statuses,
            "overhead": overhead,
            "measurements": [asdict(m) for m in measurements],
            "summaries": [asdict(s) for s in summaries],
        }
        options.json_path.write_text(json.dumps(raw, indent=2))
    print(markdown)
    chart = options.docs_dir / "benchmarks.png"
    try:
        render_chart(summaries, chart)
    except ImportError as exc:  # the numbers above are kept: only the picture is missing
        print(f"warning: {chart} not written ({exc}; pip install -e '.[bench]')", flush=True)
        print(f"wrote {options.docs_dir / 'benchmarks.md'}")
        return
    print(f"wrote {options.docs_dir / 'benchmarks.md'} and {chart}")


def load_average() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def machine_is_busy(load_start: str) -> bool:
    """Other work was using more than half the cores when the run began."""
    one_minute = float(load_start.split(" / ")[0])
    return one_minute > 0.5 * len(os.sched_getaffinity(0))


def command_line(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", "benchmarks/run.py", *args])


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    started = dt.datetime.now(dt.timezone.utc)
    wall_start = time.monotonic()
    load_start = load_average()
    if machine_is_busy(load_start):
        print(f"warning: machine busy before start (load average {load_start})", flush=True)
    check_tools(options)
    print(
        f"variants: {', '.join(options.variants)}; reps {options.reps}, "
        f"{options.duration_s}s per route, seed {options.seed}",
        flush=True,
    )
    services = start_services(options)
    try:
        with tempfile.TemporaryDirectory(prefix="sk-bench-") as tmp:
            measurements, statuses, reps_done, overhead = run_all(options, services, Path(tmp))
        redis_version = server_version(services.redis_client)
        redis_cluster = describe_redis_cluster(services)
    finally:
        services.stop()

    meta = {
        "command": command_line(argv),
        "quick": options.quick,
        "reps": reps_done,
        "duration_s": options.duration_s,
        "warmup_s": options.warmup_s,
        "threads": options.threads,
        "connections": options.connections,
        "sessions": options.sessions,
        "workers": options.workers,
        "redis": describe_redis(options, services),
        "redis_cluster": redis_cluster_nodes(services),
        "seed": options.seed,
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "wall_s": time.monotonic() - wall_start,
        "load_start": load_start,
        "load_end": load_average(),
        "busy": machine_is_busy(load_start),
        "machine": machine_info(
            redis_version, services.mariadb_version, redis_cluster, services.dynalite_version
        ),
    }
    write_outputs(options, measurements, statuses, meta, overhead)
    return 0 if any(m.variant == "plain" for m in measurements) else 1


def run_all(
    options: Options, services: Services, work_dir: Path
) -> tuple[list[Measurement], dict[str, str], int, dict[str, Any] | None]:
    """Prepare, measure and run the overhead bench; always deletes this run's Redis keys."""
    statuses = initial_statuses(options.variants, services.errors)
    for variant, status in statuses.items():
        if status != "ok":
            print(f"  {variant}: {status}", flush=True)
    key_prefix = f"bench-{secrets.token_hex(4)}:"
    state = RunState(
        options=options,
        base_settings=BenchSettings(
            key_prefix=key_prefix,
            data_dir=str(work_dir),
            counter_dir=str(work_dir),
            memcached_port=services.memcached_port or 0,
            redis_port=services.redis_port,
            redis_cluster_ports=tuple(services.redis_cluster_ports),
            dynamodb_port=services.dynamodb_port or 0,
        ),
        work_dir=work_dir,
        services=services,
        statuses=statuses,
    )
    try:
        prepare_all(state)
        measurements, reps_done = run_schedule(state)
    finally:
        clean_up_stores(options, services, key_prefix)
    overhead = None
    if services.redis_client is not None:
        overhead = run_overhead(options, work_dir, services.redis_port)
    if options.instructions:  # (the report reads it from the overhead results)
        overhead = {**(overhead or {}),
                    "instructions": run_instructions(work_dir, services.memcached_port)}
    return measurements, state.statuses, reps_done, overhead


def run_instructions(work_dir: Path, memcached_port: int | None) -> str:
    """instructions.py's tables (Markdown), or why they are missing."""
    out = work_dir / "instructions.md"
    print("instruction counts (callgrind):", flush=True)
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("instructions.py")), "--markdown",
         str(out), "--memcached-port", str(memcached_port or 0)],
        env=subprocess_env(), capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not out.exists():
        return f"Not measured: {last_line(proc.stderr) or proc.returncode}"
    return out.read_text()


def clean_up_stores(options: Options, services: Services, key_prefix: str) -> None:
    """Delete what this run stored in shared servers (memcached is private and just stops)."""
    if services.redis_client is not None:
        delete_redis_prefix(services.redis_client, key_prefix)
    if services.redis_cluster_clients:
        try:  # the cluster is private and stops next, but leave it as clean as Redis
            delete_redis_cluster_prefix(services.redis_cluster_clients, key_prefix)
        except Exception as exc:  # cleanup must not hide the results
            print(f"warning: could not delete Redis Cluster keys: {exc}", flush=True)
    tables = {
        "sk-postgresql": (POSTGRES_URL, POSTGRES_TABLE),
        "raw-postgresql": (POSTGRES_URL, RAW_POSTGRES_TABLE),
        "asgi-sk-postgresql": (POSTGRES_URL, ASGI_POSTGRES_TABLE),
        "asgi-sk-postgresql-asyncpg": (POSTGRES_URL, ASGI_POSTGRES_TABLE),
        "sk-mariadb": (MARIADB_URL, MARIADB_TABLE),
        "raw-mariadb": (MARIADB_URL, RAW_MARIADB_TABLE),
    }
    for variant, (url, table) in tables.items():
        if variant not in options.variants or DATABASE_OF_VARIANT.get(variant) in services.errors:
            continue  # not run, or its server never answered: nothing of ours is there
        try:
            drop_sql_table(url, table)
        except Exception as exc:  # cleanup must not hide the results
            print(f"warning: could not drop {table}: {exc}", flush=True)


def server_version(redis_client: Any | None) -> str:
    return str(redis_client.info("server")["redis_version"]) if redis_client else "n/a"


def describe_redis_cluster(services: Services) -> str | None:
    """The private Redis Cluster's version and nodes, for the Machine section."""
    if not services.redis_cluster_clients:
        return None
    version = services.redis_cluster_clients[0].info("server")["redis_version"]
    return f"Redis Cluster {version}: {redis_cluster_nodes(services)}"


def redis_cluster_nodes(services: Services) -> str | None:
    if not services.redis_cluster_ports:
        return None
    ports = ", ".join(str(port) for port in services.redis_cluster_ports)
    masters = len(services.redis_cluster_ports)
    return f"a private {masters}-master cluster, no replicas, at {REDIS_HOST} ports {ports}"


def describe_redis(options: Options, services: Services) -> str:
    where = "private redis-server" if options.redis == "private" else "shared server"
    return f"{where} at {REDIS_HOST}:{services.redis_port}, DB {REDIS_DB}"


if __name__ == "__main__":
    sys.exit(main())
