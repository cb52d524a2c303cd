"""Where a gateway's interpreter time goes at concurrency 1 (Redis + PostgreSQL, or SQLite): py-spy
(``record --gil``: samples of the thread holding the interpreter lock) on one gateway
process with three nested dollar budgets (``--limits``: and three rate limits), while one
keep-alive connection sends requests back to back.

    python -m benchmarks.spy_c1 [--seconds 20] [--limits] [--top 30]
        [--baseline /work/main/src] [--rounds 1]
        [--postgres-url postgresql://root@127.0.0.1:5432/postgres]
        [--counters-url redis://127.0.0.1:6379/0] [--out /tmp/spy]
        [--backend redis-pg|sqlite] [--idle]

Printed: the share of samples by package area (inclusive: a sample counts for every area
on its stack) and the top functions by self and by inclusive samples. ``--baseline`` runs
a second gateway from another source tree (``PYTHONPATH``), profiled in turn after this
tree's, ``--rounds`` times each (the samples of a tree's rounds added up). py-spy must be
on ``PATH`` or beside the interpreter (``pip install py-spy``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from benchmarks.budgets import LIMITED, NESTED
from benchmarks.common import CHAT_BODY, SOURCE, gateway_target, stack
from benchmarks.workers import drop_made, storage_of

AREAS = (
    ("redis", "redis/"),
    ("asyncpg", "asyncpg/"),
    ("aiohttp", "aiohttp/"),
    ("storage.redis", "spendgate/storage/redis/"),
    ("storage.postgres", "spendgate/storage/postgres/"),
    ("storage.sqlite", "spendgate/storage/sqlite/"),
    ("storage (other)", "spendgate/storage/"),
    ("pipeline", "spendgate/pipeline/"),
    ("domain", "spendgate/domain/"),
    ("dialects", "spendgate/dialects/"),
    ("services", "spendgate/services/"),
    ("events", "spendgate/events/"),
    ("asyncio", "asyncio/"),
)


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy not found: pip install py-spy")
    return found


async def _load(url: str, headers: dict[str, str], seconds: float) -> int:
    payload = orjson.dumps(CHAT_BODY)
    count = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.post(url, data=payload, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {await response.text()}")
            count += 1
    return count


def _summary(collapsed: str, top: int) -> str:
    total = 0
    areas: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for line in collapsed.splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text:
            continue
        count = int(count_text)
        total += count
        frames = stack_text.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
        seen = set()
        for frame in frames:
            for name, marker in AREAS:
                if marker in frame and name not in seen:
                    # spendgate/storage/redis/ is not "storage (other)"
                    if name == "storage (other)" and (
                        "storage/redis/" in frame
                        or "storage/postgres/" in frame
                        or "storage/sqlite/" in frame
                    ):
                        continue
                    seen.add(name)
        for name in seen:
            areas[name] += count
    lines = [f"{total} samples"]
    lines += [f"  {name:20} {100 * n / total:5.1f}%" for name, n in areas.most_common()]
    lines.append("self:")
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines.append("inclusive:")
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


def _record(pid: int, seconds: float, out: Path, idle: bool) -> subprocess.Popen[bytes]:
    # --idle: wall time, every thread, waiting included (epoll, SQLite's file calls)
    mode = ["--idle"] if idle else ["--gil"]
    command = [_py_spy(), "record", *mode, "--rate", "500", "--format", "raw"]
    command += ["--duration", str(int(seconds)), "--output", str(out), "--pid", str(pid)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--limits", action="store_true")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--baseline", default=None, help="another source tree (its src/)")
    parser.add_argument("--postgres-url", default="postgresql://root@127.0.0.1:5432/postgres")
    parser.add_argument("--counters-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", default=None, help="keep py-spy's collapsed stacks here")
    parser.add_argument("--backend", choices=("redis-pg", "sqlite"), default="redis-pg")
    parser.add_argument("--idle", action="store_true", help="wall time, not --gil")
    args = parser.parse_args()
    made: list[tuple[str, str]] = []
    trees = {"this tree": None} | ({"baseline": args.baseline} if args.baseline else {})
    try:
        variants: dict[str, dict[str, Any]] = {}
        for name, source in trees.items():
            section = storage_of(args.backend, args.postgres_url, args.counters_url, made)
            variant: dict[str, Any] = {**NESTED, **section, **(LIMITED if args.limits else {})}
            variants[name] = {**variant, SOURCE: source} if source else variant
        with stack(variants=variants) as s, tempfile.TemporaryDirectory() as tmp:
            folder = Path(args.out or tmp)
            folder.mkdir(parents=True, exist_ok=True)
            targets = {name: gateway_target(s, name, "/v1/chat/completions") for name in trees}
            for target in targets.values():
                asyncio.run(_load(target.url, target.headers, 2))  # warm up
            stacks = {name: "" for name in trees}
            counts = dict.fromkeys(trees, 0)
            for round_ in range(args.rounds):
                for name, target in targets.items():
                    out = folder / f"{name.replace(' ', '-')}-{round_}.txt"
                    spy = _record(s.pids[name], args.seconds, out, args.idle)
                    counts[name] += asyncio.run(_load(target.url, target.headers, args.seconds + 1))
                    spy.wait(timeout=60)
                    stacks[name] += out.read_text()
            for name in trees:
                print(f"== {name}: {counts[name]} requests in {args.rounds} x {args.seconds} s")
                print(_summary(stacks[name], args.top))
    finally:
        drop_made(made, args.postgres_url, args.counters_url)


if __name__ == "__main__":
    main()
