"""Server-side store counters (the runner's view), store servers and SQL table cleanup.

Every snapshot is a flat {"<store>:<counter>": int}; the runner subtracts a
snapshot taken before a wrk run from one taken after it.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import DYNALITE_BINARY, DYNALITE_INSTALL, DYNAMODB_REGION, free_port
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

    def __init__(self, name: str, argv: list[str], port: int, ping: Callable[[], object],
                 start_timeout_s: float = 10.0):
        self.name = name
        self.port = port
        self._argv = argv
        self._ping = ping
        self._start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float | None = None) -> None:
        timeout_s = self._start_timeout_s if timeout_s is None else timeout_s
        self._proc = subprocess.Popen(
            self._argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # no stray server if the runner is killed
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


def dynalite_binary() -> str:
    """dynalite where .ci/dynalite.sh installs it, else on PATH; RuntimeError if neither."""
    if os.access(DYNALITE_BINARY, os.X_OK):
        return DYNALITE_BINARY
    found = shutil.which("dynalite")
    if found is None:
        raise RuntimeError(f"dynalite is not installed: run {DYNALITE_INSTALL}")
    return found


def dynalite_version(binary: str) -> str:
    """The installed dynalite's version, from the package.json beside its cli.js."""
    package = Path(binary).resolve().parent / "package.json"
    try:
        return str(json.loads(package.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "unknown"


def dynalite_server() -> ChildServer:
    """A throw-away dynalite (DynamoDB-compatible, on Node.js) keeping its tables in
    memory: nothing is written to disk and nothing is left when it stops. Tables are
    ACTIVE at once (AWS takes seconds; the stores wait for that, the run need not)."""
    import boto3
    from botocore.config import Config

    binary = dynalite_binary()
    port = free_port()
    argv = [binary, "--host", "127.0.0.1", "--port", str(port), "--createTableMs", "0",
            "--deleteTableMs", "0", "--updateTableMs", "0"]
    client = boto3.client(
        "dynamodb", endpoint_url=f"http://127.0.0.1:{port}", region_name=DYNAMODB_REGION,
        aws_access_key_id="dummy", aws_secret_access_key="dummy",
        config=Config(connect_timeout=1, read_timeout=2, retries={"total_max_attempts": 1}),
    )
    # Node.js takes a second or more to start on a busy machine.
    return ChildServer("dynalite", argv, port, client.list_tables, start_timeout_s=30.0)


# The kernel kills the cluster nodes if the runner itself is killed (no finally runs then).
_LIBC = ctypes.CDLL(None) if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the forked child before exec: one libc call, nothing else.
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


REDIS_CLUSTER_SLOTS = 16384


class RedisClusterServer:
    """A throw-away Redis Cluster: `masters` redis-server nodes, no replicas, no persistence.

    Each node gets a spare client port and a spare cluster-bus port (`--cluster-port`), and
    its nodes.conf in a temp dir. start() assigns each master an equal slot range, joins
    the nodes with CLUSTER MEET and waits until every node reports cluster_state:ok and
    knows all the others; stop() terminates the nodes and deletes the temp dir. A failed
    start() cleans up after itself too.
    """

    name = "redis-cluster"

    def __init__(self, masters: int = 3):
        self.masters = masters
        self.ports: list[int] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        self._dir: str | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        try:
            self._start(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout_s: float) -> None:
        import redis

        self._dir = tempfile.mkdtemp(prefix="sk-bench-redis-cluster-")
        taken: set[int] = set()
        for _ in range(self.masters):
            port, bus_port = _distinct_free_ports(taken, 2)
            argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port)]
            argv += ["--cluster-enabled", "yes", "--cluster-port", str(bus_port)]
            argv += ["--cluster-config-file", f"nodes-{port}.conf", "--dir", self._dir]
            argv += ["--save", "", "--appendonly", "no"]
            self._procs.append(subprocess.Popen(
                argv, cwd=self._dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
            ))
            self.ports.append(port)
        clients = redis_cluster_node_clients(self.ports)
        try:
            self._wait(timeout_s, "answer PING", lambda: all(c.ping() for c in clients))
            per_node = -(-REDIS_CLUSTER_SLOTS // self.masters)  # ceiling division
            for index, client in enumerate(clients):
                first = index * per_node
                last = min(first + per_node, REDIS_CLUSTER_SLOTS) - 1
                client.execute_command("CLUSTER ADDSLOTSRANGE", first, last)
            for client in clients[1:]:
                port = client.connection_pool.connection_kwargs["port"]
                bus_port = int(client.config_get("cluster-port")["cluster-port"])
                clients[0].execute_command("CLUSTER MEET", "127.0.0.1", port, bus_port)

            def settled() -> bool:
                # Every node must see the whole cluster, or clients get MOVED loops.
                infos = [c.execute_command("CLUSTER INFO") for c in clients]
                return all(
                    info.get("cluster_state") == "ok"
                    and int(info.get("cluster_known_nodes", 0)) == self.masters
                    for info in infos
                )

            self._wait(timeout_s, "reach cluster_state:ok", settled)
        except redis.RedisError as exc:
            raise RuntimeError(f"{self.name} setup failed: {exc}") from exc
        finally:
            for client in clients:
                client.close()

    def _wait(self, timeout_s: float, what: str, check: Callable[[], bool]) -> None:
        import redis

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for proc in self._procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{self.name} node exited with status {proc.returncode}")
            try:
                if check():
                    return
            except redis.ConnectionError:  # not listening yet
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not {what} on ports {self.ports} in {timeout_s}s")

    def stop(self) -> None:
        procs, self._procs = self._procs, []
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _distinct_free_ports(taken: set[int], count: int) -> list[int]:
    """`count` spare loopback ports, none of them in `taken` (which they are added to)."""
    ports: list[int] = []
    for _ in range(100 * count):
        port = free_port()
        if port not in taken:
            taken.add(port)
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError("no spare loopback ports found")


def redis_cluster_node_clients(ports: list[int]) -> list[Any]:
    """One plain client per cluster node, for the runner's INFO, readiness and cleanup."""
    import redis

    return [
        redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, decode_responses=True)
        for port in ports
    ]


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


def redis_cluster_command_calls(node_clients: list[Any]) -> dict[str, int]:
    """`INFO commandstats` summed over every cluster node, as {"redis-cluster:<cmd>": calls}."""
    calls: dict[str, int] = {}
    for client in node_clients:
        for key, value in redis_command_calls(client).items():
            name = "redis-cluster:" + key.removeprefix("redis:")
            calls[name] = calls.get(name, 0) + value
    return calls


def delete_redis_cluster_prefix(
    node_clients: list[Any], prefix: str, max_rounds: int = 10_000
) -> int:
    """Delete only this run's keys on every node (never FLUSHALL)."""
    return sum(delete_redis_prefix(client, prefix, max_rounds) for client in node_clients)


def delete_redis_prefix(client: Any, prefix: str, max_rounds: int = 10_000) -> int:
    """Delete only this run's keys (never FLUSHALL/FLUSHDB); bounded SCAN loop.

    One key per DEL, pipelined: a cluster node refuses a multi-key DEL whose keys hash to
    different slots.
    """
    deleted = 0
    cursor = 0
    for _ in range(max_rounds):
        cursor, keys = client.scan(cursor=cursor, match=f"{prefix}*", count=500)
        if keys:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.delete(key)
            deleted += sum(int(n) for n in pipe.execute())
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
    redis_cluster_clients: list[Any] | None = None  # one plain client per cluster node

    def snapshot(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        if self.redis_client is not None:
            counts.update(redis_command_calls(self.redis_client))
        if self.redis_cluster_clients:
            counts.update(redis_cluster_command_calls(self.redis_cluster_clients))
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
