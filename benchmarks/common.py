"""Names, settings and small helpers shared by the runner, the app and overhead.py.

The benchmark modules import each other as top-level modules: `run.py` and
`overhead.py` are executed as scripts (so `benchmarks/` is on sys.path) and
gunicorn gets `benchmarks/` on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
SRC_DIR = REPO_ROOT / "src"

ROUTES: tuple[str, ...] = ("/ping", "/read", "/write")

# Order here is the order of rows in the report.
VARIANTS: tuple[str, ...] = (
    "plain",
    "flask-cookie",
    "raw-redis",
    "raw-memcached",
    "raw-postgresql",
    "raw-dynamodb",
    "raw-memcached-cas",
    "raw-sqlite",
    "raw-mariadb",
    "raw-filesystem",
    "fs-redis",
    "fs-memcached",
    "fs-sqlalchemy-sqlite",
    "fs-filesystem",
    "fs-cachelib",
    "fs-dynamodb",
    "sk-sqlite",
    "sk-cookie",
    "sk-cookie-permanent",
    "sk-cookie-throttled",
    "sk-redis",
    "sk-redis-cluster",
    "sk-memcached",
    "sk-filesystem",
    "sk-postgresql",
    "sk-mariadb",
    "sk-sqlalchemy-sqlite",
    "sk-cachelib",
    "sk-cachelib-files",
    "sk-dynamodb",
    "asgi-plain",
    "asgi-starlette-cookie",
    "asgi-starsessions-cookie",
    "asgi-starsessions-redis",
    "asgi-raw-redis",
    "asgi-sk-cookie",
    "asgi-sk-redis",
    "asgi-sk-redis-on-demand",
    "asgi-sk-sqlite",
    "asgi-sk-postgresql",
    "asgi-sk-postgresql-asyncpg",
)

# Which server-side counter measures each variant's store traffic.
STORE_OF_VARIANT: dict[str, str] = {
    "plain": "none",
    "flask-cookie": "none",
    "raw-redis": "redis",
    "raw-memcached": "memcached",
    "raw-postgresql": "sql",
    "raw-dynamodb": "dynamodb",
    "raw-memcached-cas": "memcached",
    "raw-sqlite": "sql",
    "raw-mariadb": "sql",
    "raw-filesystem": "none",
    "fs-redis": "redis",
    "fs-memcached": "memcached",
    "fs-sqlalchemy-sqlite": "sql",
    "fs-filesystem": "none",
    "fs-cachelib": "redis",
    "fs-dynamodb": "dynamodb",
    "sk-sqlite": "sql",
    "sk-cookie": "none",
    "sk-memory": "none",
    "asgi-plain": "none",
    "asgi-starlette-cookie": "none",
    "asgi-starsessions-cookie": "none",
    "asgi-starsessions-redis": "redis",
    "asgi-raw-redis": "redis",
    "asgi-sk-cookie": "none",
    "asgi-sk-redis": "redis",
    "asgi-sk-redis-on-demand": "redis",
    "asgi-sk-sqlite": "sql",
    "asgi-sk-postgresql": "sql",
    "asgi-sk-postgresql-asyncpg": "sql",
    "sk-cookie-permanent": "none",
    "sk-cookie-throttled": "none",
    "sk-redis": "redis",
    "sk-redis-cluster": "redis-cluster",
    "sk-memcached": "memcached",
    "sk-filesystem": "none",
    "sk-postgresql": "sql",
    "sk-mariadb": "sql",
    "sk-sqlalchemy-sqlite": "sql",
    "sk-cachelib": "redis",
    "sk-cachelib-files": "none",
    "sk-dynamodb": "dynamodb",
}

# Variants that need a shared database server; run.py checks it answers before the run.
DATABASE_OF_VARIANT: dict[str, str] = {
    "sk-mariadb": "mariadb",
    "raw-mariadb": "mariadb",
}

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
REDIS_DB = 9  # dedicated DB so our keys never mix with other users' keys
REDIS_CLUSTER_MASTERS = 3  # the private Redis Cluster run.py starts for sk-redis-cluster
POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
# sk-postgresql's own table, so benchmark rows never mix with other users of DB `test`.
POSTGRES_TABLE = "sessionkeeper_bench"
ASGI_POSTGRES_TABLE = "sessionkeeper_bench_asgi"  # asgi-sk-postgresql's (and -asyncpg's)
# raw-postgresql's table: one row per simulated session, dropped after the run.
RAW_POSTGRES_TABLE = "sessionkeeper_bench_raw"
MARIADB_HOST = "127.0.0.1"
MARIADB_PORT = 3306
MARIADB_URL = f"mysql+pymysql://root@{MARIADB_HOST}:{MARIADB_PORT}/test"
# sk-mariadb's own table in MariaDB's DB `test`, dropped after the run.
MARIADB_TABLE = "sessionkeeper_bench_mariadb"
RAW_MARIADB_TABLE = "sessionkeeper_bench_mariadb_raw"  # raw-mariadb's
ASGI_MARIADB_TABLE = "sessionkeeper_bench_asgi"  # the in-process asgi-sk-mariadb* variants
# dynalite (a DynamoDB-compatible server on Node.js, from npm), where .ci/dynalite.sh puts
# it; the runner starts a private one in memory, so its tables vanish when it stops.
DYNALITE_BINARY = "/opt/sessionkeeper-node/node_modules/.bin/dynalite"
DYNALITE_INSTALL = ".ci/dynalite.sh, or npm install --prefix /opt/sessionkeeper-node dynalite@4"
DYNAMODB_REGION = "us-east-1"  # any region: the endpoint is dynalite, never AWS
DYNAMODB_TABLE = "sessionkeeper_bench"  # sk-dynamodb's table
FS_DYNAMODB_TABLE = "flask_session_bench"  # fs-dynamodb's table
RAW_DYNAMODB_TABLE = "sessionkeeper_bench_raw"  # raw-dynamodb: one item per client

# The two keys /login stores and /read returns; /read's body must equal this.
SESSION_USER = "alice"
SESSION_THEME = "dark"
READ_BODY = f"{SESSION_USER} {SESSION_THEME}"

ENV_SETTINGS = "BENCH_SETTINGS"  # JSON-encoded BenchSettings for the app workers
ENV_VARIANT = "BENCH_VARIANT"


@dataclass(frozen=True)
class BenchSettings:
    """Everything a worker needs to build one variant's app; passed as JSON in env."""

    key_prefix: str
    data_dir: str
    counter_dir: str
    memcached_port: int
    redis_port: int = REDIS_PORT
    redis_db: int = REDIS_DB
    # client ports of the private Redis Cluster's nodes (startup nodes); empty: not started
    redis_cluster_ports: tuple[int, ...] = ()
    postgres_url: str = POSTGRES_URL
    mariadb_url: str = MARIADB_URL
    dynamodb_port: int = 0  # the private dynalite's port; 0: not started

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> BenchSettings:
        raw = os.environ.get(ENV_SETTINGS)
        if not raw:
            raise RuntimeError(f"{ENV_SETTINGS} is not set (start the app via run.py)")
        fields = json.loads(raw)
        fields["redis_cluster_ports"] = tuple(fields.get("redis_cluster_ports", ()))
        return cls(**fields)


def is_sessionkeeper_variant(variant: str) -> bool:
    return variant.startswith(("sk-", "asgi-sk-"))


def is_asgi_variant(variant: str) -> bool:
    """Variants of the Starlette app (asgi_app.py) under uvicorn."""
    return variant.startswith("asgi-")


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for child Python processes: repo src/ first, then benchmarks/."""
    env = dict(os.environ)
    paths = [str(SRC_DIR), str(BENCH_DIR)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONWARNINGS"] = "ignore"  # deprecation noise would bloat the error logs
    env.pop("GUNICORN_CMD_ARGS", None)  # every variant gets exactly the same server flags
    if extra:
        env.update(extra)
    return env


def sessionkeeper_import_error() -> str | None:
    """None if `sessionkeeper.flask` imports in a fresh interpreter, else the error line.

    A child process is used so a half-written package cannot break the runner.
    """
    proc = subprocess.run(
        [sys.executable, "-c", "import sessionkeeper.flask"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode == 0:
        return None
    return last_line(proc.stderr) or f"exit status {proc.returncode}"


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def free_port() -> int:
    """A currently unused loopback TCP port (the tiny reuse race is acceptable here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def instructions_per_call(script: str, args: list[str], calls: int) -> float:
    """Instructions one call of a benchmark loop costs: callgrind totals of ``script``
    run with ``--calls N`` and ``--calls 2N``, differenced (start-up and imports cancel)."""
    totals = []
    for n in (calls, 2 * calls):
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
             sys.executable, str(BENCH_DIR / script), *args, "--calls", str(n)],
            env=subprocess_env({"PYTHONHASHSEED": "0"}), capture_output=True, text=True,
            check=False,
        )
        found = re.search(r"Collected : (\d+)", proc.stderr)
        if proc.returncode != 0 or not found:
            raise RuntimeError(f"callgrind failed: {proc.stderr[-2000:]}")
        totals.append(int(found.group(1)))
    return (totals[1] - totals[0]) / calls
