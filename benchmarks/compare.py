"""Two builds of the gateway side by side: did a change cost latency or throughput?

    python -m benchmarks.compare --baseline PATH [--rounds 5] [--write docs/benchmarks.md]

``PATH`` is the ``src`` folder of another checkout of spendgate (e.g. a ``git worktree`` of
the commit before a change). One simulator; four gateways as separate processes: each
build with no budget and with three nested budgets plus three rate limits (the full
admission path). The load generator alternates blocks between them, rotating the order
every round; "change" is the median over rounds of the per-round difference of medians
(this build minus the baseline), so machine noise hits both builds alike. At concurrency
32 it also reports each gateway's CPU time per request (from ``/proc``), which scheduling
noise on a shared machine moves far less than throughput.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.budgets import LIMITED, NESTED
from benchmarks.common import (
    CHAT_BODY,
    ROOT,
    SOURCE,
    cpu_seconds,
    gateway_target,
    median,
    ms,
    run_block,
    stack,
)
from benchmarks.latency import machine, write

KINDS = {"plain": {}, "budgets": {**NESTED, **LIMITED}}
SCENARIOS = (
    ("chat, non-streaming, concurrency 1 (p50 ms)", 300, 1, False),
    ("chat, streaming TTFB, concurrency 1 (p50 ms)", 300, 1, True),
    ("chat, non-streaming, concurrency 32 (req/s)", 1500, 32, False),
)


async def measure(
    s: Any, rounds: int, count: int, concurrency: int, stream: bool
) -> dict[str, list[float]]:
    """Per variant: the median of each round (latency) or its throughput and CPU seconds
    per request (concurrency > 1, under ``cpu <name>``)."""
    names = list(s.gateways)
    samples: dict[str, list[float]] = {name: [] for name in names}
    samples.update({f"cpu {name}": [] for name in names})
    targets = [gateway_target(s, name, "/v1/chat/completions") for name in names]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for target in targets:  # warm up
            await run_block(session, target, CHAT_BODY, count=100, concurrency=concurrency)
        for round_no in range(rounds):
            shift = round_no % len(targets)
            for target in targets[shift:] + targets[:shift]:
                pid = s.pids[target.name]
                cpu = cpu_seconds(pid)
                ttfb, total, wall = await run_block(
                    session, target, CHAT_BODY, count=count, concurrency=concurrency, stream=stream
                )
                if concurrency > 1:
                    samples[target.name].append(count / wall)
                    samples[f"cpu {target.name}"].append((cpu_seconds(pid) - cpu) / count)
                else:
                    samples[target.name].append(median(ttfb if stream else total))
    return samples


def _row(name: str, concurrency: int, r: dict[str, list[float]], prefix: str = "") -> str:
    cells = []
    for kind in KINDS:
        before, after = r[f"{prefix}baseline-{kind}"], r[f"{prefix}this-{kind}"]
        change = median([a - b for a, b in zip(after, before, strict=True)])
        if prefix:  # CPU seconds per request, in microseconds
            cells += [f"{median(before) * 1e6:.0f}", f"{median(after) * 1e6:.0f}"]
            cells.append(f"{change * 1e6:+.0f}")
        elif concurrency > 1:
            cells += [f"{median(before):.0f}", f"{median(after):.0f}", f"{change:+.0f}"]
        else:
            cells += [ms(median(before)), ms(median(after)), f"{change * 1000:+.3f}"]
    return f"| {name} | " + " | ".join(cells) + " |"


async def main_async(baseline: Path, rounds: int) -> str:
    variants: dict[str, dict[str, Any]] = {}
    for kind, extra in KINDS.items():
        variants[f"baseline-{kind}"] = {**extra, SOURCE: baseline}
        variants[f"this-{kind}"] = dict(extra)
    lines = [
        "| scenario | baseline, none | this, none | change | baseline, budgets+limits "
        "| this, budgets+limits | change |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    with stack(variants=variants) as s:
        for name, count, concurrency, stream in SCENARIOS:
            r = await measure(s, rounds, count, concurrency, stream)
            found = [_row(name, concurrency, r)]
            if concurrency > 1:
                cpu = f"gateway CPU per request, concurrency {concurrency} (us)"
                found.append(_row(cpu, concurrency, r, prefix="cpu "))
            for line in found:
                print(line, flush=True)
            lines += found
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", type=Path, required=True, help="src/ of the other build")
    parser.add_argument("--label", default="", help="what the baseline is (for the write-up)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write", type=Path, default=None)
    parser.add_argument("--section", default="compare", help="the marked section to replace")
    args = parser.parse_args()
    table = asyncio.run(main_async(args.baseline.resolve(), args.rounds))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    label = f" ({args.label})" if args.label else ""
    content = (
        f"Measured {stamp} on {machine()} with `python -m benchmarks.compare --baseline "
        f"<src of the baseline>{label} --rounds {args.rounds}` (one simulator, four gateways: "
        "each build with no admission control and with three nested dollar budgets plus "
        'three rate limits; SQLite; "change" is the median over rounds of this build minus '
        "the baseline: milliseconds at concurrency 1, requests per second and CPU microseconds "
        "per request at 32).\n\n" + table
    )
    print(content)
    if args.write:
        write(
            ROOT / args.write if not args.write.is_absolute() else args.write, args.section, content
        )


if __name__ == "__main__":
    main()
