"""Where a request's time goes with the full policy: key auth, three nested budgets (user,
team, org), three rate limits, the SQLite ledger; non-streamed chat at concurrency 1 and 32.

    python -m benchmarks.profile [--requests 2000] [--top 25]

One simulator and one gateway run as separate processes, the gateway under cProfile
(`benchmarks.profiled`, event-loop thread) with every SQLite statement counted. After a
warm-up, each scenario is measured alone and printed: the top functions by inclusive
time (cProfile's ``cumtime``; a deterministic profiler inflates code that makes many small
calls, so read the ranks, not the absolute times) and the SQLite statements per request by
kind. cProfile slows the gateway down several times: this says where, not how fast.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from benchmarks.common import CHAT_BODY, LAUNCH, PYTHON, SOURCE, gateway_target, run_block, stack

# The "full policy" (issue 17): three nested dollar budgets and three rate limits.
FULL_POLICY: dict[str, Any] = {
    "budgets": [
        {"name": "user", "scope": "user", "match": "*", "limit_usd": "1000", "period": "daily"},
        {"name": "team", "scope": "team", "match": "ml", "limit_usd": "5000", "period": "monthly"},
        {"name": "org", "scope": "org", "match": "acme", "limit_usd": "90000", "period": "monthly"},
    ],
    "limits": [
        {"name": "rpm", "scope": "key", "requests": "1000000/minute"},
        {"name": "tpm", "scope": "team", "tokens": "1000000000/minute"},
        {"name": "inflight", "scope": "org", "concurrency": 10000},
    ],
}

SCENARIOS = (("concurrency 1", 1), ("concurrency 32", 32))


def _area(file: str, name: str) -> str:
    if "benchmarks/profiled" in file:
        return "the profiler's statement counter (measurement overhead)"
    if "/spendgate/" in file:
        return "spendgate/" + file.split("/spendgate/", 1)[1].split("/", 1)[0]
    if any(lib in file for lib in ("aiohttp", "multidict", "yarl", "propcache")):
        return "aiohttp (server and client)"
    if "sqlite3" in name:
        return "SQLite (execute, fetch)"
    if "asyncio" in file or "uvloop" in file:
        return "asyncio"
    return "other (builtins, stdlib)"


def areas(stats: pstats.Stats) -> list[tuple[str, float]]:
    """Self time by where the code lives, largest first, in % of all of it."""
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    shares: dict[str, float] = {}
    for (file, _, name), (_, _, own, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        area = _area(file, name)
        shares[area] = shares.get(area, 0.0) + 100 * own / total
    return sorted(shares.items(), key=lambda kv: kv[1], reverse=True)


def summary(prof: Path, counts: dict[str, int], requests: int, top: int) -> str:
    stats = pstats.Stats(str(prof))
    total = max(v[3] for v in stats.stats.values())  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][3], reverse=True)  # type: ignore[attr-defined]
    lines = ["| function | inclusive % | calls per request |", "|---|---:|---:|"]
    shown = 0
    for (file, line, name), (_, calls, _, cum, _) in rows:
        if "spendgate" not in file and "aiohttp" not in file and "sqlite" not in name:
            continue
        where = file.split("/src/", 1)[-1].split("site-packages/", 1)[-1]
        lines.append(
            f"| `{where}:{line} {name}` | {100 * cum / total:.1f} | {calls / requests:.2f} |"
        )
        shown += 1
        if shown >= top:
            break
    lines += ["", "| self time, top 12 | self % | calls per request |", "|---|---:|---:|"]
    for (file, line, name), (_, calls, own, _, _) in sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda kv: kv[1][2],
        reverse=True,
    )[:12]:
        where = file.split("/src/", 1)[-1].split("site-packages/", 1)[-1]
        lines.append(
            f"| `{where}:{line} {name}` | {100 * own / total:.1f} | {calls / requests:.2f} |"
        )
    lines += ["", "| area (self time, share of the thread's CPU) | % |", "|---|---:|"]
    for area, share in areas(stats):
        lines.append(f"| {area} | {share:.1f} |")
    statements = sum(counts.values())
    lines += [
        "",
        f"SQLite statements per request: **{statements / requests:.2f}**",
        "",
        "| statement | per request |",
        "|---|---:|",
    ]
    for sql, n in sorted(counts.items(), key=lambda kv: kv[1], reverse=True):
        lines.append(f"| `{sql}` | {n / requests:.2f} |")
    return "\n".join(lines)


async def drive(s: Any, pid: int, prefix: Path, requests: int, top: int) -> list[str]:
    target = gateway_target(s, "gateway", "/v1/chat/completions")
    out = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for index, (name, concurrency) in enumerate(SCENARIOS):
            await run_block(session, target, CHAT_BODY, count=300, concurrency=concurrency)
            os.kill(pid, signal.SIGUSR1)
            await asyncio.sleep(0.2)
            await run_block(session, target, CHAT_BODY, count=requests, concurrency=concurrency)
            os.kill(pid, signal.SIGUSR2)
            json_path = Path(f"{prefix}.{index}.json")
            for _ in range(600):
                if json_path.exists():
                    break
                await asyncio.sleep(0.1)
            time.sleep(0.2)
            counts = orjson.loads(json_path.read_bytes())
            text = summary(Path(f"{prefix}.{index}.prof"), counts, requests, top)
            out.append(
                f"### Full policy, non-streamed chat, {name} ({requests} requests)\n\n{text}"
            )
            print(out[-1], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--keep", type=Path, default=None, help="keep the .prof files here")
    parser.add_argument("--baseline", type=Path, default=None, help="profile this src/ instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spendgate-profile-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        prefix = folder / "profile"
        variant = {**FULL_POLICY, LAUNCH: [PYTHON, "-m", "benchmarks.profiled", str(prefix)]}
        if args.baseline:
            variant[SOURCE] = args.baseline
        with stack(variants={"gateway": variant}) as s:
            asyncio.run(drive(s, s.pids["gateway"], prefix, args.requests, args.top))


if __name__ == "__main__":
    main()
