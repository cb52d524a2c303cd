"""The Redis counter store's share of a request, in process, this tree against another
(``--baseline``, its ``src/``): per request one reservation on three nested budgets (or
``--counters 6``: three budgets and three limits' worth of counters), its charge before the
answer, and its kept row forgotten once written (a round trip of its own where the tree
has no ``forget_soon``), against the Redis of ``--url`` (a key prefix of its own, deleted
after). Each tree runs in a child process of its own; blocks alternate between them.

    python -m benchmarks.redis_path [--rounds 8] [--requests 300] [--counters 3]
        [--baseline /work/main/src] [--url redis://127.0.0.1:6379/0]

Reported: the median over blocks of CPU time (``time.process_time``, the gateway's side:
redis-py, the store's Python, the event loop) and wall time per request.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent


async def _block(store: Any, count: int, counters: int) -> tuple[float, float]:
    from budget_samples import budget, plan, ref

    from spendgate.clock import SystemClock

    clock = SystemClock()
    later = getattr(store, "forget_soon", None)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(count):
        refs = [ref(budget(f"b{i}"), clock.now()) for i in range(counters)]
        reservation = plan(refs, clock.now())
        await store.reserve(reservation)
        row = dataclasses.replace(reservation.template, cost_nanos=10)
        charges = (10,) * counters
        await store.charge(reservation.reservation_id, charges, row, timedelta(seconds=30))
        if later is not None:
            later([reservation.reservation_id])
        else:
            await store.forget([reservation.reservation_id])
    return (time.process_time() - cpu) / count, (time.perf_counter() - wall) / count


async def _child(url: str, count: int, counters: int) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "storage"))
    from spendgate.clock import SystemClock
    from spendgate.storage.redis import RedisCounters

    store = RedisCounters(f"{url}?prefix=sgbench-{uuid.uuid4().hex[:8]}", SystemClock())
    await store.open()
    try:
        await _block(store, 100, counters)  # warm up
        for line in sys.stdin:
            if line.strip() != "go":
                break
            print(orjson.dumps(await _block(store, count, counters)).decode(), flush=True)
    finally:
        await store.drop_all()
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--counters", type=int, default=3)
    parser.add_argument("--baseline", default=None, help="another source tree (its src/)")
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(_child(args.url, args.requests, args.counters))
        return
    trees = {"this tree": str(ROOT / "src")}
    if args.baseline:
        trees["baseline"] = args.baseline
    children = {}
    for name, source in trees.items():
        command = [sys.executable, "-m", "benchmarks.redis_path", "--child"]
        command += ["--url", args.url, "--requests", str(args.requests)]
        command += ["--counters", str(args.counters)]
        env = {**os.environ, "PYTHONPATH": f"{source}{os.pathsep}{ROOT}"}
        children[name] = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
        )
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    try:
        for _ in range(args.rounds):
            for name, child in children.items():
                assert child.stdin is not None
                assert child.stdout is not None
                child.stdin.write("go\n")
                child.stdin.flush()
                results[name].append(tuple(orjson.loads(child.stdout.readline())))
    finally:
        for child in children.values():
            assert child.stdin is not None
            child.stdin.close()
            child.wait(timeout=60)
    print("| tree | CPU us a request | wall us a request |")
    print("|---|---:|---:|")
    for name, found in results.items():
        cpu = statistics.median(c for c, _ in found) * 1e6
        wall = statistics.median(w for _, w in found) * 1e6
        print(f"| {name} | {cpu:.0f} | {wall:.0f} |")


if __name__ == "__main__":
    main()
