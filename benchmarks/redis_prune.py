"""Counter pruning on Redis with many listed budgets: what a lease tick costs.

    python -m benchmarks.redis_prune [--budgets 100000]

Every lease tick prunes the old counters of every listed budget (`Storage.prune_counters`).
On the machine's Redis, under a throwaway key prefix: the old way, one ``prune_v1.lua``
call a budget (as the per-budget prune of ``maintain_v1.lua`` was called), against
`PRUNE_BATCH` budgets a call; wall time and this process's CPU time for one tick each.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from spendgate.clock import SystemClock
from spendgate.storage.redis import RedisCounters
from spendgate.storage.redis.counters import PRUNE_BATCH


async def measure(budgets: int) -> str:
    url = f"redis://127.0.0.1:6379/0?prefix=bench-prune-{uuid.uuid4().hex[:8]}"
    store = RedisCounters(url, SystemClock())
    await store.open()
    keep = {f"user-{i}": 1_700_000_000_000 for i in range(budgets)}
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        for budget, since in keep.items():  # before: one script call a budget
            members = store._members_key(budget)  # the old call, measured
            await store._run("prune", [members], ["", since])
        one_wall, one_cpu = time.perf_counter() - wall, time.process_time() - cpu
        wall, cpu = time.perf_counter(), time.process_time()
        await store.prune_counters(keep)
        batch_wall, batch_cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await store.close()
    return (
        f"{budgets:,} listed budgets, one tick: one call a budget {one_wall:.2f} s "
        f"({one_cpu:.2f} s CPU); {PRUNE_BATCH} a call {batch_wall:.3f} s ({batch_cpu:.3f} s CPU)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budgets", type=int, default=100_000)
    print(asyncio.run(measure(parser.parse_args().budgets)))


if __name__ == "__main__":
    main()
