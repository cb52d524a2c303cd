"""A large prompt priced by its byte bound instead of counted (issue 17: token counting
only where the worst case needs it), against a baseline build, side by side in one run.

    python -m benchmarks.large_prompt --baseline PATH [--rounds 5] [--sizes 4,20,100,400]

``PATH`` is the ``src`` folder of the build to compare with (e.g. a ``git worktree`` of the
commit before the change). Both gateways run the full policy (key auth, three nested
budgets, three rate limits; `benchmarks.profile.FULL_POLICY`) against the cheap fake
upstream (`benchmarks.fake_upstream`: its cost does not grow with the body, as the
simulator's does). The prompt is this repository's own source text (a coding agent's
context is mostly code), cut to each size in KiB; a unique line per request keeps the
loop detector out of it. Per size: the gateway's CPU per request at concurrency 4 (from
``/proc``) and the p50 latency at concurrency 1, each the median over rounds, blocks
alternating between the builds with the order rotating every round.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from benchmarks.common import (
    PYTHON,
    ROOT,
    SOURCE,
    cpu_seconds,
    gateway_target,
    median,
    one_request,
    stack,
)
from benchmarks.latency import machine
from benchmarks.profile import FULL_POLICY

SERIAL = itertools.count()


def source_text(size: int) -> str:
    text = "".join(p.read_text() for p in sorted((ROOT / "src" / "spendgate").rglob("*.py")))
    return text[:size]


def body_of(context: str) -> bytes:
    line = f"request {next(SERIAL)}\n"
    return orjson.dumps(
        {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are a careful coding agent."},
                {"role": "user", "content": line + context},
            ],
            "max_tokens": 256,
        }
    )


async def block(
    session: aiohttp.ClientSession, target: Any, context: str, count: int, concurrency: int
) -> list[float]:
    took: list[float] = []
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            _, end = await one_request(session, target, body_of(context), False)
            took.append(end)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return took


async def measure(s: Any, sizes: list[int], rounds: int, count: int) -> list[str]:
    names = list(s.gateways)
    targets = [gateway_target(s, name, "/v1/chat/completions") for name in names]
    lines = [
        "| prompt | baseline CPU µs/req (c=4) | this | ratio "
        "| baseline p50 ms (c=1) | this | ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for kib in sizes:
            context = source_text(kib * 1024)
            cpu: dict[str, list[float]] = {n: [] for n in names}
            p50: dict[str, list[float]] = {n: [] for n in names}
            for target in targets:  # warm up
                await block(session, target, context, 20, 4)
            for round_no in range(rounds):
                shift = round_no % len(targets)
                for target in targets[shift:] + targets[:shift]:
                    pid = s.pids[target.name]
                    before = cpu_seconds(pid)
                    await block(session, target, context, count, 4)
                    cpu[target.name].append((cpu_seconds(pid) - before) / count)
                    p50[target.name].append(
                        median(await block(session, target, context, count // 2, 1))
                    )
            b_cpu, t_cpu = median(cpu["baseline"]) * 1e6, median(cpu["this"]) * 1e6
            b_p50, t_p50 = median(p50["baseline"]) * 1e3, median(p50["this"]) * 1e3
            line = (
                f"| {kib} KiB | {b_cpu:.0f} | {t_cpu:.0f} | {t_cpu / b_cpu:.2f}x "
                f"| {b_p50:.2f} | {t_p50:.2f} | {t_p50 / b_p50:.2f}x |"
            )
            print(line, flush=True)
            lines.append(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", type=Path, required=True, help="src/ of the other build")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=100, help="requests per block at c=4")
    parser.add_argument("--sizes", default="4,20,100,400", help="prompt sizes in KiB")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    variants: dict[str, dict[str, Any]] = {
        "baseline": {**FULL_POLICY, SOURCE: args.baseline},
        "this": dict(FULL_POLICY),
    }
    with stack(variants=variants, upstream=[PYTHON, "-m", "benchmarks.fake_upstream"]) as s:
        lines = asyncio.run(measure(s, sizes, args.rounds, args.count))
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"\nMeasured {when} on {machine()} with `python -m benchmarks.large_prompt "
        f"--baseline <src> --rounds {args.rounds} --count {args.count} --sizes {args.sizes}`"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
