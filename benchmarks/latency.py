"""Added latency and throughput of the gateway against calling the upstream directly.

    python -m benchmarks.latency [--rounds 5] [--write docs/benchmarks.md]

Simulator, gateway and this load generator run as three processes on the same machine
(the gateway with auth, metering and the SQLite ledger on). Each scenario alternates
blocks of direct and gateway requests over several rounds and reports medians.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.common import (
    CHAT_BODY,
    ROOT,
    Stack,
    median,
    ms,
    percentile,
    run_block,
    stack,
    targets,
)

ANTHROPIC_BODY = {
    "model": "claude-haiku-4-5",
    "max_tokens": 32,
    "messages": [{"role": "user", "content": "Say hello in five words."}],
}


@dataclass
class Scenario:
    name: str
    path: str
    body: dict[str, Any]
    concurrency: int
    count: int
    stream: bool = False


SCENARIOS = (
    Scenario("chat, non-streaming, concurrency 1", "/v1/chat/completions", CHAT_BODY, 1, 300),
    Scenario(
        "chat, streaming (TTFB), concurrency 1", "/v1/chat/completions", CHAT_BODY, 1, 300, True
    ),
    Scenario(
        "messages, streaming (TTFB), concurrency 1", "/v1/messages", ANTHROPIC_BODY, 1, 200, True
    ),
    Scenario("chat, non-streaming, concurrency 32", "/v1/chat/completions", CHAT_BODY, 32, 1500),
    Scenario(
        "chat, streaming (TTFB), concurrency 32", "/v1/chat/completions", CHAT_BODY, 32, 1500, True
    ),
)


@dataclass
class Result:
    scenario: Scenario
    direct: list[float]
    gateway: list[float]
    direct_rps: float
    gateway_rps: float
    added_per_round: list[float]


async def measure(s: Stack, scenario: Scenario, rounds: int) -> Result:
    direct_t, gateway_t = targets(s, scenario.path)
    if scenario.path == "/v1/messages":
        direct_t.headers["anthropic-version"] = "2023-06-01"
        gateway_t.headers["anthropic-version"] = "2023-06-01"
    samples: dict[str, list[float]] = {"direct": [], "gateway": []}
    walls: dict[str, float] = {"direct": 0.0, "gateway": 0.0}
    added: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        for target in (direct_t, gateway_t):  # warm-up: connections, caches, JIT-free paths
            await run_block(
                session,
                target,
                scenario.body,
                count=100,
                concurrency=scenario.concurrency,
                stream=scenario.stream,
            )
        for round_no in range(rounds):
            order = (direct_t, gateway_t) if round_no % 2 == 0 else (gateway_t, direct_t)
            per_round = {}
            for target in order:
                ttfb, total, wall = await run_block(
                    session,
                    target,
                    scenario.body,
                    count=scenario.count,
                    concurrency=scenario.concurrency,
                    stream=scenario.stream,
                )
                values = ttfb if scenario.stream else total
                samples[target.name].extend(values)
                walls[target.name] += wall
                per_round[target.name] = median(values)
            added.append(per_round["gateway"] - per_round["direct"])
    n = scenario.count * rounds
    return Result(
        scenario,
        samples["direct"],
        samples["gateway"],
        n / walls["direct"],
        n / walls["gateway"],
        added,
    )


def table(results: list[Result]) -> str:
    lines = [
        "| scenario | direct p50 ms | gateway p50 ms | added p50 ms (median of rounds) "
        "| gateway p99 ms | direct req/s | gateway req/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.scenario.name} | {ms(median(r.direct))} | {ms(median(r.gateway))} | "
            f"**{ms(median(r.added_per_round))}** | {ms(percentile(r.gateway, 0.99))} | "
            f"{r.direct_rps:,.0f} | {r.gateway_rps:,.0f} |"
        )
    return "\n".join(lines)


def machine() -> str:
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return f"{cores} cores, {cpu}, Python {platform.python_version()}"


def write(path: Path, section: str, content: str) -> None:
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{content}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


async def main_async(rounds: int, only: str | None) -> list[Result]:
    results = []
    with stack() as s:
        for scenario in SCENARIOS:
            if only and only not in scenario.name:
                continue
            result = await measure(s, scenario, rounds)
            print(table([result]).splitlines()[-1], flush=True)
            results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default=None, help="run scenarios whose name contains this")
    parser.add_argument("--write", type=Path, default=None, help="update this markdown file")
    args = parser.parse_args()
    results = asyncio.run(main_async(args.rounds, args.only))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    content = (
        f"Measured {stamp} on {machine()} with "
        f"`python -m benchmarks.latency --rounds {args.rounds}`"
        " (simulator, gateway and load generator as three processes on the same cores; gateway"
        " with key auth, metering and the SQLite ledger on; streaming rows compare time to first"
        " byte).\n\n" + table(results)
    )
    print(content)
    if args.write:
        write(ROOT / args.write if not args.write.is_absolute() else args.write, "latency", content)


if __name__ == "__main__":
    main()
