"""Memory of a gateway with the full policy, idle and after sustained traffic from many keys.

    python -m benchmarks.memory [--keys 10000] [--requests 20000] [--baseline SRC]
                                [--repeat 3] [--no-metering] [--trace 1]
                                [--write docs/benchmarks.md --section memory]

One simulator and, side by side, one gateway per variant, each on its own SQLite file
with the same ``--keys`` keys (users ``user<i>``, team ``ml``): "metering" (no budget or
limit) and "full policy" (three nested dollar budgets on the key, its team and its org,
and a request, a token and a concurrency limit: `benchmarks.budgets`). ``--baseline SRC``
adds the full policy run from another source tree (``PYTHONPATH=SRC``, e.g.
``git archive <commit> src``): before and after in one run; ``--env NAME=VALUE`` adds
the full policy run with that variable in its environment (``MALLOC_ARENA_MAX=2``).

Each gateway runs under `benchmarks.memory_probe` and is measured at four points, counted
in requests: idle after start; after its first request (the first token count loads the
``o200k_base`` encoding); after ``--requests`` more at concurrency 32, each with the next
key in turn (every key comes back only after all the others); and idle again, ``--idle``
seconds after its own traffic (what the gateway gives back once the traffic stops; the
same quiet time for every variant, whose lease keeper ticks as often). At each point: RSS and
its split from ``/proc/<pid>/status`` (anonymous: the heaps; file: mapped code and data),
and the probe's report: the C heap's bytes in use and bytes free but still held
(``mallinfo2``). The variants take the traffic one after the other, so the figures of one
are not disturbed by another's requests in flight.

``--repeat N`` runs the whole measurement N times, each round with fresh processes, and
the table gives each figure's median (and each round's RSS); ``--no-metering`` leaves the
metering variant out; ``--write`` replaces the block ``--section`` names in the docs.

``--trace N`` runs the gateways under tracemalloc (N frames) and prints, per variant, the
Python heap's growth by file and line between the first request and the end of the
traffic, and the heap by file 'idle after' (what the gateway holds); its RSS figures are
then inflated by tracemalloc's own bookkeeping (not for the table).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from benchmarks.budgets import LIMITED, NESTED
from benchmarks.common import ADMIN, PYTHON, ROOT, bench_config, free_port, wait_http
from benchmarks.latency import machine, write
from benchmarks.many_budgets import block, issue_keys

POINTS = ("idle after start", "after the first request", "after the traffic", "idle after")


@dataclass
class Variant:
    name: str
    extra: dict[str, Any]
    source: Path | None = None
    env: dict[str, str] = field(default_factory=dict)  # e.g. MALLOC_ARENA_MAX (--env)
    url: str = ""
    pid: int = 0
    secrets: list[str] = field(default_factory=list)
    probes: Path = Path()
    samples: dict[str, dict[str, float]] = field(default_factory=dict)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)


def status_mb(pid: int) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            found[name] = int(value.split()[0]) / 1024
    return found


def probe(variant: Variant, point: str) -> None:
    """The RSS now and the probe's report (SIGUSR1; written within a moment)."""
    variant.samples[point] = status_mb(variant.pid)
    taken = len(variant.reports)
    path = Path(f"{variant.probes}.{taken}.json")
    os.kill(variant.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 600  # a tracemalloc snapshot takes a while
    while time.monotonic() < deadline:
        if path.exists():
            try:
                variant.reports[point] = orjson.loads(path.read_bytes())
                return
            except orjson.JSONDecodeError:  # still being written
                pass
        time.sleep(0.05)
    raise RuntimeError(f"{variant.name}: no memory report")


def start(
    variant: Variant, sim_url: str, tmp: Path, keys: int, trace: int
) -> subprocess.Popen[bytes]:
    config = bench_config(sim_url, tmp / f"{variant.name}.db", variant.extra)
    config_path = tmp / f"{variant.name}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    variant.secrets = asyncio.run(issue_keys(config_path, keys, keys))
    env = {**os.environ, "SIM_KEY": "sk-sim", "SPENDGATE_ADMIN_TOKEN": ADMIN, **variant.env}
    if variant.source is not None:
        env["PYTHONPATH"] = f"{variant.source}{os.pathsep}{ROOT}"
    port = free_port()
    variant.url = f"http://127.0.0.1:{port}"
    variant.probes = tmp / variant.name.replace(" ", "-")
    traced = ["--trace", str(trace)] if trace else []
    command = [PYTHON, "-m", "benchmarks.memory_probe", str(variant.probes), *traced]
    command += ["serve", "-c", str(config_path), "--port", str(port)]
    stderr = None if os.environ.get("BENCH_STDERR") else subprocess.DEVNULL
    proc = subprocess.Popen(command, env=env, stderr=stderr, cwd=ROOT)
    wait_http(f"{variant.url}/readyz", timeout=120)
    variant.pid = proc.pid
    return proc


async def idle_probe(variant: Variant, idle_s: float) -> None:
    await asyncio.sleep(idle_s)
    await asyncio.to_thread(probe, variant, POINTS[3])


async def traffic(variants: list[Variant], requests: int, settle_s: float, idle_s: float) -> None:
    """The first three points, one variant's traffic after the other's; and each variant's
    'idle after' ``idle_s`` after its own traffic, while the next takes its traffic (the
    same quiet time, and as many lease-keeper ticks, for every variant)."""
    path = "/v1/chat/completions"
    idle: list[asyncio.Task[None]] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        time.sleep(settle_s)
        for variant in variants:
            probe(variant, POINTS[0])
        for variant in variants:
            await block(session, variant.url + path, variant.secrets, itertools.count(), 1, 1)
        time.sleep(settle_s)
        for variant in variants:
            probe(variant, POINTS[1])
        for variant in variants:  # one after the other: no variant's traffic overlaps another's
            turns = itertools.count(1)
            await block(session, variant.url + path, variant.secrets, turns, requests, 32)
            probe(variant, POINTS[2])
            idle.append(asyncio.create_task(idle_probe(variant, idle_s)))
            print(f"{variant.name}: {requests:,} requests done", flush=True)
        await asyncio.gather(*idle)


def _figures(variant: Variant, point: str) -> dict[str, float]:
    rss = variant.samples[point]
    report = variant.reports[point]
    heap = report.get("mallinfo", {})
    return {
        "rss": rss["VmRSS"],
        "anon": rss["RssAnon"],
        "file": rss["RssFile"],
        "used": heap.get("uordblks", 0) / 2**20,
        "free": heap.get("fordblks", 0) / 2**20,
        "sqlite": report.get("sqlite", {}).get("used", 0) / 2**20,
    }


def table(rounds: list[list[Variant]]) -> str:
    """One row per variant, one cell per point: the median over the rounds of each figure
    (and each round's RSS, when there are several)."""
    lines = [
        "| variant | " + " | ".join(POINTS) + " |",
        "|---|" + "---:|" * len(POINTS),
    ]
    for index, variant in enumerate(rounds[0]):
        cells = []
        for point in POINTS:
            runs = [_figures(variants[index], point) for variants in rounds]
            mid = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
            each = " / ".join(f"{run['rss']:.1f}" for run in runs) if len(runs) > 1 else ""
            cells.append(
                f"**{mid['rss']:.1f}** ({mid['anon']:.1f} anon + {mid['file']:.1f} file;"
                f" C heap {mid['used']:.1f} used, {mid['free']:.1f} free;"
                f" SQLite {mid['sqlite']:.1f}{'; rounds ' + each if each else ''})"
            )
        lines.append(f"| {variant.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def growth(variant: Variant, first: str, last: str, top: int = 15) -> str:
    """The Python heap's growth by file and line between two points (tracemalloc runs)."""
    before = {entry["where"]: entry["bytes"] for entry in variant.reports[first].get("top", [])}
    after = variant.reports[last].get("top", [])
    rows = sorted(
        ((entry["bytes"] - before.get(entry["where"], 0), entry["where"]) for entry in after),
        reverse=True,
    )[:top]
    total = variant.reports[last].get("traced_bytes", 0) - variant.reports[first].get(
        "traced_bytes", 0
    )
    lines = [f"{variant.name}: traced Python heap {total / 2**20:+.2f} MB from {first} to {last}"]
    lines += [f"  {size / 1024:+9.1f} KiB  {where}" for size, where in rows if size]
    return "\n".join(lines)


def held(variant: Variant, point: str, top: int = 25) -> str:
    """The Python heap at one point by file (tracemalloc runs): what the gateway holds."""
    report = variant.reports[point]
    lines = [
        f"{variant.name}: traced Python heap {report.get('traced_bytes', 0) / 2**20:.2f} MB {point}"
    ]
    lines += [
        f"  {entry['bytes'] / 2**20:7.2f} MB  {entry['where']}"
        for entry in report.get("files", [])[:top]
    ]
    return "\n".join(lines)


def measure(args: argparse.Namespace) -> list[Variant]:
    """One round: a simulator and every variant's gateway, started afresh."""
    variants = [Variant("full policy", {**NESTED, **LIMITED})]
    if not args.no_metering:
        variants.insert(0, Variant("metering", {}))
    if args.baseline is not None:
        name = f"full policy ({args.baseline_name})"
        variants.append(Variant(name, {**NESTED, **LIMITED}, args.baseline))
    for setting in args.env:
        name, _, value = setting.partition("=")
        policy = {**NESTED, **LIMITED}
        variants.append(Variant(f"full policy ({setting})", policy, env={name: value}))
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="spendgate-bench-") as folder:
        tmp = Path(folder)
        sim_port = free_port()
        sim_url = f"http://127.0.0.1:{sim_port}"
        try:
            sim = [PYTHON, "-m", "spendgate.simulator", "--port", str(sim_port), "--no-records"]
            procs.append(subprocess.Popen(sim, stdout=subprocess.DEVNULL))
            wait_http(f"{sim_url}/v1/models")
            for variant in variants:
                procs.append(start(variant, sim_url, tmp, args.keys, args.trace))
                print(f"{variant.name}: up", flush=True)
            asyncio.run(traffic(variants, args.requests, args.settle, args.idle))
        finally:
            for proc in reversed(procs):
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--idle", type=float, default=70.0, help="seconds before 'idle after'")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds before a probe")
    parser.add_argument("--baseline", type=Path, default=None)
    parser.add_argument("--baseline-name", default="baseline", help="its row's name")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="adds the full policy run with this environment variable (repeatable)",
    )
    parser.add_argument("--trace", type=int, default=0, help="tracemalloc frames (0: off)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the table has medians")
    parser.add_argument("--no-metering", action="store_true", help="only the full policy runs")
    parser.add_argument("--write", type=Path, default=None)
    parser.add_argument("--section", default="memory", help="the docs block --write replaces")
    args = parser.parse_args()
    rounds = []
    for number in range(args.repeat):
        if args.repeat > 1:
            print(f"round {number + 1} of {args.repeat}", flush=True)
        rounds.append(measure(args))
    if args.trace:
        for variant in rounds[-1]:
            print(growth(variant, POINTS[1], POINTS[2]))
            print(growth(variant, POINTS[0], POINTS[1]))
            print(held(variant, POINTS[3]))
        return
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join(["python -m benchmarks.memory", *sys.argv[1:]])
    content = (
        f"Measured {stamp} on {machine()}, load average {os.getloadavg()[0]:.1f} at the end, "
        f"with `{command}` ({args.keys:,} keys, {args.requests:,} requests at concurrency 32,"
        f" 'idle after' {args.idle:.0f} s after them; RSS MB from `/proc/<pid>/status`, the C"
        " heap's MB from glibc's `mallinfo2` in the gateway, SQLite's from"
        f" `sqlite3_memory_used`; medians of {args.repeat} rounds).\n\n" + table(rounds)
    )
    print(content)
    if args.write:
        target = ROOT / args.write if not args.write.is_absolute() else args.write
        write(target, args.section, content)


if __name__ == "__main__":
    main()
