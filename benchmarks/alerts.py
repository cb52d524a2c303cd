"""What alerts cost a request: the same gateway with three nested budgets, without and with
an ``alerts:`` section (thresholds on every budget, projected overruns, event rules), side
by side against one simulator, in alternating blocks; medians of each round's difference.

    python -m benchmarks.alerts [--rounds 5]

With alerts on, a request pays for the subscriber's filter (a type check, and a queue
append for the events a rule wants) and the extra thresholds in admission's crossing
check; alerts themselves are written and sent by a background task. The limits are large:
no threshold is crossed during the run, so what is measured is the per-request overhead.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import aiohttp

from benchmarks.budgets import NESTED
from benchmarks.common import CHAT_BODY, gateway_target, median, ms, run_block, stack

ALERTS = {
    "alerts": {
        "channels": {"ops": {"kind": "webhook", "url": "http://127.0.0.1:9/hook"}},
        "budgets": [{"budget": "*", "channels": ["ops"]}],
        "events": [
            {"kinds": ["refused", "downgraded", "loop_detected"], "channels": ["ops"]},
        ],
    }
}
VARIANTS = ("off", "on")


async def measure(s: Any, rounds: int, count: int, concurrency: int) -> dict[str, list[float]]:
    targets = [gateway_target(s, name, "/v1/chat/completions") for name in VARIANTS]
    out: dict[str, list[float]] = {"off": [], "on": [], "added": [], "rps off": [], "rps on": []}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for target in targets:
            await run_block(session, target, CHAT_BODY, count=100, concurrency=concurrency)
        for round_no in range(rounds):
            order = targets if round_no % 2 == 0 else targets[::-1]
            per_round = {}
            for target in order:
                _, total, wall = await run_block(
                    session, target, CHAT_BODY, count=count, concurrency=concurrency
                )
                out[target.name].extend(total)
                out[f"rps {target.name}"].append(count / wall)
                per_round[target.name] = median(total)
            out["added"].append(per_round["on"] - per_round["off"])
    return out


async def main_async(rounds: int) -> None:
    print("| scenario | alerts off p50 ms | alerts on p50 ms | added (median of rounds) "
          "| off req/s | on req/s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    with stack(variants={"off": NESTED, "on": {**NESTED, **ALERTS}}) as s:
        for name, count, concurrency in (
            ("chat, non-streaming, concurrency 1", 300, 1),
            ("chat, non-streaming, concurrency 32", 1500, 32),
        ):
            r = await measure(s, rounds, count, concurrency)
            print(
                f"| {name} | {ms(median(r['off']))} | {ms(median(r['on']))} | "
                f"**{ms(median(r['added']))}** | {median(r['rps off']):.0f} | "
                f"{median(r['rps on']):.0f} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main_async(parser.parse_args().rounds))


if __name__ == "__main__":
    main()
