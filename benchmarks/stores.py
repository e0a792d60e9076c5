"""Server-side store counters (the runner's view), store servers and SQL table cleanup.

Every snapshot is a flat {"<store>:<counter>": int}; the runner subtracts a
snapshot taken before a wrk run from one taken after it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common import free_port
from workercounters import read_counter_dir

# memcached `stats` fields that count client commands; delete and cas are summed
# from their hit/miss (and badval) fields because memcached has no cmd_ field for them
# (cmd_set counts cas as well: memcached_stats subtracts it).
MEMCACHED_COMMAND_FIELDS: dict[str, tuple[str, ...]] = {
    "get": ("cmd_get",),
    "set": ("cmd_set",),
    "touch": ("cmd_touch",),
    "delete": ("delete_hits", "delete_misses"),
    "cas": ("cas_hits", "cas_misses", "cas_badval"),
}

# Our own INFO calls would otherwise show up in every Redis delta.
REDIS_IGNORED_COMMANDS = frozenset({"info"})


class ChildServer:
    """A store server child process on a spare loopback port, owned by this run."""

    def __init__(self, name: str, argv: list[str], port: int, ping: Callable[[], object]):
        self.name = name
        self.port = port
        self._argv = argv
        self._ping = ping
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        self._proc = subprocess.Popen(
            self._argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with status {self._proc.returncode}")
            try:
                self._ping()
                return
            except Exception:  # not listening yet: each client raises its own error type
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer on port {self.port} in {timeout_s}s")

    def stop(self) -> None:
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def memcached_server() -> ChildServer:
    port = free_port()
    argv = ["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64"]
    argv += ["-t", "2", "-u", "nobody"]  # -u is required when running as root
    return ChildServer("memcached", argv, port, lambda: memcached_stats(port))


def redis_server() -> ChildServer:
    """A throw-away redis-server: no persistence, so nothing is written to disk."""
    import redis

    port = free_port()
    argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port)]
    argv += ["--save", "", "--appendonly", "no", "--databases", "16"]
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    return ChildServer("redis-server", argv, port, client.ping)


def memcached_stats(port: int) -> dict[str, int]:
    from pymemcache.client.base import Client

    client = Client(("127.0.0.1", port), connect_timeout=1.0, timeout=2.0)
    try:
        raw: dict[Any, Any] = client.stats()
    finally:
        client.close()
    stats = {_text(key): value for key, value in raw.items()}
    counts = {
        name: sum(int(stats.get(field_name, 0)) for field_name in fields)
        for name, fields in MEMCACHED_COMMAND_FIELDS.items()
    }
    # cmd_set counts every storage command, cas included: a cas is not also a set.
    counts["set"] -= counts["cas"]
    return {f"memcached:{name}": count for name, count in counts.items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def redis_command_calls(client: Any) -> dict[str, int]:
    """`INFO commandstats` as {"redis:<command>": calls}; server-wide, all DBs."""
    stats: dict[str, Any] = client.info("commandstats")
    calls: dict[str, int] = {}
    for key, value in stats.items():
        command = key.removeprefix("cmdstat_")
        if command not in REDIS_IGNORED_COMMANDS:
            calls[f"redis:{command}"] = int(value["calls"])
    return calls


def delete_redis_prefix(client: Any, prefix: str, max_rounds: int = 10_000) -> int:
    """Delete only this run's keys (never FLUSHALL/FLUSHDB); bounded SCAN loop."""
    deleted = 0
    cursor = 0
    for _ in range(max_rounds):
        cursor, keys = client.scan(cursor=cursor, match=f"{prefix}*", count=500)
        if keys:
            deleted += int(client.delete(*keys))
        if cursor == 0:
            break
    return deleted


def drop_sql_table(url: str, table: str) -> None:
    """Remove the benchmark's own session table (it holds nothing but this run's rows).

    `url` is a PostgreSQL (psycopg2) or MariaDB (pymysql) SQLAlchemy URL; both
    drivers take `connect_timeout`. The name is quoted the dialect's way.
    """
    import sqlalchemy as sa

    engine = sa.create_engine(url, connect_args={"connect_timeout": 5})
    try:
        quoted = engine.dialect.identifier_preparer.quote_identifier(table)
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {quoted}"))
    finally:
        engine.dispose()


def sql_server_version(url: str) -> str:
    """`SELECT VERSION()` of the server behind `url`; raises if it does not answer."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            return str(conn.execute(sa.text("SELECT VERSION()")).scalar())
    finally:
        engine.dispose()


@dataclass
class StoreProbe:
    """Takes snapshots of every store counter that is available in this run."""

    redis_client: Any | None = None
    memcached_port: int | None = None
    counter_dir: str | None = None

    def snapshot(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        if self.redis_client is not None:
            counts.update(redis_command_calls(self.redis_client))
        if self.memcached_port is not None:
            counts.update(memcached_stats(self.memcached_port))
        if self.counter_dir is not None:
            counts.update(read_counter_dir(self.counter_dir))
        return counts


def counter_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Per-counter increase; counters that did not move are dropped."""
    keys = set(before) | set(after)
    delta = {key: after.get(key, 0) - before.get(key, 0) for key in keys}
    return {key: value for key, value in sorted(delta.items()) if value}
