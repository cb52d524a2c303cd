"""Added latency of admission control: the same gateway with no budget, with three nested
budgets, and with three budgets plus three rate limits.

    python -m benchmarks.budgets [--rounds 5] [--write docs/benchmarks.md]

Three gateways run against one simulator: "plain" (no budget or limit), "budgets" (three
nested dollar budgets on the key, its team and its org) and "limits" (the same budgets
plus a request, a token and a concurrency limit), each reserved and settled atomically per
request. The load generator alternates blocks between them; the difference of medians is
what a request pays for exact enforcement.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.common import (
    CHAT_BODY,
    ROOT,
    gateway_target,
    median,
    ms,
    percentile,
    run_block,
    stack,
)
from benchmarks.latency import machine, write

LIMITED = {
    "limits": [
        {"name": "rpm", "scope": "key", "requests": "1000000/minute"},
        {"name": "tpm", "scope": "team", "tokens": "1000000000/minute"},
        {"name": "inflight", "scope": "org", "concurrency": 10000},
    ]
}

NESTED = {
    "budgets": [
        {"name": "key", "scope": "key", "match": "*", "limit_usd": "1000", "period": "daily"},
        {"name": "team", "scope": "team", "match": "ml", "limit_usd": "5000", "period": "monthly"},
        {"name": "org", "scope": "org", "match": "acme", "limit_usd": "90000", "period": "monthly"},
    ]
}


VARIANTS = ("plain", "budgets", "limits")


async def measure(
    s: Any, rounds: int, count: int, concurrency: int, stream: bool
) -> dict[str, list[float]]:
    targets = [gateway_target(s, name, "/v1/chat/completions") for name in VARIANTS]
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    samples.update({"added budgets": [], "added limits": []})
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for target in targets:
            await run_block(
                session, target, CHAT_BODY, count=100, concurrency=concurrency, stream=stream
            )
        for round_no in range(rounds):
            shift = round_no % len(targets)
            per_round = {}
            for target in targets[shift:] + targets[:shift]:
                ttfb, total, _ = await run_block(
                    session, target, CHAT_BODY, count=count, concurrency=concurrency, stream=stream
                )
                values = ttfb if stream else total
                samples[target.name].extend(values)
                per_round[target.name] = median(values)
            samples["added budgets"].append(per_round["budgets"] - per_round["plain"])
            samples["added limits"].append(per_round["limits"] - per_round["plain"])
    return samples


async def main_async(rounds: int) -> str:
    lines = [
        "| scenario | none p50 ms | 3 budgets p50 ms | added | 3 budgets + 3 limits p50 ms "
        "| added | budgets+limits p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    variants = {"plain": {}, "budgets": NESTED, "limits": {**NESTED, **LIMITED}}
    with stack(variants=variants) as s:
        for name, count, concurrency, stream in (
            ("chat, non-streaming, concurrency 1", 300, 1, False),
            ("chat, streaming (TTFB), concurrency 1", 300, 1, True),
            ("chat, non-streaming, concurrency 32", 1500, 32, False),
        ):
            r = await measure(s, rounds, count, concurrency, stream)
            line = (
                f"| {name} | {ms(median(r['plain']))} | {ms(median(r['budgets']))} | "
                f"**{ms(median(r['added budgets']))}** | {ms(median(r['limits']))} | "
                f"**{ms(median(r['added limits']))}** | {ms(percentile(r['limits'], 0.99))} |"
            )
            print(line, flush=True)
            lines.append(line)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    table = asyncio.run(main_async(args.rounds))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    content = (
        f"Measured {stamp} on {machine()} with "
        f"`python -m benchmarks.budgets --rounds {args.rounds}`"
        " (one simulator, three gateways as separate processes: no admission control; three"
        " nested dollar budgets on key, team and org; those budgets plus a request, a token and"
        ' a concurrency limit; SQLite; "added" is the median over rounds of the difference'
        " of medians).\n\n" + table
    )
    print(content)
    if args.write:
        write(ROOT / args.write if not args.write.is_absolute() else args.write, "budgets", content)


if __name__ == "__main__":
    main()
