"""Throwaway real servers for the test suite.

Every store is tested against a real server over a real connection, so these
helpers start servers as subprocesses on spare loopback ports, wait until they
answer, and kill them on ``stop()`` or at interpreter exit.  A missing binary
raises ``ServerUnavailable`` naming it; ``start_or_skip``/``require`` turn that
into a skip, or into a failure when ``SESSIONKEEPER_REQUIRE_SERVERS=1``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

import pytest

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 20.0

P = ParamSpec("P")
T = TypeVar("T")


class ServerUnavailable(RuntimeError):
    """A server binary is missing or the server would not come up."""


def require(condition: object, what: str) -> None:
    """Skip the current test unless ``condition`` holds.

    With ``SESSIONKEEPER_REQUIRE_SERVERS=1`` (CI) it fails instead, so a broken
    environment cannot turn the real-server tests into silent skips.
    """
    if condition:
        return
    if os.environ.get("SESSIONKEEPER_REQUIRE_SERVERS") == "1":
        msg = f"required but unavailable: {what} (SESSIONKEEPER_REQUIRE_SERVERS=1)"
        pytest.fail(msg, pytrace=False)
    pytest.skip(f"unavailable: {what}")


def start_or_skip(start: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Call a ``start_*`` helper, turning ``ServerUnavailable`` into ``require``."""
    try:
        return start(*args, **kwargs)
    except ServerUnavailable as exc:
        require(False, str(exc))
        raise  # unreachable: require() skipped or failed


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ServerUnavailable(f"`{name}` binary not found on PATH")
    return path


# atexit does not run if the test process is SIGKILLed or os._exit()s
# (pytest-timeout's thread method), so on Linux the kernel kills the servers
# when their parent dies.  Hence: start servers from the main thread only.
_libc = ctypes.CDLL(None) if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the forked child: keep it to one libc call (libc loaded above).
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_handed_out: set[int] = set()
# Not the `random` module: pytest-randomly reseeds it identically in every
# xdist worker, which would make workers pick the same ports.
_rng = random.SystemRandom()


def unused_port() -> int:
    """A loopback port nobody listens on, for tests of an unreachable server."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _free_port(with_bus: bool = False) -> int:
    """A port nobody listens on; with_bus also needs port+10000 (cluster bus)."""
    # Below the Linux ephemeral range, so outgoing connections rarely take it.
    for _ in range(200):
        port = _rng.randint(20000, 30000)
        ports = [port, port + 10000] if with_bus else [port]
        if _handed_out.intersection(ports):
            continue
        try:
            for p in ports:
                with socket.socket() as s:
                    s.bind((HOST, p))
        except OSError:
            continue
        _handed_out.update(ports)
        return port
    raise ServerUnavailable("no free loopback port found")


def _ask(port: int, command: bytes, until: bytes = b"\r\n") -> bytes:
    """Send a raw command and read until ``until``; b"" if nobody answers."""
    buf = b""
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1) as s:
        s.sendall(command)
        while until not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    return buf


def _redis_pings(port: int) -> bool:
    return _ask(port, b"PING\r\n").startswith(b"+PONG")


def _redis_cli(port: int, *args: str) -> str:
    out = subprocess.run(
        [_binary("redis-cli"), "-h", HOST, "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return out.stdout + out.stderr


def _wait(check: Callable[[], bool], what: str, timeout: float = STARTUP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise ServerUnavailable(f"{what} did not become ready within {timeout:.0f}s")
        time.sleep(0.05)


class _Processes:
    """Owns some server processes and their temp dir; stopped at exit too."""

    _live: set[_Processes] = set()

    def __init__(self, name: str) -> None:
        self.name = name
        self.dir = tempfile.mkdtemp(prefix=f"sessionkeeper-{name}-")
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        _Processes._live.add(self)

    def launch(
        self,
        argv: Callable[[int], list[str]],
        ready: Callable[[int], bool],
        port: int | None = None,
        with_bus: bool = False,
    ) -> int:
        """Start ``argv(port)`` and wait until ``ready(port)``; return the port.

        A chosen port can be taken between picking and binding (other test
        workers), so a server dying at start is retried on another port.
        """
        os.makedirs(self.dir, exist_ok=True)
        for _attempt in range(5):
            p = port if port is not None else _free_port(with_bus)
            log_path = os.path.join(self.dir, f"{self.name}-{p}.log")
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(
                    argv(p),
                    cwd=self.dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent,
                )
            self.procs[p] = proc
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while proc.poll() is None and not ready(p):
                if time.monotonic() > deadline:
                    raise ServerUnavailable(f"{self.name} on port {p} did not answer in time")
                time.sleep(0.05)
            if proc.poll() is None:
                return p
            del self.procs[p]
            if port is not None:
                break
        with open(log_path, errors="replace") as f:
            tail = f.read()[-800:]
        raise ServerUnavailable(f"{self.name} exited at start (port {p}):\n{tail}")

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port, None)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill(port)
        shutil.rmtree(self.dir, ignore_errors=True)
        _Processes._live.discard(self)


@atexit.register
def _stop_all() -> None:
    for group in list(_Processes._live):
        group.stop()


class ServerGroup(list[tuple[str, int]]):
    """A list of (host, port) that can also ``stop()`` its servers."""

    def __init__(self, addresses: list[tuple[str, int]], processes: _Processes) -> None:
        super().__init__(addresses)
        self._processes = processes

    def stop(self) -> None:
        self._processes.stop()


def start_memcached(
    n: int = 2, item_size: str | None = None, port: int | None = None
) -> ServerGroup:
    """Start ``n`` independent memcached servers (64 MB, no UDP).

    ``item_size`` is memcached's ``-I`` (largest item, "1m" by default); ``port``
    (with ``n=1``) starts it on a given port, e.g. again after ``stop()``.
    """
    binary = _binary("memcached")
    procs = _Processes("memcached")
    extra = ["-I", item_size] if item_size else []
    try:
        ports = [
            procs.launch(
                # -u root: memcached refuses to run as root without it.
                lambda p: [binary, "-l", HOST, "-p", str(p), "-U", "0", "-m", "64", "-u", "root",
                           *extra],
                lambda p: _ask(p, b"version\r\n").startswith(b"VERSION"),
                port=port,
            )
            for _ in range(n)
        ]
    except BaseException:
        procs.stop()
        raise
    return ServerGroup([(HOST, p) for p in ports], procs)


def _redis_argv(binary: str, workdir: str, cluster: bool = False) -> Callable[[int], list[str]]:
    def argv(port: int) -> list[str]:
        # No persistence: these servers are throwaway and must restart empty.
        args = [binary, "--port", str(port), "--bind", HOST, "--dir", workdir]
        args += ["--save", "", "--appendonly", "no"]
        if cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
        return args

    return argv


def start_redis_cluster(masters: int = 3) -> ServerGroup:
    """Start a real Redis Cluster of ``masters`` masters and no replicas."""
    binary = _binary("redis-server")
    _binary("redis-cli")
    procs = _Processes("redis-cluster")
    try:
        ports = [
            procs.launch(
                _redis_argv(binary, procs.dir, cluster=True),
                _redis_pings,
                with_bus=True,  # the cluster bus listens on port + 10000
            )
            for _ in range(masters)
        ]
        out = _redis_cli(
            ports[0],
            "--cluster",
            "create",
            *(f"{HOST}:{p}" for p in ports),
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        )
        if "[OK] All 16384 slots covered" not in out:
            raise ServerUnavailable(f"redis-cli --cluster create failed:\n{out[-800:]}")

        def settled() -> bool:
            # Every node must see the whole cluster, or clients get MOVED loops.
            return all(
                "cluster_state:ok" in (info := _redis_cli(p, "cluster", "info"))
                and f"cluster_known_nodes:{masters}" in info
                for p in ports
            )

        _wait(settled, "redis cluster state ok")
    except BaseException:
        procs.stop()
        raise
    return ServerGroup([(HOST, p) for p in ports], procs)


class RedisServer:
    """A standalone throwaway redis-server; ``restart()`` keeps its port."""

    def __init__(self, port: int | None = None) -> None:
        self._binary = _binary("redis-server")
        self._processes = _Processes("redis")
        self.host = HOST
        try:
            self.port = self._processes.launch(
                _redis_argv(self._binary, self._processes.dir), _redis_pings, port=port
            )
        except BaseException:
            self._processes.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def stop(self) -> None:
        self._processes.stop()

    def restart(self) -> None:
        """Stop if running, then start again (empty) on the same port."""
        self._processes.kill(self.port)
        _Processes._live.add(self._processes)  # re-arm atexit after a stop()
        self._processes.launch(
            _redis_argv(self._binary, self._processes.dir), _redis_pings, port=self.port
        )


def start_redis(port: int | None = None) -> RedisServer:
    """Start a standalone redis-server (for outage tests: stop()/restart())."""
    return RedisServer(port)


class RedisSentinel:
    """A redis master plus one sentinel (quorum 1) monitoring it, and ``replicas``
    replicas of the master (a failover needs one).

    Unpacks as ``(sentinel_host, sentinel_port, master_name)``.
    """

    def __init__(self, master_name: str = "sessionkeeper", replicas: int = 0) -> None:
        self._binary = binary = _binary("redis-server")
        _binary("redis-cli")
        self._processes = procs = _Processes("redis-sentinel")
        self.host = HOST
        self.master_name = master_name
        try:
            self.master_port = procs.launch(_redis_argv(binary, procs.dir), _redis_pings)
            self.replica_ports = [self._start_replica() for _ in range(replicas)]

            def sentinel_argv(p: int) -> list[str]:
                # Sentinel rewrites its config file, so it must be a real file.
                conf = os.path.join(procs.dir, f"sentinel-{p}.conf")
                with open(conf, "w") as f:
                    f.write(
                        f"port {p}\nbind {HOST}\ndir {procs.dir}\n"
                        f"sentinel monitor {master_name} {HOST} {self.master_port} 1\n"
                        f"sentinel down-after-milliseconds {master_name} 5000\n"
                    )
                return [binary, conf, "--sentinel"]

            self.port = procs.launch(sentinel_argv, _redis_pings)

            def connected() -> bool:
                # Until the sentinel has talked to the master its flags include
                # "disconnected" and clients may not trust its answer yet.
                lines = _redis_cli(self.port, "sentinel", "master", master_name).split()
                return "flags" in lines and lines[lines.index("flags") + 1] == "master"

            _wait(connected, "redis sentinel connected to its master")
            if replicas:
                # The sentinel learns of replicas from the master's INFO (every 10 s).
                _wait(lambda: _redis_cli(self.port, "sentinel", "replicas", master_name)
                      .count("slave") >= replicas, "redis sentinel seeing the replicas")
        except BaseException:
            procs.stop()
            raise

    def _start_replica(self) -> int:
        argv = _redis_argv(self._binary, self._processes.dir)

        def replica_argv(port: int) -> list[str]:
            return [*argv(port), "--replicaof", HOST, str(self.master_port)]

        port = self._processes.launch(replica_argv, _redis_pings)
        _wait(lambda: "master_link_status:up" in _redis_cli(port, "info", "replication"),
              "redis replica in sync")
        return port

    def __iter__(self) -> Iterator[str | int]:
        return iter((self.host, self.port, self.master_name))

    def kill_master(self) -> None:
        """Stop the current master (its replicas and the sentinel stay)."""
        self._processes.kill(self.master_port)

    def failover(self) -> None:
        """Make a replica the master now (not after the sentinel's 5 s of silence) and
        wait until the sentinel names it and it accepts writes."""
        previous = self.master_port
        answers: list[str] = []

        def started() -> bool:
            # NOGOODSLAVE until the sentinel has seen the replica in the master's INFO,
            # which it reads every 10 s: ask again until it has.
            answers.append(_redis_cli(self.port, "sentinel", "failover", self.master_name))
            if "NOGOODSLAVE" in answers[-1]:
                return False
            if "OK" not in answers[-1] and "INPROG" not in answers[-1]:
                raise ServerUnavailable(f"sentinel failover refused: {answers[-1]}")
            return True

        _wait(started, "a replica the sentinel can promote")

        def promoted() -> bool:
            # SENTINEL MASTER, not GET-MASTER-ADDR-BY-NAME: that names the promoted
            # replica before the failover ends, the master list (which clients read) after.
            fields = _redis_cli(self.port, "sentinel", "master", self.master_name).split()
            state = dict(zip(fields[::2], fields[1::2], strict=False))
            if state.get("port") in (None, str(previous)) or state.get("flags") != "master":
                return False
            self.master_port = int(state["port"])
            return "role:master" in _redis_cli(self.master_port, "info", "replication")

        _wait(promoted, "redis sentinel failover")

    def stop(self) -> None:
        self._processes.stop()


def start_redis_sentinel(replicas: int = 0) -> RedisSentinel:
    """Start a dedicated redis master, ``replicas`` replicas of it and one sentinel
    monitoring it."""
    return RedisSentinel(replicas=replicas)


_mongod_url: str | None = None


def mongodb_url() -> str | None:
    """``$MONGODB_URL``, else a throwaway local ``mongod`` if one is installed.

    Returns None when neither exists; raises ``ServerUnavailable`` if a found
    mongod will not start.  The mongod is started once per process and reused
    (it is slow to start) and killed at exit.
    """
    global _mongod_url
    if os.environ.get("MONGODB_URL"):
        return os.environ["MONGODB_URL"]
    if _mongod_url is None and (binary := shutil.which("mongod")) is not None:
        procs = _Processes("mongod")
        args = ["--bind_ip", HOST, "--dbpath", procs.dir, "--nounixsocket", "--quiet"]
        try:
            # Accepting TCP is enough: pymongo waits until it is fully serving.
            port = procs.launch(lambda p: [binary, "--port", str(p), *args], _accepts)
        except BaseException:
            procs.stop()
            raise
        _mongod_url = f"mongodb://{HOST}:{port}/"
    return _mongod_url


def _accepts(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1).close()
    except OSError:
        return False
    return True


# -- dynalite (a DynamoDB-compatible server) -------------------------------------------
#: where .ci/dynalite.sh installs it (npm, not on PATH)
DYNALITE_PREFIX = "/opt/sessionkeeper-node"
DYNALITE_BINARY = os.path.join(DYNALITE_PREFIX, "node_modules", ".bin", "dynalite")
DYNALITE_INSTALL = f"npm install --prefix {DYNALITE_PREFIX} dynalite"


class PgBouncer:
    """PgBouncer in transaction pooling mode in front of the machine's PostgreSQL: each
    transaction (each autocommit statement) may run on another server connection."""

    def __init__(self, port: int, processes: _Processes) -> None:
        self.port = port
        self._processes = processes

    def url(self, database: str = "test") -> str:
        return f"postgresql+psycopg2://postgres@{HOST}:{self.port}/{database}"

    def admin(self, command: str) -> None:
        """Run a command on PgBouncer's console (RECONNECT, PAUSE, ...)."""
        import psycopg2

        connection = psycopg2.connect(host=HOST, port=self.port, user="postgres",
                                      dbname="pgbouncer")
        try:
            connection.autocommit = True  # the console takes no transactions
            with connection.cursor() as cursor:
                cursor.execute(command)
        finally:
            connection.close()

    def stop(self) -> None:
        self._processes.stop()


def start_pgbouncer(database: str = "test", server_port: int = 5432) -> PgBouncer:
    """PgBouncer (Debian's ``pgbouncer``) on a spare port, pooling ``database`` of the
    PostgreSQL on ``server_port`` as user postgres, in transaction mode."""
    binary = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if binary is None:
        raise ServerUnavailable("`pgbouncer` binary not found (apt-get install pgbouncer)")
    procs = _Processes("pgbouncer")
    # It refuses to run as root: started as root it switches to postgres (-u), who
    # must read its configuration in the processes' directory.
    as_root = os.geteuid() == 0
    if as_root:
        os.chmod(procs.dir, 0o755)

    def argv(port: int) -> list[str]:
        ini = os.path.join(procs.dir, f"pgbouncer-{port}.ini")
        with open(ini, "w") as f:
            f.write(f"[databases]\n{database} = host={HOST} port={server_port} "
                    f"dbname={database} user=postgres\n"
                    f"[pgbouncer]\nlisten_addr = {HOST}\nlisten_port = {port}\n"
                    "unix_socket_dir =\nauth_type = any\npool_mode = transaction\n"
                    "default_pool_size = 4\nserver_reset_query =\nadmin_users = postgres\n")
        os.chmod(ini, 0o644)
        return [binary, *(["-u", "postgres"] if as_root else []), ini]

    try:
        port = procs.launch(argv, _accepts)
    except BaseException:
        procs.stop()
        raise
    return PgBouncer(port, procs)


class DynaliteServer:
    """A throwaway dynalite; ``restart()`` keeps its port, and its tables when started
    ``persistent`` (LevelDB files in its temp dir; otherwise it keeps them in memory).

    Tables become ACTIVE after ``create_table_ms`` (0: at once; AWS takes seconds,
    which the store waits for, and the tests need not spend).
    """

    def __init__(self, port: int | None = None, *, persistent: bool = False,
                 create_table_ms: int = 0) -> None:
        if not os.access(DYNALITE_BINARY, os.X_OK):
            raise ServerUnavailable(f"dynalite ({DYNALITE_INSTALL})")
        self._processes = _Processes("dynalite")
        self.host = HOST
        self._options = ["--createTableMs", str(create_table_ms), "--deleteTableMs", "0",
                         "--updateTableMs", "0"]
        if persistent:
            self._options += ["--path", os.path.join(self._processes.dir, "data")]
        try:
            self.port = self._processes.launch(self._argv, _accepts, port=port)
        except BaseException:
            self._processes.stop()
            raise

    def _argv(self, port: int) -> list[str]:
        return [DYNALITE_BINARY, "--host", HOST, "--port", str(port), *self._options]

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self._processes.stop()

    def kill(self) -> None:
        """Stop the server but keep its files, for ``restart()``."""
        self._processes.kill(self.port)

    def restart(self) -> None:
        """Stop if running, then start again on the same port."""
        self._processes.kill(self.port)
        _Processes._live.add(self._processes)  # re-arm atexit after a stop()
        self._processes.launch(self._argv, _accepts, port=self.port)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections open, nothing answers."""
        self._processes.procs[self.port].send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._processes.procs[self.port].send_signal(signal.SIGCONT)


def start_dynalite(port: int | None = None, *, persistent: bool = False,
                   create_table_ms: int = 0) -> DynaliteServer:
    """Start dynalite on a spare port; ``ServerUnavailable`` names the install command
    when it is missing (``start_or_skip`` turns that into a skip, or a CI failure)."""
    return DynaliteServer(port, persistent=persistent, create_table_ms=create_table_ms)
