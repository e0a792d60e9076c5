"""Instructions per request, above plain Flask, against budgets: a cost that does not move
with the machine's load.

Wall-clock ratios on a shared machine move by up to 0.1 between runs; the number of CPU
instructions one request executes moves by well under 1 %. For /ping, /read and /write on
sessionkeeper's memory, cookie and Redis stores, Flask's own cookie session and
Flask-Session on Redis, this counts them under callgrind (``inprocess.py --instructions``:
N direct WSGI calls, differenced against 2N so start-up cancels out) and subtracts plain
Flask's /ping (the same app with no session layer, which has no session to read or
write): what the session layer and the route's one line of session work add. Redis's
own work is in its server process and is not counted; the client's is.

Each sessionkeeper figure has a budget in ``instruction_budgets.json``; a change that adds
work shows up as a number over budget (``--check`` exits 1 then). Raise a budget only
with the reason in the commit that does.

A second table puts each store's /read and /write next to its raw variant (the driver
making the same round trips from a plain view, as in the wall-clock floors): the same
comparison without the machine's load in it, and where the session layer (the memory
store's figure) ends and the store begins. A store whose server is not answering is
shown as not measured.

    python benchmarks/instructions.py [--calls 300] [--jobs 2] [--memcached-port N]
                                      [--no-floors] [--markdown out.md] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from common import (
    BENCH_DIR,
    MARIADB_TABLE,
    MARIADB_URL,
    POSTGRES_TABLE,
    POSTGRES_URL,
    RAW_MARIADB_TABLE,
    RAW_POSTGRES_TABLE,
    REDIS_PORT,
    SRC_DIR,
)
from report import FLOORS as REPORT_FLOORS

ROUTES = ("/ping", "/read", "/write")
#: (variant, what the table calls it); plain Flask is the floor every other is above
VARIANTS = (
    ("plain", "plain Flask"),
    ("flask-cookie", "Flask's cookie session"),
    ("fs-redis", "Flask-Session, Redis"),
    ("sk-cookie", "sessionkeeper, cookie"),
    ("sk-memory", "sessionkeeper, memory"),
    ("sk-redis", "sessionkeeper, Redis"),
)
BUDGETS_FILE = BENCH_DIR / "instruction_budgets.json"
#: (store, sessionkeeper variant, raw variant): the wall-clock floors of report.py, but
#: DynamoDB's (botocore under callgrind takes minutes a count; its reasons are in report.py)
FLOORS = tuple(floor for floor in REPORT_FLOORS if floor[0] != "DynamoDB")
FLOOR_ROUTES = ("/read", "/write")
#: the session layer with a dict for a store: what every sessionkeeper variant carries
SESSION_LAYER = "sk-memory"


@dataclass(frozen=True)
class Count:
    variant: str
    route: str
    per_request: float


def count(variant: str, route: str, calls: int, src: str, memcached_port: int = 0) -> Count:
    """One variant's instructions per request on one route (a callgrind subprocess)."""
    proc = subprocess.run(
        [sys.executable, str(BENCH_DIR / "inprocess.py"), variant, route, "--instructions",
         "--calls", str(calls), "--redis-port", str(REDIS_PORT),
         "--memcached-port", str(memcached_port), "--src", src],
        capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} {route}: {proc.stderr[-2000:]}")
    # "sk-redis /read: 497,123 instructions per request"
    figure = proc.stdout.strip().splitlines()[-1].split(": ")[1].split()[0]
    return Count(variant, route, float(figure.replace(",", "")))


def measure(calls: int, jobs: int, src: str) -> dict[tuple[str, str], float]:
    work = [("plain", "/ping")] + [(variant, route) for variant, _ in VARIANTS[1:]
                                   for route in ROUTES]
    with ThreadPoolExecutor(jobs) as pool:  # each job is its own valgrind process
        counts = list(pool.map(lambda job: count(*job, calls, src), work))
    return {(c.variant, c.route): c.per_request for c in counts}


def measure_floors(calls: int, jobs: int, src: str, memcached_port: int,
                   known: dict[tuple[str, str], float]) -> dict[tuple[str, str], float | None]:
    """Each floor pair's counts (None: not measured, its server not answering), reusing
    what ``measure`` counted already."""
    wanted = {(variant, route) for _, ours, raw in FLOORS for variant in (ours, raw)
              for route in FLOOR_ROUTES} | {(SESSION_LAYER, route) for route in FLOOR_ROUTES}
    work = sorted(wanted - known.keys())

    def tolerant(job: tuple[str, str]) -> float | None:
        variant, route = job
        if "memcached" in variant and not memcached_port:
            return None
        try:
            return count(variant, route, calls, src, memcached_port).per_request
        except RuntimeError as exc:
            print(f"not measured: {str(exc)[-300:]}", file=sys.stderr)
            return None

    with ThreadPoolExecutor(jobs) as pool:
        figures = list(pool.map(tolerant, work))
    counted = dict(zip(work, figures, strict=True))
    return {**{job: known[job] for job in wanted & known.keys()}, **counted}


def floors_markdown(floors: dict[tuple[str, str], float | None]) -> str:
    def cell(figure: float | None) -> str:
        return "not measured" if figure is None else f"{figure / 1000:,.0f}k"

    lines = ["| store | route | sessionkeeper | raw driver, same round trips | raw ÷ "
             "sessionkeeper | sessionkeeper, memory store |", "|---|---|---:|---:|---:|---:|"]
    for store, ours, raw in FLOORS:
        for route in FLOOR_ROUTES:
            mine, floor = floors[(ours, route)], floors[(raw, route)]
            share = "—" if mine is None or floor is None else f"{floor / mine:.2f}"
            lines.append(f"| {store} | `{route}` | {cell(mine)} | {cell(floor)} | {share} | "
                         f"{cell(floors[(SESSION_LAYER, route)])} |")
    return "\n".join([
        "Each store against its raw floor (the raw variants of the wall-clock targets), in "
        "instructions per request through the whole app in process: the same comparison "
        "without the machine's load in it. The store servers' own work is not counted "
        "(SQLite's is: it runs in the process; of a file store's system calls, the "
        "kernel's side is not); the last column is the same session layer on the memory "
        "store, so what a row adds over it is the store's part:",
        "",
        *lines,
    ])


def above_plain(counts: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    floor = counts[("plain", "/ping")]
    return {(variant, route): figure - floor
            for (variant, route), figure in counts.items() if variant != "plain"}


def over_budget(above: dict[tuple[str, str], float],
                budgets: dict[str, dict[str, float]]) -> list[str]:
    """Every sessionkeeper figure above its budget, said as a sentence."""
    return [f"{variant} {route}: {above[(variant, route)]:,.0f} instructions above plain, "
            f"budget {budget:,.0f}"
            for variant, routes in budgets.items() for route, budget in routes.items()
            if above[(variant, route)] > budget]


def markdown(counts: dict[tuple[str, str], float], budgets: dict[str, dict[str, float]],
             calls: int) -> str:
    above = above_plain(counts)
    lines = [
        "| route | " + " | ".join(name for _, name in VARIANTS[1:]) + " |",
        "|---|" + "---:|" * (len(VARIANTS) - 1),
    ]
    for route in ROUTES:
        cells = []
        for variant, _ in VARIANTS[1:]:
            cell = f"{above[(variant, route)] / 1000:+,.0f}k"
            budget = budgets.get(variant, {}).get(route)
            if budget is not None:
                cell += f" (budget +{budget / 1000:,.0f}k)"
            cells.append(cell)
        lines.append(f"| `{route}` | " + " | ".join(cells) + " |")
    problems = over_budget(above, budgets)
    verdict = ("Every sessionkeeper figure is within its budget." if not problems else
               "Over budget: " + "; ".join(problems) + ".")
    return "\n".join([
        f"Instructions per request (callgrind, {calls} and {2 * calls} direct WSGI calls "
        f"differenced): what each session layer adds to plain Flask's /ping "
        f"({counts[('plain', '/ping')] / 1000:,.0f}k instructions); budgets from "
        "`benchmarks/instruction_budgets.json`:",
        "",
        *lines,
        "",
        verdict,
    ])


def drop_floor_tables() -> None:
    """The in-process runs made the SQL variants' tables; leave the databases as found."""
    from stores import drop_sql_table

    for url, table in ((POSTGRES_URL, POSTGRES_TABLE), (POSTGRES_URL, RAW_POSTGRES_TABLE),
                       (MARIADB_URL, MARIADB_TABLE), (MARIADB_URL, RAW_MARIADB_TABLE)):
        try:
            drop_sql_table(url, table)
        except Exception as exc:  # a server that is down made no table either
            print(f"could not drop {table}: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300,
                        help="requests per callgrind run (and twice that; keep >= 200)")
    parser.add_argument("--jobs", type=int, default=2, help="callgrind runs at a time")
    parser.add_argument("--src", default=str(SRC_DIR),
                        help="the sessionkeeper source tree to measure (see inprocess.py)")
    parser.add_argument("--memcached-port", type=int,
                        default=int(os.environ.get("BENCH_INPROCESS_MEMCACHED_PORT", "0")),
                        help="a running memcached on 127.0.0.1 for the memcached floor "
                             "(0: that row is not measured)")
    parser.add_argument("--no-floors", action="store_true",
                        help="skip the table of each store against its raw floor")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--json", type=Path, help="also write the counts here")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a figure is over its budget")
    args = parser.parse_args(argv)
    counts = measure(args.calls, args.jobs, args.src)
    budgets = json.loads(BUDGETS_FILE.read_text())
    text = markdown(counts, budgets, args.calls)
    floors: dict[tuple[str, str], float | None] = {}
    if not args.no_floors:
        floors = measure_floors(args.calls, args.jobs, args.src, args.memcached_port, counts)
        text += "\n\n" + floors_markdown(floors)
        drop_floor_tables()
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps(
            {f"{variant} {route}": figure
             for (variant, route), figure in {**counts, **floors}.items()},
            indent=2) + "\n")
    return 1 if args.check and over_budget(above_plain(counts), budgets) else 0


if __name__ == "__main__":
    sys.exit(main())
