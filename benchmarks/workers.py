"""Throughput and added latency with 1, 2 and 4 workers (``serve --workers N``), side by side.

    python -m benchmarks.workers [--rounds 5] [--workers 1,2,4] [--storage-url URL]
                                 [--write docs/benchmarks.md]

One simulator and one gateway per worker count, each with three nested dollar budgets
(key, team, org) and its own database (``--storage-url``: one shared URL instead, for a
backend other than SQLite). The load generator alternates blocks between the simulator
itself ("direct") and each gateway, rotating the order every round. Reported per scenario:
p50 and requests per second of each, and for concurrency 1 the added p50 (median over
rounds of the gateway's p50 minus direct's). At concurrency 32 and 256 the aiohttp client
keeps that many connections open; the kernel spreads them over the workers (SO_REUSEPORT).

Everything (load generator, simulator, every worker) shares the machine's cores: on a
2-core machine more workers cannot add cores, so read the ratios with the core count.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from benchmarks.budgets import NESTED
from benchmarks.common import (
    CHAT_BODY,
    ROOT,
    Stack,
    Target,
    gateway_target,
    median,
    ms,
    run_block,
    stack,
)
from benchmarks.latency import machine, write

SCENARIOS = (  # name, requests per block, concurrency
    ("chat, non-streaming, concurrency 1", 300, 1),
    ("chat, non-streaming, concurrency 32", 2000, 32),
    ("chat, non-streaming, concurrency 256", 4000, 256),
)


def name_of(workers: int) -> str:
    return f"{workers} worker" + ("s" if workers > 1 else "")


def wait_for_every_worker(url: str, workers: int, timeout_s: float = 60) -> None:
    """Until ``/readyz`` on fresh connections has been answered by all ``workers``."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(seen) < workers and time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:  # noqa: S310
            seen.add(int(orjson.loads(response.read()).get("worker", 0)))
    if len(seen) < workers:
        raise RuntimeError(f"{url}: only workers {sorted(seen)} answered")


async def measure(
    s: Stack, names: list[str], count: int, concurrency: int, rounds: int
) -> dict[str, dict[str, list[float]]]:
    direct = Target("direct", s.sim_url + "/v1/chat/completions", {"authorization": "Bearer x"})
    targets = [direct] + [gateway_target(s, name, "/v1/chat/completions") for name in names]
    found: dict[str, dict[str, list[float]]] = {
        t.name: {"p50": [], "rps": [], "added": []} for t in targets
    }
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        for target in targets:  # warm up: connections, caches, every worker
            await run_block(session, target, CHAT_BODY, count=200, concurrency=concurrency)
        for round_no in range(rounds):
            shift = round_no % len(targets)
            p50: dict[str, float] = {}
            for target in targets[shift:] + targets[:shift]:
                _ttfb, total, wall = await run_block(
                    session, target, CHAT_BODY, count=count, concurrency=concurrency
                )
                p50[target.name] = median(total)
                found[target.name]["p50"].append(p50[target.name])
                found[target.name]["rps"].append(count / wall)
            for name in names:
                found[name]["added"].append(p50[name] - p50["direct"])
    return found


def row(scenario: str, names: list[str], found: dict[str, dict[str, list[float]]]) -> str:
    one = median(found[names[0]]["rps"])
    cells = [scenario, ms(median(found["direct"]["p50"])), f"{median(found['direct']['rps']):,.0f}"]
    for name in names:
        rps = median(found[name]["rps"])
        cells += [
            ms(median(found[name]["p50"])),
            f"**{ms(median(found[name]['added']))}**",
            f"{rps:,.0f}",
            f"{rps / one:.2f}x",
        ]
    return "| " + " | ".join(cells) + " |"


def header(names: list[str]) -> str:
    cells = ["scenario", "direct p50 ms", "direct req/s"]
    for name in names:
        cells += [f"{name} p50 ms", "added p50 ms", f"{name} req/s", "vs 1 worker"]
    return "| " + " | ".join(cells) + " |\n|---|" + "---:|" * (len(cells) - 1)


async def main_async(rounds: int, counts: list[int], storage_url: str | None) -> str:
    names = [name_of(n) for n in counts]
    variants: dict[str, dict[str, Any]] = {}
    for n in counts:
        extra: dict[str, Any] = {**NESTED, "server": {"workers": n}}
        if storage_url:
            extra["storage"] = {"url": storage_url}
        variants[name_of(n)] = extra
    lines = [header(names)]
    with stack(variants=variants) as s:
        for n, name in zip(counts, names, strict=True):
            wait_for_every_worker(s.gateways[name][0], n)
        for scenario, count, concurrency in SCENARIOS:
            found = await measure(s, names, count, concurrency, rounds)
            line = row(scenario, names, found)
            print(line, flush=True)
            lines.append(line)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma separated")
    parser.add_argument("--storage-url", default=None, help="one storage URL for every gateway")
    parser.add_argument("--write", type=Path, default=None, help="update this markdown file")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    table = asyncio.run(main_async(args.rounds, counts, args.storage_url))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = f"python -m benchmarks.workers --rounds {args.rounds} --workers {args.workers}"
    if args.storage_url:
        command += f" --storage-url {args.storage_url}"
    backend = "SQLite" if not args.storage_url else args.storage_url.split(":", 1)[0]
    content = (
        f"Measured {stamp} on {machine()} with `{command}` (one simulator and one gateway per "
        f"worker count, each with three nested dollar budgets on {backend}; load generator, "
        'simulator and every worker on the same cores; "added" is the median over rounds of '
        "the gateway's p50 minus direct's).\n\n" + table
    )
    print(content)
    if args.write:
        write(ROOT / args.write if not args.write.is_absolute() else args.write, "workers", content)


if __name__ == "__main__":
    main()
