"""Storage backends side by side: the same gateway, three nested dollar budgets, with its
counters on SQLite (the default: one file with keys and the ledger) and on Redis
(``storage.counters_url``; keys and ledger stay on SQLite). Added latency at concurrency 1
and throughput at concurrency 32, alternating blocks between the gateways in each round.

    python -m benchmarks.storage_backends [--rounds 5] [--redis redis://127.0.0.1:6379/0]
        [--write docs/benchmarks.md]

Redis keys go under a prefix of this run's own, deleted at the end (never FLUSHDB: the
server may be shared). Each gateway is one process (`spendgate serve`), the simulator
another; the numbers are only comparable within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

import aiohttp
import redis

from benchmarks.budgets import NESTED
from benchmarks.common import CHAT_BODY, ROOT, gateway_target, median, ms, run_block, stack
from benchmarks.latency import machine, write

BACKENDS = ("sqlite", "redis")


def variants(redis_url: str, prefix: str) -> dict[str, dict[str, Any]]:
    return {
        "sqlite": NESTED,
        "redis": {**NESTED, "storage": {"counters_url": f"{redis_url}?prefix={prefix}"}},
    }


async def measure(s: Any, rounds: int, count: int, concurrency: int) -> dict[str, list[float]]:
    """Per backend: the p50 latency of each block (s) and its throughput (requests/s)."""
    targets = [gateway_target(s, name, "/v1/chat/completions") for name in BACKENDS]
    out: dict[str, list[float]] = {}
    for name in BACKENDS:
        out[f"{name} p50"], out[f"{name} rps"] = [], []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for target in targets:  # warm up: connections, caches, scripts
            await run_block(session, target, CHAT_BODY, count=100, concurrency=concurrency)
        for round_no in range(rounds):
            order = targets if round_no % 2 == 0 else targets[::-1]
            for target in order:
                _, total, wall = await run_block(
                    session, target, CHAT_BODY, count=count, concurrency=concurrency
                )
                out[f"{target.name} p50"].append(median(total))
                out[f"{target.name} rps"].append(count / wall)
    return out


async def main_async(rounds: int, redis_url: str) -> str:
    prefix = f"sgbench-{uuid.uuid4().hex[:8]}"
    lines = [
        "| scenario | counters on SQLite | counters on Redis | Redis vs SQLite |",
        "|---|---:|---:|---:|",
    ]
    try:
        with stack(variants=variants(redis_url, prefix)) as s:
            one = await measure(s, rounds, 300, 1)
            lines.append(
                f"| concurrency 1, p50 latency ms | {ms(median(one['sqlite p50']))} | "
                f"{ms(median(one['redis p50']))} | "
                f"{ms(median(one['redis p50']) - median(one['sqlite p50']))} |"
            )
            print(lines[-1], flush=True)
            many = await measure(s, rounds, 1500, 32)
            sq, rd = median(many["sqlite rps"]), median(many["redis rps"])
            lines.append(f"| concurrency 32, requests/s | {sq:,.0f} | {rd:,.0f} | {rd / sq:.2f}x |")
            print(lines[-1], flush=True)
    finally:
        client = redis.Redis.from_url(redis_url)
        found = list(client.scan_iter(match=f"{{{prefix}}}:*", count=1000))
        if found:
            client.delete(*found)
        client.close()
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--write", type=str, default=None)
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d")
    table = asyncio.run(main_async(args.rounds, args.redis))
    print(table)
    if args.write:
        content = (
            f"Measured {started} on {machine()} (shared with other work), "
            f"{args.rounds} rounds, blocks alternating between the two gateways; medians. "
            "Three nested dollar budgets (key, team, org), one gateway process each, "
            "Redis 7 on the same machine (loopback). Command: "
            f"`python -m benchmarks.storage_backends --rounds {args.rounds}`.\n\n{table}"
        )
        write(ROOT / args.write, "storage-backends", content)


if __name__ == "__main__":
    main()
