"""Added latency of budget enforcement: the same gateway with and without budgets.

    python -m benchmarks.budgets [--rounds 5] [--write docs/benchmarks.md]

Two gateways run against one simulator: "plain" (no budget) and "budgets" (three nested
budgets on the key, its team and its org, each reserved and settled atomically per
request). The load generator alternates blocks between them; the difference of medians is
what a request pays for exact budget enforcement.
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

NESTED = {
    "budgets": [
        {"name": "key", "scope": "key", "match": "*", "limit_usd": "1000", "period": "daily"},
        {"name": "team", "scope": "team", "match": "ml", "limit_usd": "5000", "period": "monthly"},
        {"name": "org", "scope": "org", "match": "acme", "limit_usd": "90000", "period": "monthly"},
    ]
}


async def measure(
    s: Any, rounds: int, count: int, concurrency: int, stream: bool
) -> dict[str, list[float]]:
    plain = gateway_target(s, "plain", "/v1/chat/completions")
    budgeted = gateway_target(s, "budgets", "/v1/chat/completions")
    samples: dict[str, list[float]] = {"plain": [], "budgets": [], "added": []}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for target in (plain, budgeted):
            await run_block(
                session, target, CHAT_BODY, count=100, concurrency=concurrency, stream=stream
            )
        for round_no in range(rounds):
            order = (plain, budgeted) if round_no % 2 == 0 else (budgeted, plain)
            per_round = {}
            for target in order:
                ttfb, total, _ = await run_block(
                    session, target, CHAT_BODY, count=count, concurrency=concurrency, stream=stream
                )
                values = ttfb if stream else total
                samples[target.name].extend(values)
                per_round[target.name] = median(values)
            samples["added"].append(per_round["budgets"] - per_round["plain"])
    return samples


async def main_async(rounds: int) -> str:
    lines = [
        "| scenario | no budget p50 ms | 3 nested budgets p50 ms "
        "| added p50 ms (median of rounds) | budgets p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    with stack(variants={"plain": {}, "budgets": NESTED}) as s:
        for name, count, concurrency, stream in (
            ("chat, non-streaming, concurrency 1", 300, 1, False),
            ("chat, streaming (TTFB), concurrency 1", 300, 1, True),
            ("chat, non-streaming, concurrency 32", 1500, 32, False),
        ):
            r = await measure(s, rounds, count, concurrency, stream)
            line = (
                f"| {name} | {ms(median(r['plain']))} | {ms(median(r['budgets']))} | "
                f"**{ms(median(r['added']))}** | {ms(percentile(r['budgets'], 0.99))} |"
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
        " (one simulator, two gateways as separate processes: without budgets, and with three"
        " nested dollar budgets on key, team and org; SQLite).\n\n" + table
    )
    print(content)
    if args.write:
        write(ROOT / args.write if not args.write.is_absolute() else args.write, "budgets", content)


if __name__ == "__main__":
    main()
