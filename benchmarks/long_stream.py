"""CPU a long streamed answer costs: spendgate against the bare pass-through.

Coding agents stream every answer, and an answer is hundreds to thousands of events: what
the gateway does per event (cut the stream into events, parse each, collect the text for
the output guard and for an estimate) can cost more than the request's own admission and
settlement. One simulator, the pass-through (`benchmarks.passthrough`), spendgate metering
only and with the full policy (`benchmarks.peers.FULL_POLICY`), and, with ``--baseline``,
the same two from another source tree; every round streams ``--requests`` chat answers of
``--tokens`` output tokens (``x-sim-output-tokens``, OpenAI chunk framing, about 300 bytes
an event) through each, at concurrency 4, and reads each process's CPU time over its block.
Medians over rounds; a process's CPU clock ticks every 10 ms, so use enough requests.

    python -m benchmarks.long_stream [--tokens 2000] [--requests 40] [--rounds 5]
        [--baseline /tmp/base/src]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

import aiohttp
import orjson

from benchmarks.common import PYTHON, SOURCE, free_port, gateway_target, stack
from benchmarks.peers import FULL_POLICY, _process, tree_cpu

PATH = "/v1/chat/completions"


async def _block(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], body: bytes, count: int
) -> None:
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with session.post(url, data=body, headers=headers) as answer:
                assert answer.status == 200, await answer.text()
                async for _ in answer.content.iter_any():
                    pass

    await asyncio.gather(*(worker() for _ in range(4)))


async def measure(
    targets: list[tuple[str, str, dict[str, str], int]], tokens: int, requests: int, rounds: int
) -> dict[str, list[float]]:
    body = orjson.dumps(
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Tell a long story."}],
            "max_tokens": tokens,
            "stream": True,
        }
    )
    extra = {"content-type": "application/json", "x-sim-output-tokens": str(tokens)}
    cpu: dict[str, list[float]] = {name: [] for name, *_ in targets}
    async with aiohttp.ClientSession() as session:
        for _, url, headers, _ in targets:  # warm-up
            await _block(session, url, {**headers, **extra}, body, 8)
        for round_no in range(rounds):
            shift = round_no % len(targets)
            for name, url, headers, pid in targets[shift:] + targets[:shift]:
                before = tree_cpu(pid)
                await _block(session, url, {**headers, **extra}, body, requests)
                cpu[name].append((tree_cpu(pid) - before) / requests)
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", help="another build's src directory, run side by side")
    args = parser.parse_args()
    variants: dict[str, dict[str, Any]] = {"metering": {}, "policy": dict(FULL_POLICY)}
    if args.baseline:
        variants["metering (baseline)"] = {SOURCE: args.baseline}
        variants["policy (baseline)"] = {**FULL_POLICY, SOURCE: args.baseline}
    with stack(variants=variants) as s:
        port = free_port()
        argv = [PYTHON, "-m", "benchmarks.passthrough", "--port", str(port)]
        argv += ["--upstream", s.sim_url]
        with _process(argv, f"http://127.0.0.1:{port}/none") as bare:
            targets = [("pass-through", f"http://127.0.0.1:{port}{PATH}", {}, bare.pid)]
            for name in variants:
                target = gateway_target(s, name, PATH)
                targets.append((name, target.url, target.headers, s.pids[name]))
            cpu = asyncio.run(measure(targets, args.tokens, args.requests, args.rounds))
    floor = statistics.median(cpu["pass-through"])
    print(f"| variant | CPU ms per {args.tokens}-token stream | µs per token | vs pass-through |")
    print("|---|---:|---:|---:|")
    for name, values in cpu.items():
        value = statistics.median(values)
        per_token = value * 1e6 / args.tokens
        print(f"| {name} | {value * 1e3:.2f} | {per_token:.2f} | {value / floor:.2f}x |")


if __name__ == "__main__":
    main()
