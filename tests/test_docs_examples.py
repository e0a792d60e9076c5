"""Every ```python block of README.md and docs/ runs as a reader would run it.

Each block is written to ``example.py`` in a fresh temporary folder (so ``./flask_session``,
``instance/`` and SQLite files land there) and run in its own Python process, as
``python example.py`` would run it, with a timeout. It must exit with status 0.

What it prints is checked against what the page says it prints:

- a ``print(...)`` followed by a comment, on its last line or on the comment-only lines
  right after it, must print that comment. ``<id>``-style words and ``...`` stand for any
  text, and ``output: note`` may add a note after a colon;
- a block followed by a paragraph ``prints:`` (or ``prints, ...:``) and a fenced block must
  print exactly that block (with the same placeholders).

Servers: Redis on 127.0.0.1:6379 is used where a page says so (a block that logs users in
there reads its ``SESSION_KEY_PREFIX`` from the environment and gets a fresh one).
memcached, dynalite, Redis Sentinel and Redis Cluster are started here, only for the blocks
that read their address from an environment variable
(``os.environ.get("MEMCACHED", "127.0.0.1:11211")``), so the pages stay runnable as written
against a reader's own servers.

docs/stores/sqlalchemy.md and docs/stores/cachelib.md are run by their stores' tests
(``test_documentation_examples_run``), against those stores' servers.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import secrets
import subprocess
import sys
import tokenize
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from servers import (
    HOST,
    RedisSentinel,
    mongodb_url,
    start_dynalite,
    start_memcached,
    start_or_skip,
    start_redis_cluster,
)

ROOT = Path(__file__).parents[1]
#: run with their store's tests, against that store's servers
RUN_ELSEWHERE = {"docs/stores/sqlalchemy.md", "docs/stores/cachelib.md"}
TIMEOUT = 120  # seconds per block; the machine may be busy
#: blocks that fail because of a library bug, not the example: (page, text in the block)
KNOWN_BUGS: dict[tuple[str, str], str] = {}

FENCE = re.compile(r"^```(\S*)\s*$")
#: fences that say what they hold is not a program to run
NOT_RUN = {"text", "sh", "console", "pycon", "sql", "js", "json", ""}
PRINTS_INTRO = re.compile(r"^prints\b[^\n]*:$", re.IGNORECASE)
ENV_NAME = re.compile(r"""os\.environ(?:\.get\(|\[)\s*["'](\w+)["']""")


@dataclass(frozen=True)
class Block:
    page: str  # path from the repository root
    line: int  # line of the page where the code starts
    code: str
    prints: str | None  # the whole output the page shows after it, if it does

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    def numbered(self) -> str:
        lines = self.code.splitlines()
        return "\n".join(f"{self.line + i:5} | {text}" for i, text in enumerate(lines))


def fenced_blocks(page: str) -> Iterator[tuple[str, int, str, int]]:
    """(info string, first code line, code, line after the closing fence) of each block."""
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    opened: tuple[str, int] | None = None
    for number, text in enumerate(lines, start=1):
        fence = FENCE.match(text)
        if not fence:
            continue
        if opened is None:
            opened = (fence.group(1), number + 1)
        else:
            info, start = opened
            yield info, start, "\n".join(lines[start - 1:number - 1]) + "\n", number + 1
            opened = None


def page_blocks(page: str) -> list[Block]:
    text_lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    fences = list(fenced_blocks(page))
    blocks = []
    for index, (info, start, code, after) in enumerate(fences):
        if info != "python":
            continue
        shown = None
        if index + 1 < len(fences):
            _, next_start, next_code, _ = fences[index + 1]
            between = " ".join(text_lines[after - 1:next_start - 2]).strip()
            if PRINTS_INTRO.match(between):
                shown = next_code
        blocks.append(Block(page, start, code, shown))
    return blocks


def pages() -> list[str]:
    found = ["README.md", *(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md"))]
    return sorted(page for page in found if page not in RUN_ELSEWHERE)


BLOCKS = [block for page in pages() for block in page_blocks(page)]


def marked(block: Block) -> object:
    for (page, text), reason in KNOWN_BUGS.items():
        if page == block.page and text in block.code:
            return pytest.param(block, id=block.id,
                                marks=pytest.mark.xfail(strict=True, reason=reason))
    return pytest.param(block, id=block.id)


# -- servers the blocks ask for by environment variable ------------------------------------
class Servers:
    """Starts each server the first time a block needs it; stopped with the module."""

    def __init__(self) -> None:
        self._env: dict[str, str] = {}
        self._stops: list[Callable[[], None]] = []
        self._starters: dict[str, Callable[[], str]] = {
            "MEMCACHED": self._memcached,
            "MEMCACHED_SERVERS": self._memcached_pair,
            "REDIS_URL": lambda: f"redis://{HOST}:6379/0",
            "ASYNC_POSTGRESQL_URL": lambda: f"postgresql+asyncpg://postgres@{HOST}:5432/test",
            # Flask-SQLAlchemy puts a relative SQLite file in the block's instance folder
            "DATABASE_URL": lambda: "sqlite:///app.sqlite3",
            "REDIS_SENTINEL": self._sentinel,
            "REDIS_CLUSTER": self._cluster,
            "DYNAMODB_ENDPOINT": self._dynalite,
            "MONGODB_URL": self._mongodb,
        }

    def env_for(self, code: str) -> dict[str, str]:
        env = {}
        for name in dict.fromkeys(ENV_NAME.findall(code)):
            if name == "SESSION_KEY_PREFIX":  # a block on a shared server: its own keys
                env[name] = f"docs-{secrets.token_hex(6)}:"
                continue
            if name not in self._starters:
                pytest.fail(f"no server for the environment variable {name} an example reads")
            if name not in self._env:
                self._env[name] = self._starters[name]()
            env[name] = self._env[name]
        if "DYNAMODB_ENDPOINT" in env:
            # dynalite takes any credentials; the example's boto3 finds these as on AWS.
            env.update(AWS_ACCESS_KEY_ID="docs-example", AWS_SECRET_ACCESS_KEY="docs-example")
        return env

    def _memcached(self) -> str:
        group = start_or_skip(start_memcached, 1)
        self._stops.append(group.stop)
        return ",".join(f"{host}:{port}" for host, port in group)

    def _memcached_pair(self) -> str:
        group = start_or_skip(start_memcached, 2)
        self._stops.append(group.stop)
        return ",".join(f"{host}:{port}" for host, port in group)

    def _sentinel(self) -> str:
        sentinel = start_or_skip(RedisSentinel, "mymaster")
        self._stops.append(sentinel.stop)
        return f"{sentinel.host}:{sentinel.port}"

    def _cluster(self) -> str:
        cluster = start_or_skip(start_redis_cluster)
        self._stops.append(cluster.stop)
        host, port = cluster[0]
        return f"{host}:{port}"

    def _dynalite(self) -> str:
        server = start_or_skip(start_dynalite)
        self._stops.append(server.stop)
        return server.endpoint_url

    def _mongodb(self) -> str:
        url = mongodb_url()
        if url is None:
            pytest.skip("no MongoDB server: set MONGODB_URL to a real server")
        return url

    def stop(self) -> None:
        for stop in reversed(self._stops):
            stop()


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    started = Servers()
    yield started
    started.stop()


# -- running a block -----------------------------------------------------------------------
# Runs example.py as `python example.py` would, and records what each print() call of the
# example itself wrote, with the line it was called from, for the checks below.
RUNNER = """
import builtins, io, json, runpy, sys
path, record = sys.argv[1], sys.argv[2]
printed = []
real_print = builtins.print

def print(*args, **kwargs):
    caller = sys._getframe(1)
    if caller.f_code.co_filename == path and kwargs.get("file") in (None, sys.stdout):
        text = io.StringIO()
        real_print(*args, **{**kwargs, "file": text, "flush": False})
        printed.append([caller.f_lineno, text.getvalue()])
    real_print(*args, **kwargs)

builtins.print = print
sys.argv = [path]
try:
    runpy.run_path(path, run_name="__main__")
finally:
    with open(record, "w") as f:
        json.dump(printed, f)
"""


@dataclass(frozen=True)
class Run:
    returncode: int | str
    stdout: str
    stderr: str
    printed: list[tuple[int, str]]


def run(block: Block, folder: Path, env: dict[str, str]) -> Run:
    script = folder / "example.py"
    # Blank lines first, so tracebacks and the print records give the page's line numbers.
    script.write_text("\n" * (block.line - 1) + block.code, encoding="utf-8")
    record = folder.parent / f"{folder.name}-printed.json"
    try:
        done = subprocess.run(
            [sys.executable, "-c", RUNNER, str(script), str(record)],
            cwd=folder, env={**os.environ, **env}, capture_output=True, text=True,
            timeout=TIMEOUT, check=False,
        )
    except subprocess.TimeoutExpired as timeout:
        return Run(f"timeout after {TIMEOUT}s", _text(timeout.stdout), _text(timeout.stderr), [])
    printed = json.loads(record.read_text()) if record.exists() else []
    return Run(done.returncode, done.stdout, done.stderr,
               [(line, text) for line, text in printed])


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


# -- what the page says a block prints -----------------------------------------------------
def expected_prints(source: str) -> dict[tuple[int, int], str]:
    """For each print(...) call with an output comment: its lines -> that comment."""
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string[1:].strip()
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                                tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.add(token.start[0])
    expected = {}
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "print" and node.end_lineno is not None):
            continue
        last = node.end_lineno
        if last in comments:
            parts = [comments[last]]
        else:  # or the comment-only lines right after the call
            parts, following = [], last + 1
            while following in comments and following not in code_lines:
                parts.append(comments[following])
                following += 1
        if parts:
            expected[(node.lineno, last)] = " ".join(parts)
    return expected


def pattern(shown: str) -> re.Pattern[str]:
    """``<name>`` and ``...`` match any text; runs of white space any white space."""
    regex = ""
    for piece in re.split(r"(<[\w .-]+>|\.\.\.|…|\s+)", shown):
        if not piece:
            continue
        if piece in ("...", "…") or (piece.startswith("<") and piece.endswith(">")):
            regex += ".*?"
        elif piece.isspace():
            regex += r"\s+"
        else:
            regex += re.escape(piece)
    return re.compile(regex, re.DOTALL)


def matches(output: str, comment: str) -> bool:
    """The output is the comment, or the comment's part before one of its ": " notes."""
    output = " ".join(output.split())
    candidates = [comment] + [comment[:m.start()] for m in re.finditer(": ", comment)]
    return any(pattern(shown).fullmatch(output) for shown in candidates if shown)


def print_mismatches(block: Block, outcome: Run) -> list[str]:
    source = "\n" * (block.line - 1) + block.code
    problems = []
    for (first, last), comment in sorted(expected_prints(source).items()):
        outputs = [text for line, text in outcome.printed if first <= line <= last]
        if not outputs:
            problems.append(f"line {first}: never printed; the page says: {comment}")
        for text in outputs:
            if not matches(text, comment):
                problems.append(f"line {first}: printed {text.rstrip()!r}\n"
                                f"    but the page says: {comment}")
    if block.prints is not None and not same_lines(outcome.stdout, block.prints):
        problems.append(f"the output differs from the one shown after the block:\n{block.prints}")
    return problems


def same_lines(output: str, shown: str) -> bool:
    got, want = output.rstrip("\n").splitlines(), shown.rstrip("\n").splitlines()
    return len(got) == len(want) and all(
        pattern(" ".join(expected.split())).fullmatch(" ".join(line.split()))
        for line, expected in zip(got, want, strict=True))


@pytest.mark.parametrize("block", [marked(block) for block in BLOCKS])
def test_example_runs_and_prints_what_the_page_says(block: Block, servers: Servers,
                                                    tmp_path: Path) -> None:
    env = servers.env_for(block.code)
    folder = tmp_path / "example"
    folder.mkdir()
    outcome = run(block, folder, env)
    report = (f"{block.page}, the block at line {block.line}:\n{block.numbered()}\n\n"
              f"exit status: {outcome.returncode}\n"
              f"--- stdout ---\n{outcome.stdout}--- stderr ---\n{outcome.stderr}")
    assert outcome.returncode == 0, report
    problems = print_mismatches(block, outcome)
    assert not problems, "\n".join(problems) + "\n\n" + report


def test_every_page_with_examples_is_found() -> None:
    found = {block.page for block in BLOCKS}
    assert {"README.md", "docs/cookies.md", "docs/accounts.md"} <= found
    assert not found & RUN_ELSEWHERE


@pytest.mark.parametrize("page", pages())
def test_no_python_block_escapes_the_run(page: str) -> None:
    """Python code is fenced ```python (run here) or as a console session (```pycon):
    not ```py, not indented in a list, where the run above would not find it."""
    odd = [f"line {start - 1}: ```{info}" for info, start, _, _ in fenced_blocks(page)
           if info not in NOT_RUN | {"python"}]
    text = (ROOT / page).read_text(encoding="utf-8")
    odd += [f"line {text.count(chr(10), 0, m.start()) + 1}: an indented fence"
            for m in re.finditer(r"^[ \t]+```", text, re.MULTILINE)]
    assert not odd, f"{page}: {odd}"
