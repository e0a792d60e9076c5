"""gunicorn server lifecycle, the /login handshake, and wrk runs with result parsing."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import (
    BENCH_DIR,
    ENV_SETTINGS,
    ENV_VARIANT,
    BenchSettings,
    free_port,
    is_asgi_variant,
    subprocess_env,
)


class BenchError(RuntimeError):
    """A variant could not be measured; the message goes into the report."""


@dataclass(frozen=True)
class HttpReply:
    status: int
    body: str
    cookies: tuple[str, ...]  # "name=value" pairs from Set-Cookie


def http_get(port: int, path: str, cookie: str = "", timeout_s: float = 5.0) -> HttpReply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        response = conn.getresponse()
        body = response.read().decode("utf-8", "replace")
        set_cookies = response.headers.get_all("Set-Cookie") or []
        pairs = tuple(header.split(";", 1)[0].strip() for header in set_cookies)
        return HttpReply(response.status, body, pairs)
    finally:
        conn.close()


def prepare_variant(variant: str, settings: BenchSettings, timeout_s: float = 60.0) -> None:
    """Build the app once in a child process (creates tables); raise with its error line."""
    env = subprocess_env({ENV_SETTINGS: settings.to_env()})
    script = "asgi_app.py" if is_asgi_variant(variant) else "app.py"
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name(script)), variant],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise BenchError(f"app setup failed: {lines[-1].strip() if lines else proc.returncode}")


class GunicornServer:
    """`gunicorn -w N -k sync` (Flask) or `uvicorn --workers N` (ASGI) for one variant on
    a spare loopback port."""

    def __init__(self, variant: str, settings: BenchSettings, workers: int, log_path: Path):
        self.variant = variant
        self.settings = settings
        self.workers = workers
        self.log_path = log_path
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout_s: float = 30.0) -> None:
        env = subprocess_env({ENV_VARIANT: self.variant, ENV_SETTINGS: self.settings.to_env()})
        # Own session so a stuck server can be stopped as a group by its own id.
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.command(),
                cwd=BENCH_DIR,  # so no stray ./gunicorn.conf.py from the caller's cwd applies
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log if is_asgi_variant(self.variant) else subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait_until_ready(ready_timeout_s)

    def command(self) -> list[str]:
        """gunicorn's sync workers for the Flask variants; uvicorn's worker processes
        (the same number) for the ASGI ones."""
        if is_asgi_variant(self.variant):
            return [sys.executable, "-m", "uvicorn", "--factory", "asgi_app:create_app_from_env",
                    "--workers", str(self.workers), "--host", "127.0.0.1",
                    "--port", str(self.port), "--log-level", "warning", "--no-access-log"]
        return [sys.executable, "-m", "gunicorn", "--workers", str(self.workers),
                "--worker-class", "sync", "--bind", f"127.0.0.1:{self.port}",
                "--log-level", "warning", "--error-logfile", str(self.log_path),
                "app:create_app_from_env()"]

    def _wait_until_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise BenchError(f"gunicorn exited: {self.log_tail()}")
            try:
                if http_get(self.port, "/ping", timeout_s=2.0).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise BenchError(f"gunicorn not ready after {timeout_s:.0f}s: {self.log_tail()}")

    def log_tail(self, lines: int = 1) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        meaningful = [line.strip() for line in text.splitlines() if line.strip()]
        return " | ".join(meaningful[-lines:]) or "(empty log)"

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        if proc.poll() is None:
            proc.terminate()  # gunicorn master stops its workers on SIGTERM
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the group we created for this server
                proc.wait(timeout=timeout_s)


def obtain_session_cookies(port: int, sessions: int) -> list[str]:
    """GET /login once per simulated client; Cookie header values, one per session."""
    cookies = []
    for _ in range(sessions):
        reply = http_get(port, "/login")
        if reply.status != 200 or not reply.cookies:
            raise BenchError(f"/login gave status {reply.status}, cookies {reply.cookies!r}")
        cookies.append("; ".join(reply.cookies))
    return cookies


def check_route(port: int, path: str, cookie: str, expected_body: str | None) -> None:
    """Fail early if a route errors or (for /read) the cookie does not carry the session."""
    reply = http_get(port, path, cookie)
    if reply.status != 200:
        raise BenchError(f"{path} returned HTTP {reply.status}")
    if expected_body is not None and reply.body != expected_body:
        raise BenchError(f"{path} returned {reply.body!r}, expected {expected_body!r}")


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    requests_per_s: float
    non_2xx: int
    socket_errors: int


_REQUESTS_RE = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b")
_RPS_RE = re.compile(r"Requests/sec:\s+([\d.]+)")
_NON_2XX_RE = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_RE = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def parse_wrk_output(text: str) -> WrkResult:
    requests_match = _REQUESTS_RE.search(text)
    rps_match = _RPS_RE.search(text)
    if requests_match is None or rps_match is None:
        raise BenchError(f"could not parse wrk output: {text.strip()[-200:]!r}")
    non_2xx = _NON_2XX_RE.search(text)
    socket = _SOCKET_RE.search(text)
    return WrkResult(
        requests=int(requests_match.group(1)),
        seconds=float(requests_match.group(2)) * _UNIT_SECONDS[requests_match.group(3)],
        requests_per_s=float(rps_match.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in socket.groups()) if socket else 0,
    )


SESSIONS_SCRIPT = Path(__file__).with_name("sessions.lua")


@dataclass(frozen=True)
class WrkLoad:
    """The load shape: wrk threads and connections, and the session cookies to rotate."""

    threads: int
    connections: int
    cookies: tuple[str, ...] = ()


def run_wrk(port: int, path: str, duration_s: int, load: WrkLoad) -> WrkResult:
    # Every variant goes through the same Lua script, so wrk's own cost is equal.
    command = [
        "wrk",
        f"-t{load.threads}",
        f"-c{load.connections}",
        f"-d{duration_s}s",
        "--timeout",
        "5s",
        "-s",
        str(SESSIONS_SCRIPT),
        f"http://127.0.0.1:{port}{path}",
        str(load.threads),
        *load.cookies,
    ]
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=duration_s + 30, check=False
    )
    if proc.returncode != 0:
        raise BenchError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()[-200:]}")
    return parse_wrk_output(proc.stdout)
