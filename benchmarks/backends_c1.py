"""Added latency at concurrency 1 of one single-process gateway per backend, with nothing
else of this benchmark running (`benchmarks.workers` runs 21 processes at once, which
inflates concurrency-1 latency on a small machine): SQLite, PostgreSQL, Redis + PostgreSQL,
and Redis + PostgreSQL with ``storage.postgres.synchronous_commit: false`` (what the
ledger's commit costs).

    python -m benchmarks.backends_c1 [--rounds 3] [--backends all|redis-pg]
        [--baseline /path/to/other/src] [--limits] [--commit-async]
        [--postgres-url postgresql://root@127.0.0.1:5432/postgres]
        [--counters-url redis://127.0.0.1:6379/0]

``--baseline`` adds, for each backend measured, the same gateway run from another source
tree (``PYTHONPATH``: the commit before a change), in the same rounds. ``--limits`` adds
three rate limits (requests, tokens, concurrency) to the three budgets.

Blocks of 200 requests alternate between the simulator itself and each gateway, in
turn, every round; reported: the median over rounds of each block's p50, and of the
gateway's p50 minus direct's ("added"), and of the gateway process's CPU time (user +
system) over a block divided by its requests, and of the PostgreSQL server's: its
backends serving the gateway's database (on this machine: ``/proc``), the same way.
``--commit-async`` adds Redis + PostgreSQL with ``synchronous_commit: false`` to
``--backends redis-pg`` (``all`` has it).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import aiohttp

from benchmarks.budgets import LIMITED, NESTED
from benchmarks.common import (
    CHAT_BODY,
    SOURCE,
    Target,
    cpu_seconds,
    gateway_target,
    median,
    ms,
    run_block,
    stack,
)
from benchmarks.workers import drop_made, storage_of


async def main_async(
    rounds: int,
    postgres_url: str,
    counters_url: str,
    backends: str = "all",
    baseline: str | None = None,
    limits: bool = False,
    commit_async: bool = False,
) -> str:
    made: list[tuple[str, str]] = []
    variants: dict[str, dict[str, Any]] = {}
    policy = {**NESTED, **(LIMITED if limits else {})}
    if backends == "all":
        variants["SQLite"] = dict(policy)
        if baseline:
            variants["SQLite (baseline)"] = {**policy, SOURCE: baseline}
    chosen: list[tuple[str, str, dict[str, Any]]] = [("Redis + PostgreSQL", "redis-pg", {})]
    if backends == "all":
        chosen.insert(0, ("PostgreSQL", "postgres", {}))
    if backends == "all" or commit_async:
        chosen.append(
            ("Redis + PostgreSQL, commit async", "redis-pg", {"synchronous_commit": False})
        )
    databases: dict[str, str] = {}  # variant -> its PostgreSQL database
    try:
        for name, backend, extra in chosen:
            for suffix, source in [("", None)] + ([(" (baseline)", baseline)] if baseline else []):
                section = storage_of(backend, postgres_url, counters_url, made)
                section["storage"]["postgres"].update(extra)
                databases[name + suffix] = section["storage"]["url"].rsplit("/", 1)[1]
                variant = {**policy, **section}
                if source:
                    variant[SOURCE] = source
                variants[name + suffix] = variant
        with stack(variants=variants) as s:
            direct = Target(
                "direct", s.sim_url + "/v1/chat/completions", {"authorization": "Bearer x"}
            )
            targets = [direct] + [gateway_target(s, n, "/v1/chat/completions") for n in variants]
            p50: dict[str, list[float]] = {t.name: [] for t in targets}
            added: dict[str, list[float]] = {t.name: [] for t in targets}
            cpu: dict[str, list[float]] = {t.name: [] for t in targets}
            server_cpu: dict[str, list[float]] = {t.name: [] for t in targets}
            backends_of = await _server_backends(postgres_url)
            async with aiohttp.ClientSession() as session:
                for target in targets:
                    await run_block(session, target, CHAT_BODY, count=100, concurrency=1)
                for _ in range(rounds):
                    for target in targets:
                        pid = s.pids.get(target.name)
                        before = cpu_seconds(pid) if pid else 0.0
                        database = databases.get(target.name)
                        server_before = await backends_of(database) if database else {}
                        _, total, _ = await run_block(
                            session, target, CHAT_BODY, count=200, concurrency=1
                        )
                        p50[target.name].append(median(total))
                        if pid:
                            cpu[target.name].append((cpu_seconds(pid) - before) / 200)
                        if database:
                            server_after = await backends_of(database)
                            spent = sum(
                                used - server_before.get(backend, 0.0)
                                for backend, used in server_after.items()
                            )
                            server_cpu[target.name].append(spent / 200)
                    for target in targets[1:]:
                        added[target.name].append(p50[target.name][-1] - p50["direct"][-1])
            await backends_of(None)
        lines = [
            "| gateway (1 process) | p50 ms | added p50 ms | gateway CPU ms a request "
            "| PostgreSQL CPU ms a request |",
            "|---|---:|---:|---:|---:|",
        ]
        lines.append(f"| direct (simulator) | {ms(median(p50['direct']))} | | | |")
        for name in variants:
            server = ms(median(server_cpu[name])) if server_cpu[name] else ""
            lines.append(
                f"| {name} | {ms(median(p50[name]))} | **{ms(median(added[name]))}** | "
                f"{ms(median(cpu[name]))} | {server} |"
            )
        return "\n".join(lines)
    finally:
        drop_made(made, postgres_url, counters_url)


async def _server_backends(postgres_url: str) -> Any:
    """A function: a database's server processes (its connections' backends, on this
    machine) -> the CPU seconds each has used; called with None, it closes its connection."""
    import asyncpg

    conn = await asyncpg.connect(postgres_url, timeout=10)

    async def of(database: str | None) -> dict[int, float]:
        if database is None:
            await conn.close()
            return {}
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", database)
        found = {}
        for row in rows:
            try:
                found[row[0]] = cpu_seconds(row[0])
            except OSError:  # gone meanwhile
                continue
        return found

    return of


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres-url", default="postgresql://root@127.0.0.1:5432/postgres")
    parser.add_argument("--counters-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--backends", choices=("all", "redis-pg"), default="all")
    parser.add_argument("--baseline", default=None, help="another source tree (its src/)")
    parser.add_argument("--limits", action="store_true", help="and three rate limits")
    parser.add_argument(
        "--commit-async",
        action="store_true",
        help="with --backends redis-pg: and Redis + PostgreSQL with its commit asynchronous",
    )
    args = parser.parse_args()
    print(
        asyncio.run(
            main_async(
                args.rounds,
                args.postgres_url,
                args.counters_url,
                args.backends,
                args.baseline,
                args.limits,
                args.commit_async,
            )
        )
    )


if __name__ == "__main__":
    main()
