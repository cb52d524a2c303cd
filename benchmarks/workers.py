"""Throughput, added latency and CPU per request with 1, 2 and 4 workers (``serve
--workers N``) on each storage backend, side by side in one run.

    python -m benchmarks.workers [--rounds 5] [--workers 1,2,4]
        [--backends sqlite,postgres,redis-pg]
        [--postgres-url postgresql://root@127.0.0.1:5432/postgres]
        [--counters-url redis://127.0.0.1:6379/0] [--storage-url URL]
        [--write docs/benchmarks.md]

One simulator, and one gateway per (backend, worker count), all running at once, each with
three nested dollar budgets (key, team, org) and stores of its own: ``sqlite`` a file,
``postgres`` a database of this run's own on the ``--postgres-url`` server (created, and
dropped at the end), ``redis-pg`` such a database with the live counters on
``--counters-url`` under a key prefix of its own (deleted at the end; never FLUSHDB).
``--storage-url`` instead: one storage URL for every gateway (the old form). The load
generator alternates blocks between the simulator itself ("direct") and each gateway,
rotating the order every round. Reported per scenario: p50 and requests per second of
each, for concurrency 1 the added p50 (median over rounds of the gateway's p50 minus
direct's), and the gateway's CPU per request (user + system time of the supervisor and
its workers over a block, divided by the block's requests: machine noise hardly moves it).
At concurrency 32 and 256 the aiohttp client keeps that many connections open; the kernel
spreads them over the workers (SO_REUSEPORT).

Everything (load generator, simulator, every worker, PostgreSQL, Redis) shares the
machine's cores: on a 2-core machine more workers cannot add cores, so read the ratios with
the core count, and the CPU per request for what more cores would give.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from benchmarks.budgets import NESTED
from benchmarks.common import (
    CHAT_BODY,
    ROOT,
    Stack,
    Target,
    cpu_seconds,
    gateway_target,
    median,
    ms,
    run_block,
    stack,
)
from benchmarks.latency import machine, write

SCENARIOS = (  # name, requests per block, concurrency
    ("chat, non-streaming, concurrency 1", 300, 1),
    ("chat, non-streaming, concurrency 32", 2000, 32),
    ("chat, non-streaming, concurrency 256", 4000, 256),
)


POOL = 4  # PostgreSQL connections per gateway process (storage.postgres.pool_max_size)
BACKEND_NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL", "redis-pg": "Redis + PostgreSQL"}


def name_of(workers: int, backend: str = "") -> str:
    name = f"{workers} worker" + ("s" if workers > 1 else "")
    return f"{backend} {name}" if backend else name


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its children (a supervisor and its workers)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(stat[1]) == pid:
            try:
                total += cpu_seconds(int(entry))
            except OSError:
                continue
    return total


def wait_for_every_worker(url: str, workers: int, timeout_s: float = 60) -> None:
    """Until ``/readyz`` on fresh connections has been answered by all ``workers``."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(seen) < workers and time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:  # noqa: S310
            seen.add(int(orjson.loads(response.read()).get("worker", 0)))
    if len(seen) < workers:
        raise RuntimeError(f"{url}: only workers {sorted(seen)} answered")


async def measure(
    s: Stack, names: list[str], count: int, concurrency: int, rounds: int
) -> dict[str, dict[str, list[float]]]:
    direct = Target("direct", s.sim_url + "/v1/chat/completions", {"authorization": "Bearer x"})
    targets = [direct] + [gateway_target(s, name, "/v1/chat/completions") for name in names]
    found: dict[str, dict[str, list[float]]] = {
        t.name: {"p50": [], "rps": [], "added": [], "cpu": []} for t in targets
    }
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        for target in targets:  # warm up: connections, caches, every worker
            await run_block(session, target, CHAT_BODY, count=200, concurrency=concurrency)
        for round_no in range(rounds):
            shift = round_no % len(targets)
            p50: dict[str, float] = {}
            for target in targets[shift:] + targets[:shift]:
                pid = s.pids.get(target.name)
                before = tree_cpu(pid) if pid else 0.0
                _ttfb, total, wall = await run_block(
                    session, target, CHAT_BODY, count=count, concurrency=concurrency
                )
                if pid:
                    found[target.name]["cpu"].append((tree_cpu(pid) - before) / count)
                p50[target.name] = median(total)
                found[target.name]["p50"].append(p50[target.name])
                found[target.name]["rps"].append(count / wall)
            for name in names:
                found[name]["added"].append(p50[name] - p50["direct"])
    return found


def row(scenario: str, names: list[str], found: dict[str, dict[str, list[float]]]) -> str:
    one = median(found[names[0]]["rps"])
    cells = [scenario, ms(median(found["direct"]["p50"])), f"{median(found['direct']['rps']):,.0f}"]
    for name in names:
        rps = median(found[name]["rps"])
        cells += [
            ms(median(found[name]["p50"])),
            f"**{ms(median(found[name]['added']))}**",
            f"{rps:,.0f}",
            f"{rps / one:.2f}x",
            ms(median(found[name]["cpu"])),
        ]
    return "| " + " | ".join(cells) + " |"


def header(names: list[str]) -> str:
    cells = ["scenario", "direct p50 ms", "direct req/s"]
    for name in names:
        cells += [
            f"{name} p50 ms",
            "added p50 ms",
            f"{name} req/s",
            "vs 1 worker",
            "CPU ms/req",
        ]
    return "| " + " | ".join(cells) + " |\n|---|" + "---:|" * (len(cells) - 1)


def storage_of(
    backend: str, postgres_url: str, counters_url: str, made: list[tuple[str, str]]
) -> dict[str, Any]:
    """The ``storage`` section of one gateway on ``backend`` (SQLite: the stack's file);
    what it creates goes into ``made`` (kind, name) to be dropped at the end."""
    if backend == "sqlite":
        return {}
    if backend not in ("postgres", "redis-pg"):
        raise SystemExit(f"unknown backend {backend!r}: sqlite, postgres or redis-pg")
    # BENCH_DATABASE_PREFIX: where several people share one server and each may create
    # only databases of their own prefix
    database = f"{os.environ.get('BENCH_DATABASE_PREFIX', 'sgbench')}_{uuid.uuid4().hex[:12]}"
    pg_admin(postgres_url, f'CREATE DATABASE "{database}"')
    made.append(("database", database))
    # 14 PostgreSQL worker processes at once with 1, 2 and 4 workers on two backends: a
    # pool of 4 each stays within the server's default max_connections (100)
    section: dict[str, Any] = {
        "url": postgres_url.rsplit("/", 1)[0] + "/" + database,
        "postgres": {"pool_min_size": 1, "pool_max_size": POOL},
    }
    if backend == "redis-pg":
        prefix = f"sgbench-{uuid.uuid4().hex[:8]}"
        made.append(("prefix", prefix))
        sep = "&" if "?" in counters_url else "?"
        section["counters_url"] = f"{counters_url}{sep}prefix={prefix}"
    return {"storage": section}


def pg_admin(postgres_url: str, statement: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(postgres_url, timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:  # its own event loop, off the benchmark's
        pool.submit(asyncio.run, run()).result()


def drop_made(made: list[tuple[str, str]], postgres_url: str, counters_url: str) -> None:
    prefixes = [name for kind, name in made if kind == "prefix"]
    if prefixes:
        import redis

        client = redis.Redis.from_url(counters_url.split("?", 1)[0])
        for prefix in prefixes:
            found = list(client.scan_iter(match=f"{{{prefix}}}:*", count=1000))
            if found:
                client.delete(*found)
        client.close()
    for kind, name in made:
        if kind == "database":
            pg_admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def main_async(
    rounds: int,
    counts: list[int],
    storage_url: str | None,
    backends: list[str] | None = None,
    postgres_url: str = "postgresql://root@127.0.0.1:5432/postgres",
    counters_url: str = "redis://127.0.0.1:6379/0",
) -> str:
    backends = backends or ["sqlite"]
    several = len(backends) > 1
    variants: dict[str, dict[str, Any]] = {}
    groups: dict[str, list[str]] = {}
    made: list[tuple[str, str]] = []
    try:
        for backend in backends:
            label = BACKEND_NAMES.get(backend, backend) if several else ""
            for n in counts:
                extra: dict[str, Any] = {**NESTED, "server": {"workers": n}}
                if storage_url:
                    extra["storage"] = {"url": storage_url}
                else:
                    extra.update(storage_of(backend, postgres_url, counters_url, made))
                variants[name_of(n, label)] = extra
                groups.setdefault(backend, []).append(name_of(n, label))
        lines: list[str] = []
        with stack(variants=variants) as s:
            for name, extra in variants.items():
                wait_for_every_worker(s.gateways[name][0], extra["server"]["workers"])
            every = list(variants)
            found = {
                scenario: await measure(s, every, count, concurrency, rounds)
                for scenario, count, concurrency in SCENARIOS
            }
        for backend, names in groups.items():
            if several:
                lines.append(f"\n{BACKEND_NAMES.get(backend, backend)}:\n")
            lines.append(header(names))
            for scenario, _count, _concurrency in SCENARIOS:
                lines.append(row(scenario, names, found[scenario]))
                print(lines[-1], flush=True)
        return "\n".join(lines).strip()
    finally:
        drop_made(made, postgres_url, counters_url)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma separated")
    parser.add_argument(
        "--backends", default="sqlite", help="sqlite, postgres, redis-pg (comma separated)"
    )
    parser.add_argument(
        "--postgres-url",
        default="postgresql://root@127.0.0.1:5432/postgres",
        help="a PostgreSQL server (its database for CREATE DATABASE): one database a gateway",
    )
    parser.add_argument(
        "--counters-url", default="redis://127.0.0.1:6379/0", help="Redis for redis-pg"
    )
    parser.add_argument("--storage-url", default=None, help="one storage URL for every gateway")
    parser.add_argument("--write", type=Path, default=None, help="update this markdown file")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    backends = [b for b in args.backends.split(",") if b]
    table = asyncio.run(
        main_async(
            args.rounds, counts, args.storage_url, backends, args.postgres_url, args.counters_url
        )
    )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = f"python -m benchmarks.workers --rounds {args.rounds} --workers {args.workers}"
    if args.storage_url:
        command += f" --storage-url {args.storage_url}"
        described = args.storage_url.split(":", 1)[0]
    else:
        command += f" --backends {args.backends}"
        described = ", ".join(BACKEND_NAMES.get(b, b) for b in backends)
        if any(b != "sqlite" for b in backends):
            command += f" --postgres-url {args.postgres_url}"
        if "redis-pg" in backends:
            command += f" --counters-url {args.counters_url}"
    content = (
        f"Measured {stamp} on {machine()} (shared with other work) with `{command}`: one "
        "simulator and one gateway per backend and worker count, all running at once, each "
        f"with three nested dollar budgets and stores of its own ({described}; PostgreSQL "
        "15 and Redis 7 on the same machine); load generator, simulator, databases and every "
        'worker on the same cores; "added" is the median over rounds of the gateway\'s p50 '
        "minus direct's; CPU ms/req is the gateway's (supervisor and workers) user + system "
        "time over a block divided by its requests; PostgreSQL pools of "
        f"{POOL} connections a process).\n\n" + table
    )
    print(content)
    if args.write:
        write(ROOT / args.write if not args.write.is_absolute() else args.write, "workers", content)


if __name__ == "__main__":
    main()
