"""System calls per request of the full-policy gateway at concurrency 32: ``strace -c -f``
attached to one gateway process (every thread) while 32 keep-alive connections send
non-streamed chat back to back. What a Python profiler cannot show: SQLite's file work
runs with the interpreter lock released (temporary files, WAL writes, locks).

    python -m benchmarks.syscalls [--seconds 8] [--baseline /tmp/main/src] [--files]

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

import aiohttp
import orjson

from benchmarks.common import CHAT_BODY, SOURCE, Target, gateway_target, stack
from benchmarks.profile import FULL_POLICY

_COUNT_LINE = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(\d*)\s*(\w+)\s*$")
_OPENED = re.compile(r'openat\([^,]+, "([^"]+)"')


async def _load(target: Target, seconds: float, concurrency: int = 32) -> int:
    payload = orjson.dumps(CHAT_BODY)
    done = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                async with session.post(target.url, data=payload, headers=target.headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"HTTP {r.status}: {await r.text()}")
                done += 1

        await asyncio.gather(*(one() for _ in range(concurrency)))
    return done


def _traced(pid: int, target: Target, seconds: float, out: Path, files: bool) -> int:
    strace = shutil.which("strace")
    if strace is None:
        raise SystemExit("strace not found")
    what = ["-e", "trace=openat"] if files else ["-c"]
    spy = subprocess.Popen([strace, "-f", *what, "-o", str(out), "-p", str(pid)])
    time.sleep(1)  # attached to every thread
    done = asyncio.run(_load(target, seconds))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--baseline", default=None, help="another source tree (its src/)")
    parser.add_argument("--files", action="store_true")
    args = parser.parse_args()
    trees = {"this tree": None} | ({"baseline": args.baseline} if args.baseline else {})
    variants = {
        name: {**FULL_POLICY, SOURCE: source} if source else FULL_POLICY
        for name, source in trees.items()
    }
    with stack(variants=variants) as s, tempfile.TemporaryDirectory() as tmp:
        for name in trees:
            target = gateway_target(s, name, "/v1/chat/completions")
            asyncio.run(_load(target, 2))  # warm-up
            out = Path(tmp) / f"{name.replace(' ', '-')}.txt"
            done = _traced(s.pids[name], target, args.seconds, out, args.files)
            text = out.read_text()
            print(f"== {name}: {done} requests in {args.seconds:g} s")
            print(_files(text, done) if args.files else _counts(text, done))


if __name__ == "__main__":
    main()
