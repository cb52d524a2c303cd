"""Added latency of admission control: the same gateway with no budget, with three nested
budgets, and with three budgets plus three rate limits; and what the admission line costs
when nothing waits.

    python -m benchmarks.budgets [--rounds 5] [--write docs/benchmarks.md]

Three gateways run against one simulator: "plain" (no budget or limit), "budgets" (three
nested dollar budgets on the key, its team and its org) and "limits" (the same budgets
plus a request, a token and a concurrency limit), each reserved and settled atomically per
request. The load generator alternates blocks between them; the difference of medians is
what a request pays for exact enforcement.

The admission line (`AdmissionQueue`) is always on in the gateway, so its cost when
nothing waits is measured in-process, side by side: the same three-budget reservation and
settlement on one SQLite store, straight (`Storage.reserve`, `settle`) and through the
line (`reserve_in_line`, `settle`, `AdmissionQueue.freed`), alternating blocks.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
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
from spendgate.clock import ManualClock
from spendgate.config.schema import BudgetScope
from spendgate.domain.admission import WorstCase
from spendgate.domain.budgets import Budget, CounterRef, Scoped, Unit
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.periods import Calendar, Period, window
from spendgate.services.admission_queue import AdmissionQueue
from spendgate.storage import ReservationPlan, Storage, open_storage

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


LINE_NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


def _line_plan(index: int, refs: tuple[CounterRef, ...]) -> ReservationPlan:
    rid = f"req_{index}"
    row = LedgerRow(
        rid, LINE_NOW, "openai.chat", "key", "u", None, "ml", "acme", (), "m", "m", "p",
        0, 0, 0, 0, 0, 0, 0, 0.0, None, False, False, False,
    )  # fmt: skip
    worst = WorstCase(500, True, 1_000, 1, 75_000, 600_000)  # gpt-4o-mini-sized
    return ReservationPlan(rid, "gw", LINE_NOW + timedelta(hours=1), refs, worst, (), 256, row)


async def _line_block(
    storage: Storage, queue: AdmissionQueue | None, refs: tuple[CounterRef, ...], first: int
) -> float:
    """Reserve and settle ``LINE_BLOCK`` requests one after another; microseconds each."""
    # here, not at the top: `NESTED` is imported by probes run on other source trees
    from spendgate.pipeline.in_line import reserve_in_line

    started = time.perf_counter()
    for index in range(first, first + LINE_BLOCK):
        plan = _line_plan(index, refs)
        if queue is None:
            await storage.reserve(plan)
        else:
            await reserve_in_line(storage, plan, queue)
        await storage.settle(plan.reservation_id, (60_000,) * len(refs), plan.template)
        if queue is not None:
            queue.freed(ref.id for ref in refs)
    return (time.perf_counter() - started) / LINE_BLOCK * 1e6


LINE_BLOCK = 300


async def line_overhead(rounds: int) -> str:
    """The admission line's cost when nothing waits, in-process (see the module doc)."""
    budgets = [
        Budget(b["name"], Scoped(BudgetScope(b["scope"]), b["match"], ()), Unit.NANOS,
               10**18, Period.parse(b["period"]), True, ())
        for b in NESTED["budgets"]
    ]  # fmt: skip
    members = {"key": "key", "team": "ml", "org": "acme"}
    calendar = Calendar.of("UTC")
    refs = tuple(
        CounterRef(b, members[b.name], window(b.period, LINE_NOW, calendar)) for b in budgets
    )
    with tempfile.TemporaryDirectory() as tmp:
        storage = open_storage(f"sqlite:///{tmp}/line.db", clock=ManualClock(LINE_NOW))
        await storage.open()
        queue = AdmissionQueue(max_wait_s=5.0, max_waiting=64)
        straight: list[float] = []
        lined: list[float] = []
        index = 0
        await _line_block(storage, None, refs, index)  # warm-up
        index += LINE_BLOCK
        for round_no in range(rounds * 4):
            order = [None, queue] if round_no % 2 == 0 else [queue, None]
            for which in order:
                took = await _line_block(storage, which, refs, index)
                index += LINE_BLOCK
                (straight if which is None else lined).append(took)
        await storage.close()
    added = [b - a for a, b in zip(straight, lined, strict=True)]
    return (
        "| reserve + settle, 3 budgets, SQLite | straight p50 us | through the line p50 us "
        "| added (median of pairs) |\n|---|---:|---:|---:|\n"
        f"| nothing waiting, {len(straight)} blocks of {LINE_BLOCK} each | "
        f"{median(straight):.1f} | {median(lined):.1f} | **{median(added):+.1f} us** |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--write", type=Path, default=None)
    args = parser.parse_args()
    table = asyncio.run(main_async(args.rounds))
    line = asyncio.run(line_overhead(args.rounds))
    print(line, flush=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    content = (
        f"Measured {stamp} on {machine()} with "
        f"`python -m benchmarks.budgets --rounds {args.rounds}`"
        " (one simulator, three gateways as separate processes: no admission control; three"
        " nested dollar budgets on key, team and org; those budgets plus a request, a token and"
        ' a concurrency limit; SQLite; "added" is the median over rounds of the difference'
        " of medians).\n\n" + table + "\n\nThe admission line when nothing waits"
        " (in-process, the same reservations straight and through `reserve_in_line`,"
        " alternating blocks):\n\n" + line
    )
    print(content)
    if args.write:
        write(ROOT / args.write if not args.write.is_absolute() else args.write, "budgets", content)


if __name__ == "__main__":
    main()
