"""Instructions per request, counted by callgrind: a CPU measure that other work on the
machine does not move, for comparing two builds of the request path (or a build against
the bare pass-through) on a shared machine where CPU time is noise.

    python -m benchmarks.instructions [--requests 1000] [--concurrency 32] [--baseline SRC]

The simulator runs natively; the bare aiohttp pass-through (`benchmarks.passthrough`),
this tree's gateway with the full policy (`benchmarks.profile.FULL_POLICY`: key auth, three
nested budgets, three rate limits, the SQLite ledger) and, with ``--baseline``, the same
gateway from another source tree each run under ``valgrind --tool=callgrind`` with
instrumentation off. After a warm-up, each block of non-streamed chat is counted alone
(``callgrind_control --zero``, instrumentation on, the block, off, ``--dump``): every
instruction of every thread of the process (the event loop, SQLite's writer thread)
divided by the requests. Valgrind runs one thread at a time and slows the process about
fifty times, so at concurrency 32 more requests meet in one event-loop turn than they
would natively (larger gathered commits): compare builds under the same tool, not these
counts with native CPU time. Counts repeat within a fraction of a per cent run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.common import (
    CHAT_BODY,
    LAUNCH,
    PYTHON,
    SOURCE,
    Target,
    free_port,
    gateway_target,
    run_block,
    stack,
    wait_http,
)
from benchmarks.profile import FULL_POLICY

PATH = "/v1/chat/completions"


def _valgrind(out: Path) -> list[str]:
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out}.%p",
        PYTHON,
    ]


@contextmanager
def _passthrough(sim_url: str, out: Path) -> Iterator[tuple[Target, int]]:
    port = free_port()
    argv = [*_valgrind(out), "-m", "benchmarks.passthrough", "--port", str(port)]
    proc = subprocess.Popen(
        [*argv, "--upstream", sim_url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/none", 120)
        yield Target("pass-through", f"http://127.0.0.1:{port}{PATH}", {}), proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _control(pid: int, *args: str) -> None:
    subprocess.run(
        ["callgrind_control", *args, str(pid)], check=True, capture_output=True, timeout=120
    )


def _latest_total(out: Path, pid: int) -> int:
    dumps = sorted(
        out.parent.glob(f"{out.name}.{pid}.*"), key=lambda p: int(p.name.rsplit(".", 1)[1])
    )
    for line in dumps[-1].read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dumps[-1]}")


async def _count(
    session: aiohttp.ClientSession,
    target: Target,
    pid: int,
    out: Path,
    requests: int,
    concurrency: int,
) -> float:
    _control(pid, "--zero")
    _control(pid, "--instr=on")
    await run_block(session, target, CHAT_BODY, count=requests, concurrency=concurrency)
    _control(pid, "--instr=off")
    _control(pid, "--dump")
    return _latest_total(out, pid) / requests


async def measure(
    targets: list[tuple[Target, int]], out: Path, requests: int, concurrency: int, rounds: int
) -> dict[str, list[float]]:
    counts: dict[str, list[float]] = {target.name: [] for target, _ in targets}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for target, _ in targets:  # warm-up: connections, caches, the first windows
            await run_block(session, target, CHAT_BODY, count=200, concurrency=concurrency)
        for _ in range(rounds):
            for target, pid in targets:
                per = await _count(session, target, pid, out, requests, concurrency)
                counts[target.name].append(per)
                print(f"{target.name}: {per:,.0f} instructions per request", flush=True)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--baseline", type=Path, default=None, help="a baseline's src/ too")
    parser.add_argument("--tree", type=Path, default=None, help="run 'policy' from this src/")
    parser.add_argument("--no-passthrough", action="store_true")
    parser.add_argument("--keep", type=Path, default=None, help="keep callgrind's dumps here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spendgate-instructions-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / "callgrind"
        launch = [*_valgrind(out), "-m", "spendgate"]
        variants: dict[str, dict[str, Any]] = {"policy": {**FULL_POLICY, LAUNCH: launch}}
        if args.tree:  # a copy (`git archive`): edits to this tree meanwhile change nothing
            variants["policy"][SOURCE] = args.tree
        if args.baseline:
            variants["baseline"] = {**FULL_POLICY, LAUNCH: launch, SOURCE: args.baseline}
        with stack(variants=variants, ready_timeout=180) as s:
            targets = [(gateway_target(s, name, PATH), s.pids[name]) for name in variants]
            if args.no_passthrough:
                counts = asyncio.run(
                    measure(targets, out, args.requests, args.concurrency, args.rounds)
                )
            else:
                with _passthrough(s.sim_url, out) as bare:
                    counts = asyncio.run(
                        measure([bare, *targets], out, args.requests, args.concurrency, args.rounds)
                    )
    bare_count = min(counts.get("pass-through", [0.0])) or None
    print(f"\n| variant (c={args.concurrency}, {args.requests} requests a block) "
          "| instructions per request (min, max) | against the pass-through |")  # fmt: skip
    print("|---|---:|---:|")
    for name, values in counts.items():
        ratio = f"{min(values) / bare_count:.2f}x" if bare_count else "—"
        print(f"| {name} | {min(values):,.0f} ({max(values):,.0f}) | {ratio} |")


if __name__ == "__main__":
    main()
