"""System calls per request of the full-policy gateway at concurrency 32: ``strace -c -f``
attached to one gateway process (every thread) while 32 keep-alive connections send
non-streamed chat back to back. What a Python profiler cannot show: SQLite's file work
runs with the interpreter lock released (temporary files, WAL writes, locks).

    python -m benchmarks.syscalls [--seconds 8] [--baseline /tmp/main/src] [--files]
        [--backend sqlite|redis-pg] [--concurrency 32] [--trace FILE]
        [--postgres-url postgresql://root@127.0.0.1:5432/postgres]
        [--counters-url redis://127.0.0.1:6379/0]

``--backend redis-pg``: counters on Redis, the ledger and keys on PostgreSQL (a database
of its own, ``BENCH_DATABASE_PREFIX``, dropped at the end), with three nested budgets
instead of the full policy. ``--trace FILE``: also ``strace -f -tt -e
trace=network,read,write`` of 20 requests (one connection) into ``FILE.<build>``, to
read a request's calls in order.

Printed per build: each system call's count per request (and errors). ``--files``: the
files opened while measuring (``strace -e trace=openat``), grouped by folder, instead of
the counts. strace slows the gateway down: read counts, not times.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from benchmarks.budgets import NESTED
from benchmarks.common import CHAT_BODY, SOURCE, Target, gateway_target, stack
from benchmarks.profile import FULL_POLICY
from benchmarks.workers import drop_made, storage_of

_COUNT_LINE = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(\d*)\s*(\w+)\s*$")
_OPENED = re.compile(r'openat\([^,]+, "([^"]+)"')


async def _load(
    target: Target, seconds: float, concurrency: int = 32, requests: int | None = None
) -> int:
    payload = orjson.dumps(CHAT_BODY)
    done = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> None:
            nonlocal done
            while time.monotonic() < deadline and (requests is None or done < requests):
                async with session.post(target.url, data=payload, headers=target.headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"HTTP {r.status}: {await r.text()}")
                done += 1

        await asyncio.gather(*(one() for _ in range(concurrency)))
    return done


def _traced(
    pid: int,
    target: Target,
    seconds: float,
    out: Path,
    what: list[str],
    concurrency: int = 32,
    requests: int | None = None,
) -> int:
    strace = shutil.which("strace")
    if strace is None:
        raise SystemExit("strace not found")
    spy = subprocess.Popen([strace, "-f", *what, "-o", str(out), "-p", str(pid)])
    time.sleep(1)  # attached to every thread
    done = asyncio.run(_load(target, seconds, concurrency, requests))
    spy.send_signal(signal.SIGINT)
    spy.wait(timeout=60)
    return done


def _counts(text: str, requests: int) -> str:
    lines = ["| system call | per request | errors per request |", "|---|---:|---:|"]
    for line in text.splitlines():
        found = _COUNT_LINE.match(line)
        if found and found.group(3) != "total":
            calls, errors = int(found.group(1)), int(found.group(2) or 0)
            lines.append(
                f"| `{found.group(3)}` | {calls / requests:.2f} | {errors / requests:.2f} |"
            )
    return "\n".join(lines)


def _files(text: str, requests: int) -> str:
    folders = Counter(str(Path(p).parent) for p in _OPENED.findall(text))
    lines = ["| folder of the files opened | per request |", "|---|---:|"]
    lines += [f"| `{folder}` | {n / requests:.3f} |" for folder, n in folders.most_common()]
    return "\n".join(lines)


def _variants(args: argparse.Namespace, made: list[tuple[str, str]]) -> dict[str, Any]:
    trees = {"this tree": None} | ({"baseline": args.baseline} if args.baseline else {})
    variants: dict[str, Any] = {}
    for name, source in trees.items():
        if args.backend == "sqlite":
            variant = dict(FULL_POLICY)
        else:
            storage = storage_of(args.backend, args.postgres_url, args.counters_url, made)
            variant = {**NESTED, **storage}
        variants[name] = {**variant, SOURCE: source} if source else variant
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--baseline", default=None, help="another source tree (its src/)")
    parser.add_argument("--files", action="store_true")
    parser.add_argument("--backend", choices=("sqlite", "redis-pg"), default="sqlite")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--trace", default=None, help="a file name for a 20-request trace")
    parser.add_argument("--postgres-url", default="postgresql://root@127.0.0.1:5432/postgres")
    parser.add_argument("--counters-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    made: list[tuple[str, str]] = []
    try:
        variants = _variants(args, made)
        with stack(variants=variants) as s, tempfile.TemporaryDirectory() as tmp:
            for name in variants:
                target = gateway_target(s, name, "/v1/chat/completions")
                asyncio.run(_load(target, 2, args.concurrency))  # warm-up
                out = Path(tmp) / f"{name.replace(' ', '-')}.txt"
                what = ["-e", "trace=openat"] if args.files else ["-c"]
                pid = s.pids[name]
                done = _traced(pid, target, args.seconds, out, what, args.concurrency)
                text = out.read_text()
                print(f"== {name}: {done} requests in {args.seconds:g} s, c={args.concurrency}")
                print(_files(text, done) if args.files else _counts(text, done))
                if args.trace:
                    trace = Path(f"{args.trace}.{name.replace(' ', '-')}")
                    what = ["-tt", "-e", "trace=network,read,write"]
                    _traced(pid, target, 10, trace, what, 1, 20)
                    print(f"   20 requests traced: {trace}")
    finally:
        drop_made(made, args.postgres_url, args.counters_url)


if __name__ == "__main__":
    main()
