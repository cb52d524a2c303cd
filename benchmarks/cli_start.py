"""How long the ``spendgate`` command takes to start: ``--help``, ``--version`` and the
read-only reports (``usage``, ``blocks``, ``savings``, ``budgets``, ``keys list``,
``loops``) on a small database (a ledger of 200 rows, one budget with its counters, one
key), each the median of N runs.

``--baseline SRC`` times another source tree side by side (its ``src`` folder, e.g. from
``git archive <commit> src | tar -x -C /tmp/base``), run by the same interpreter with
``PYTHONPATH=SRC``; runs alternate between the two builds so machine noise hits both.

    .venv/bin/python -m benchmarks.cli_start --runs 10 [--baseline /tmp/base/src] [--only usage]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from benchmarks.common import ROOT, bench_config
from spendgate.domain.ledger import LedgerRow
from spendgate.storage.open import open_storage

# one budget, so that `budgets` and `savings` have one to report
BUDGETS = [{"name": "team-month", "scope": "team", "limit_usd": 100, "period": "monthly"}]

ENTRY = "import sys; from spendgate.cli.main import main; sys.argv[0] = 'spendgate'; main()"


async def _fill(db: Path, rows: int) -> None:
    storage = open_storage(f"sqlite:///{db}")
    await storage.open()
    now = datetime.now(UTC)
    try:
        await storage.ledger_store.append(
            [
                LedgerRow(
                    request_id=f"req-{i}",
                    ts=now - timedelta(minutes=i),
                    surface="openai.chat",
                    key_id=f"key_{i % 7:022d}",
                    user=f"dev-{i % 11}",
                    service=None,
                    team=("ml", "web", "platform")[i % 3],
                    org="acme",
                    tags=(),
                    requested_model="gpt-4o-mini",
                    served_model="gpt-4o-mini",
                    provider="openai",
                    input_tokens=1_000 + i,
                    cached_input_tokens=0,
                    cache_write_tokens=0,
                    output_tokens=200,
                    reasoning_tokens=0,
                    cost_nanos=270_000 + 150 * i,
                    status=200,
                    latency_ms=12.0,
                    ttfb_ms=None,
                    streamed=False,
                    client_disconnected=False,
                    usage_estimated=False,
                )
                for i in range(rows)
            ]
        )
    finally:
        await storage.close()


REPORTS = (["usage"], ["blocks"], ["savings"], ["budgets"], ["keys", "list"], ["loops"])


def _setup(config: Path, env: dict[str, str]) -> None:
    """A key, and a request charged to the budget (its counters), made by this build."""
    for argv in (
        ["keys", "create", "--name", "bench", "--team", "ml"],
        ["budgets", "set-limit", "team-month", "120"],
    ):
        command = [sys.executable, "-c", ENTRY, *argv, "-c", str(config)]
        subprocess.run(command, env=env, capture_output=True, check=True)


# What a `usage` report's start spends its time on, stage by stage, in the order the
# command does it: each line imports or runs what the command needs next (modules an
# earlier stage imported are not counted again). Run in a fresh interpreter per sample.
STAGES = """
import os, sys, time
clock = time.perf_counter
marks = [("", clock())]
def mark(name):
    marks.append((name, clock()))
os.environ["PYDANTIC_DISABLE_PLUGINS"] = "__all__"  # as spendgate.cli.common does
import gc; gc.disable()  # and its `uncollected`, until the start is over
import click; mark("click")
import spendgate.cli.main, spendgate.cli.usage; mark("CLI, report service, storage API, domain")
from pydantic import BaseModel; mark("pydantic import")
import yaml; mark("PyYAML import")
import spendgate.config; mark("config schema classes, loader")
from spendgate.config import load_config
config = load_config(sys.argv[1]); mark("config validation (pydantic core schema built)")
from spendgate.config.build import build_budget_book, build_model_table, price_problem
from spendgate.pricing.catalog import build_price_book
prices = build_price_book(config); mark("price book (builtin catalog parsed)")
models = build_model_table(config, prices)
price_problem(config, models); build_budget_book(config); mark("models, budgets, checks")
gc.freeze(); gc.enable()
import asyncio; mark("asyncio import")
from spendgate.storage.open import open_storage
import spendgate.storage.sqlite; mark("SQLite storage import")
from spendgate.clock import SystemClock
from spendgate.services.reports import usage_report
storage = open_storage(config.storage.url)
async def report():
    await storage.open()
    try:
        await usage_report(storage, SystemClock(), group_by="team", period="month", top=15)
    finally:
        await storage.close()
asyncio.run(report()); mark("open storage, query, close")
print(";".join(f"{name}={(t - marks[i][1]) * 1000:.2f}" for i, (name, t) in enumerate(marks[1:])))
"""


def _stages(config: Path, env: dict[str, str], runs: int) -> list[str]:
    samples: dict[str, list[float]] = {}
    for _ in range(runs):
        wall, _cpu = _time([sys.executable, "-c", "pass"], env)
        samples.setdefault("interpreter start and exit (`python -c pass`)", []).append(wall * 1000)
        done = subprocess.run(
            [sys.executable, "-c", STAGES, str(config)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        for item in done.stdout.strip().split(";"):
            name, value = item.rsplit("=", 1)
            samples.setdefault(name, []).append(float(value))
    lines = [
        f"\n`usage -c small.yaml` by stage, wall ms inside the process ({runs} runs):",
        "| stage | min | median |",
        "|---|---:|---:|",
    ]
    for name, values in samples.items():
        lines.append(f"| {name} | {min(values):.1f} | {statistics.median(values):.1f} |")
    total = [sum(run) for run in zip(*samples.values(), strict=True)]
    lines.append(f"| (sum) | {min(total):.1f} | {statistics.median(total):.1f} |")
    return lines


def _time(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds, and the CPU seconds (user + system) the command used: on a shared
    machine the CPU time moves far less with other load than the wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{command} failed: {done.stderr.decode()[-2000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--baseline", type=Path, default=None, help="a baseline's src folder")
    parser.add_argument("--only", default=None, help="only the commands that contain this")
    parser.add_argument(
        "--stages", action="store_true", help="also time a `usage` report's start by stage"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sg-cli-start-") as folder:
        db = Path(folder) / "small.db"
        config = Path(folder) / "spendgate.yaml"
        data = bench_config("http://127.0.0.1:9", db, {"budgets": BUDGETS})
        config.write_text(yaml.safe_dump(data), "utf-8")
        asyncio.run(_fill(db, 200))
        # as installed: bytecode cached (PYTHONDONTWRITEBYTECODE would compile every
        # module from source on every run), no SPENDGATE_CONFIG of the caller's
        dropped = ("PYTHONPATH", "SPENDGATE_CONFIG", "PYTHONDONTWRITEBYTECODE")
        env = {k: v for k, v in os.environ.items() if k not in dropped}
        _setup(config, env)
        builds = {"this": (ROOT / "src", env)}
        if args.baseline is not None:
            builds["baseline"] = (args.baseline, {**env, "PYTHONPATH": str(args.baseline)})
        cases = {
            "spendgate --help": ["--help"],
            "spendgate --version": ["--version"],
            **{
                f"spendgate {' '.join(argv)} -c small.yaml": [*argv, "-c", str(config)]
                for argv in REPORTS
            },
        }
        if args.only:
            cases = {case: argv for case, argv in cases.items() if args.only in case}
        load_before = ", ".join(f"{n:.2f}" for n in os.getloadavg())
        for _src, build_env in builds.values():  # writes the bytecode of both builds
            for argv in cases.values():
                _time([sys.executable, "-c", ENTRY, *argv], build_env)
        times: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(args.runs):
            for case, argv in cases.items():
                for build, (_src, build_env) in builds.items():
                    command = [sys.executable, "-c", ENTRY, *argv]
                    times.setdefault((case, build), []).append(_time(command, build_env))
        stages = _stages(config, env, args.runs) if args.stages else []
    names = list(builds)
    titles = [f"{n}: wall ms | {n}: CPU ms" for n in names]
    load = ", ".join(f"{n:.2f}" for n in os.getloadavg())
    print(
        f"Median of {args.runs} runs, {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"load average before {load_before}, after {load}"
    )
    print(f"| command | {' | '.join(titles)} |")
    print(f"|---|{'---:|---:|' * len(names)}")
    for case in cases:
        cells = []
        for n in names:
            wall = statistics.median(t[0] for t in times[(case, n)]) * 1000
            cpu = statistics.median(t[1] for t in times[(case, n)]) * 1000
            cells.append(f"{wall:.0f} | {cpu:.0f}")
        print(f"| `{case}` | {' | '.join(cells)} |")
    print("\n".join(stages))


if __name__ == "__main__":
    main()
