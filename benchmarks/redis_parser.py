"""redis-py's reply parser, hiredis (C) against its pure-Python one, on the counter store's
request path: one reserve script, one charge script and the kept row's forget per
request (three nested budgets), in process against the Redis of 127.0.0.1:6379 (a key
prefix of its own, deleted after), blocks alternating between the two parsers.

    python -m benchmarks.redis_parser [--rounds 6] [--requests 300]

Reported: the median over blocks of CPU time (``time.process_time``: the figure machine
noise hardly moves) and wall time per request.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import _AsyncHiredisParser, _AsyncRESP2Parser

from spendgate.clock import SystemClock
from spendgate.storage.redis import RedisCounters

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "storage"))
from budget_samples import budget, plan, ref


async def _block(store: RedisCounters, count: int) -> tuple[float, float]:
    clock = SystemClock()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(count):
        counters = [ref(budget(f"b{i}"), clock.now()) for i in range(3)]
        reservation = plan(counters, clock.now())
        await store.reserve(reservation)
        row = dataclasses.replace(reservation.template, cost_nanos=10)
        await store.charge(reservation.reservation_id, (10, 10, 10), row, timedelta(seconds=30))
        await store.forget([reservation.reservation_id])
    return (time.process_time() - cpu) / count, (time.perf_counter() - wall) / count


async def main_async(rounds: int, count: int, url: str) -> str:
    stores: dict[str, RedisCounters] = {}
    parsers: dict[str, Any] = {"hiredis": _AsyncHiredisParser, "Python": _AsyncRESP2Parser}
    try:
        for name, parser in parsers.items():
            store = RedisCounters(f"{url}?prefix=sgbench-{uuid.uuid4().hex[:8]}", SystemClock())
            await store.open()
            pool = aioredis.BlockingConnectionPool.from_url(url, parser_class=parser)
            await store._redis.aclose()
            store._redis = aioredis.Redis.from_pool(pool)
            stores[name] = store
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in stores}
        for store in stores.values():
            await _block(store, 100)
        for _ in range(rounds):
            for name, store in stores.items():
                results[name].append(await _block(store, count))
    finally:
        for store in stores.values():
            await store.drop_all()
            await store.close()
    lines = ["| parser | CPU us a request | wall us a request |", "|---|---:|---:|"]
    for name, found in results.items():
        cpu = statistics.median(c for c, _ in found) * 1e6
        wall = statistics.median(w for _, w in found) * 1e6
        lines.append(f"| {name} | {cpu:.0f} | {wall:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    print(asyncio.run(main_async(args.rounds, args.requests, args.url)))


if __name__ == "__main__":
    main()
