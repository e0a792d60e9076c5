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

    python benchmarks/instructions.py [--calls 300] [--jobs 2] [--markdown out.md] [--check]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from common import BENCH_DIR, REDIS_PORT, SRC_DIR

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


@dataclass(frozen=True)
class Count:
    variant: str
    route: str
    per_request: float


def count(variant: str, route: str, calls: int, src: str) -> Count:
    """One variant's instructions per request on one route (a callgrind subprocess)."""
    proc = subprocess.run(
        [sys.executable, str(BENCH_DIR / "inprocess.py"), variant, route, "--instructions",
         "--calls", str(calls), "--redis-port", str(REDIS_PORT), "--src", src],
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300,
                        help="requests per callgrind run (and twice that; keep >= 200)")
    parser.add_argument("--jobs", type=int, default=2, help="callgrind runs at a time")
    parser.add_argument("--src", default=str(SRC_DIR),
                        help="the sessionkeeper source tree to measure (see inprocess.py)")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--json", type=Path, help="also write the counts here")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a figure is over its budget")
    args = parser.parse_args(argv)
    counts = measure(args.calls, args.jobs, args.src)
    budgets = json.loads(BUDGETS_FILE.read_text())
    text = markdown(counts, budgets, args.calls)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps(
            {f"{variant} {route}": figure for (variant, route), figure in counts.items()},
            indent=2) + "\n")
    return 1 if args.check and over_budget(above_plain(counts), budgets) else 0


if __name__ == "__main__":
    sys.exit(main())
