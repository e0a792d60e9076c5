"""The store server's own time per request: what instruction counts of the app leave out.

``inprocess.py --instructions`` counts the app's process only; Redis, PostgreSQL and
MariaDB work in their own processes, which on the benchmark's machine share its cores
with the app. This runs the same in-process WSGI loop (N calls of one route, a
logged-in session) while the server logs each statement with its time, and prints the
median per statement and the total per request:

    python benchmarks/server_time.py sk-redis /write          # SLOWLOG at 0 us
    python benchmarks/server_time.py sk-mariadb /write        # the slow query log at 0 s
    python benchmarks/server_time.py sk-postgresql /read      # log_min_duration_statement 0

Redis' slow log gives each command's time (a script's includes the commands it runs,
listed in parentheses); MariaDB's slow log and PostgreSQL's statement log give each
statement's, from its arrival to its answer, commit included. Redis runs privately for
the measurement (no other client in its log); both databases get their logging settings
back afterwards. PostgreSQL needs a superuser URL and its log file
(``--postgresql-log``, Debian's by default).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import os
import re
import secrets
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from typing import Any

from common import REDIS_HOST, SRC_DIR, BenchSettings
from stores import redis_server

POSTGRESQL_LOG = "/var/log/postgresql/postgresql-15-main.log"
#: the variants on the single Redis server (the cluster's are on their own ports)
REDIS_VARIANTS = ("raw-redis", "sk-redis", "fs-redis")
#: what the benchmark's tables are called begin with (statements on others: not the app's)
BENCH_TABLES = "sessionkeeper_bench"
#: a statement sent when the measured requests start: the logs are read from there on
START_MARK = "SELECT 'sessionkeeper-server-time-start'"
#: seconds per statement, by kind ("SELECT", "UPDATE", "(HSET)" run by a script, ...)
Times = dict[str, list[float]]


class ServerLog:
    """Turns a server's statement logging on for the app's connections (before they
    open: some servers copy the setting into each session), marks where the measured
    requests start, and reads the times back."""

    def start(self) -> None: ...

    def mark(self) -> None: ...

    def times(self) -> Times:
        raise NotImplementedError

    def stop(self) -> None: ...


class RedisSlowlog(ServerLog):
    def __init__(self, port: int, calls: int) -> None:
        import redis

        self.client = redis.Redis(host=REDIS_HOST, port=port)
        self.calls = calls

    def start(self) -> None:
        self.client.config_set("slowlog-max-len", str(self.calls * 10))
        self.client.config_set("slowlog-log-slower-than", "0")

    def mark(self) -> None:
        self.client.slowlog_reset()

    def times(self) -> Times:
        times: Times = defaultdict(list)
        for entry in self.client.slowlog_get(self.calls * 10):
            command = entry["command"].split(b" ", 1)[0].decode().upper()
            if command in ("CONFIG", "SLOWLOG"):
                continue
            if entry.get("client_address") == b"?:0":  # run by a script: in its time
                command = f"({command})"
            times[command].append(entry["duration"] / 1e6)
        return times

    def stop(self) -> None:
        self.client.close()


class MariaDBSlowLog(ServerLog):
    def __init__(self, url: str) -> None:
        import pymysql
        from sqlalchemy.engine import make_url

        parts = make_url(url)
        self.connection = pymysql.connect(
            host=parts.host, port=parts.port or 3306, user=parts.username,
            password=parts.password or "", autocommit=True)
        directory = tempfile.mkdtemp(prefix="sk-slowlog-")
        os.chmod(directory, 0o777)  # mysqld writes the log
        self.path = os.path.join(directory, "slow.log")
        self.before: tuple[Any, ...] = ()

    def _run(self, *statements: tuple[str, tuple[Any, ...]]) -> None:
        with self.connection.cursor() as cursor:
            for statement, args in statements:
                cursor.execute(statement, args)

    def start(self) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT @@slow_query_log, @@slow_query_log_file, @@long_query_time")
            self.before = cursor.fetchone()
        # long_query_time is copied into each new session: set before the app connects.
        self._run(("SET GLOBAL slow_query_log_file = %s", (self.path,)),
                  ("SET GLOBAL long_query_time = 0", ()),
                  ("SET GLOBAL slow_query_log = 1", ()))

    def mark(self) -> None:
        # This connection was opened before: its own copies of the settings.
        self._run(("SET SESSION slow_query_log = 1", ()), ("SET long_query_time = 0", ()),
                  (START_MARK, ()))

    def times(self) -> Times:
        with open(self.path, errors="replace") as log:
            text = log.read().split(START_MARK, 1)[-1]
        times: Times = defaultdict(list)
        for seconds, statement in re.findall(
                r"# Query_time: ([\d.]+).*?\n(?:#.*\n|SET timestamp.*\n|use .*\n)*(.*)", text):
            if BENCH_TABLES in statement:  # the server's other clients left out
                times[statement.split(None, 1)[0].upper()].append(float(seconds))
        return times

    def stop(self) -> None:
        if self.before:
            self._run(("SET GLOBAL slow_query_log = %s", (self.before[0],)),
                      ("SET GLOBAL slow_query_log_file = %s", (self.before[1],)),
                      ("SET GLOBAL long_query_time = %s", (self.before[2],)))
        self.connection.close()


class PostgreSQLStatementLog(ServerLog):
    def __init__(self, url: str, log_path: str) -> None:
        import psycopg2
        from app import libpq_url

        self.connection = psycopg2.connect(libpq_url(url))
        self.connection.autocommit = True
        self.log_path = log_path
        self.offset = os.path.getsize(log_path)

    def _run(self, *statements: str) -> None:
        with self.connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)

    def start(self) -> None:
        self._run("ALTER SYSTEM SET log_min_duration_statement = 0", "SELECT pg_reload_conf()")
        time.sleep(0.2)  # the reload reaches each backend at its next statement

    def mark(self) -> None:
        self._run(START_MARK)

    def times(self) -> Times:
        with open(self.log_path, errors="replace") as log:
            log.seek(self.offset)
            before, _, text = log.read().rpartition(START_MARK)
        # What each prepared statement is (prepared while the app warmed up).
        kinds = {name: kind for name, kind, rest in re.findall(
            r"PREPARE (\w+) AS (\w+)(.*)", before) if BENCH_TABLES in rest}
        times: Times = defaultdict(list)
        for milliseconds, statement in re.findall(
                r"duration: ([\d.]+) ms\s+(?:statement|execute [^:]*): (.*)", text):
            kind, name = statement.split(" ", 1)[0].upper(), statement[8:].split("(")[0]
            if kind == "EXECUTE" and name in kinds:
                times[f"EXECUTE ({kinds[name].upper()})"].append(float(milliseconds) / 1000)
            elif BENCH_TABLES in statement:  # the server's other clients left out
                times[kind].append(float(milliseconds) / 1000)
        return times

    def stop(self) -> None:
        self._run("ALTER SYSTEM RESET log_min_duration_statement", "SELECT pg_reload_conf()")
        self.connection.close()


def measure(variant: str, route: str, calls: int, settings: BenchSettings,
            server_log: ServerLog) -> Times:
    """``calls`` requests of ``route`` after a warm-up, with ``server_log`` on."""
    from inprocess import build_call

    server_log.start()
    try:
        call = build_call(variant, route, settings)
        for _ in range(50):
            call()
        gc.collect()
        server_log.mark()
        for _ in range(calls):
            call()
        return server_log.times()
    finally:
        server_log.stop()


def report(variant: str, route: str, calls: int, times: Times) -> None:
    total = 0.0
    print(f"{variant} {route}: store server time, {calls} requests")
    for kind, seconds in sorted(times.items(), key=lambda item: -sum(item[1])):
        per_request = sum(seconds) / calls
        if not kind.startswith("("):  # "(HSET)": a script's, already in its time
            total += per_request
        print(f"  {kind:<18} {len(seconds) / calls:5.2f} per request, median "
              f"{statistics.median(seconds) * 1e6:7.1f} us, {per_request * 1e6:7.1f} us "
              "per request")
    print(f"  total              {total * 1e6:7.1f} us per request")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant")
    parser.add_argument("route", choices=("/read", "/write"))
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--postgresql-log", default=POSTGRESQL_LOG)
    parser.add_argument("--src", default=str(SRC_DIR))
    args = parser.parse_args(argv)
    sys.path.insert(0, args.src)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="sk-servertime-"))
        settings = BenchSettings(key_prefix=f"bench-servertime-{secrets.token_hex(4)}:",
                                 data_dir=tmp, counter_dir=tmp, memcached_port=0)
        server_log: ServerLog
        if args.variant in REDIS_VARIANTS:
            # A private server: no other client's commands in its log.
            server = redis_server()
            server.start()
            stack.callback(server.stop)
            settings = dataclasses.replace(settings, redis_port=server.port)
            server_log = RedisSlowlog(server.port, args.calls)
        elif "mariadb" in args.variant:
            server_log = MariaDBSlowLog(settings.mariadb_url)
        elif "postgresql" in args.variant:
            server_log = PostgreSQLStatementLog(settings.postgres_url, args.postgresql_log)
        else:
            parser.error(f"{args.variant}: no server log for its store")
        times = measure(args.variant, args.route, args.calls, settings, server_log)
    report(args.variant, args.route, args.calls, times)
    return 0


if __name__ == "__main__":
    sys.exit(main())
