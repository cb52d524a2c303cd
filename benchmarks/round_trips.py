"""Where a request at concurrency 1 waits: every Redis command and PostgreSQL statement a
gateway process sends, timed in the gateway, set against each request's send and answer
times seen by the client (one keep-alive connection, as SDKs use).

    python -m benchmarks.round_trips [--requests 300] [--backends redis-pg,postgres]
        [--baseline /work/main/src]
        [--postgres-url postgresql://root@127.0.0.1:5432/postgres]
        [--counters-url redis://127.0.0.1:6379/0]

Each gateway runs under this module's probe (``--probe``), which wraps redis-py's
``execute_command`` and pipeline ``execute`` and asyncpg's ``Connection`` query methods
(BEGIN and COMMIT included, and the pool's reset query at release) before starting
``spendgate serve``, and writes what it saw when the gateway exits. A call that starts
between a request's send and the end of its answer is on that request's path (the
client waits for it); one that starts after the answer ran in the gap before the next
request. ``--baseline`` runs a second gateway per backend from another source tree
(``PYTHONPATH``), side by side, blocks alternating. Counts are exact (the same each run);
times are medians, noisy on a shared machine. Also reported: the share of requests with a
ledger statement (the flusher's insert) starting or ending between their send and their
answer, and the p50 of those with and without one. A backend named ``<backend>-async``
(``redis-pg-async``) is that backend with ``synchronous_commit: false``. The answer's write
(aiohttp's ``write_eof``) is marked too, with the upstream calls (not a storage call).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import collections
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from benchmarks.budgets import NESTED
from benchmarks.common import CHAT_BODY, LAUNCH, PYTHON, SOURCE, gateway_target, stack
from benchmarks.workers import drop_made, storage_of

OUT_ENV = "ROUND_TRIPS_DIR"
ASYNC = "-async"  # a backend's name suffix: its PostgreSQL commit asynchronous
# The task a call was made in, by its coroutine: the request's handler (the client waits),
# the row written after the answer, the key read again beside the request, the ledger's
# group-commit flusher (it writes for whoever waits on it).
TASKS = {
    "record": "row, after the answer",
    "KeyService.authenticate": "key check",
    "PgLedger._flush": "ledger flusher",
}


# -- the probe, inside the gateway process ----------------------------------------------


def _probe() -> None:
    import asyncpg.connection
    import redis.asyncio.client

    calls: list[tuple[str, str, float, float]] = []

    def wrap(owner: Any, name: str, system: str, label: Any) -> None:
        original = getattr(owner, name)

        async def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.monotonic()
            task = asyncio.current_task()
            coro = task.get_coro() if task is not None else None
            where = TASKS.get(getattr(coro, "__qualname__", ""), "request handler")
            try:
                return await original(self, *args, **kwargs)
            finally:
                calls.append((system, f"{label(args)} [{where}]", start, time.monotonic()))

        setattr(owner, name, timed)

    def first_word(args: tuple[Any, ...]) -> str:
        text = str(args[0]).lstrip() if args else ""
        word = text.split(None, 1)[0].rstrip(";").upper() if text else "?"
        if word == "WITH":
            return "WITH (ledger insert)"
        return " ".join(text.split())[:48] if word == "SELECT" else word

    from spendgate.storage.redis.connect import Scripts

    scripts = {sha: name for name, sha in Scripts().sha.items()}

    def command(args: tuple[Any, ...]) -> str:
        name = str(args[0]).upper()
        return f"EVALSHA {scripts.get(str(args[1]), '?')}" if name == "EVALSHA" else name

    from aiohttp import web_response

    from spendgate.upstream.client import UpstreamClient, UpstreamResponse

    wrap(UpstreamClient, "send", "upstream", lambda a: "send (to the answer's head)")
    wrap(web_response.StreamResponse, "write_eof", "upstream", lambda a: "answer (write_eof)")
    wrap(UpstreamResponse, "read", "upstream", lambda a: "read (the body)")
    wrap(redis.asyncio.client.Redis, "execute_command", "redis", command)
    wrap(redis.asyncio.client.Pipeline, "execute", "redis", lambda a: "PIPELINE")
    for method in ("fetch", "fetchrow", "fetchval", "execute", "executemany"):
        wrap(asyncpg.connection.Connection, method, "pg", first_word)
    # (the pool's reset at release is an ``execute`` of its query: counted there)

    def dump() -> None:
        folder = os.environ.get(OUT_ENV)
        if folder:
            path = Path(folder) / f"{os.getpid()}.json"
            path.write_bytes(orjson.dumps(calls))

    atexit.register(dump)
    from spendgate.cli.main import main

    sys.argv = ["spendgate", *sys.argv[2:]]
    main()


# -- the client -------------------------------------------------------------------------


async def _run(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], count: int
) -> list[tuple[float, float]]:
    payload = orjson.dumps(CHAT_BODY)
    spans = []
    for _ in range(count):
        start = time.monotonic()
        async with session.post(url, data=payload, headers=headers) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {await response.text()}")
        spans.append((start, time.monotonic()))
    return spans


def _analyse(
    spans: list[tuple[float, float]], calls: list[tuple[str, str, float, float]]
) -> dict[str, Any]:
    calls = sorted(calls, key=lambda c: c[2])
    on_path: list[collections.Counter[str]] = []
    waited: list[float] = []
    gap: list[collections.Counter[str]] = []
    index = 0
    durations: dict[str, list[float]] = {}
    timeline: dict[str, list[tuple[float, float]]] = {}
    for i, (start, end) in enumerate(spans):
        following = spans[i + 1][0] if i + 1 < len(spans) else float("inf")
        here: collections.Counter[str] = collections.Counter()
        after: collections.Counter[str] = collections.Counter()
        total = 0.0
        while index < len(calls) and calls[index][2] < start:
            index += 1
        while index < len(calls) and calls[index][2] < following:
            system, label, t0, t1 = calls[index]
            if t0 <= end:
                here[f"{system} {label}"] += 1
                nth = f"{system} {label} #{here[f'{system} {label}']}"
                timeline.setdefault(nth, []).append((t0 - start, t1 - start))
                total += t1 - t0 if system != "upstream" else 0.0
            else:
                after[f"{system} {label}"] += 1
            durations.setdefault(f"{system} {label.split(' [')[0]}", []).append(t1 - t0)
            index += 1
        on_path.append(here)
        gap.append(after)
        waited.append(total)
    latency = [end - start for start, end in spans]
    beside = _ledger_beside(spans, calls)
    steps = {
        name: (statistics.median(t[0] for t in times), statistics.median(t[1] for t in times))
        for name, times in timeline.items()
        if len(times) * 2 > len(spans)  # on the path of most requests
    }
    return {
        "timeline_ms": dict(sorted(steps.items(), key=lambda item: item[1])),
        "p50_ms": statistics.median(latency) * 1000,
        "ledger_beside": beside,
        "on_path": _typical(on_path),
        "between": _typical(gap),
        "waited_ms": statistics.median(waited) * 1000,
        "call_ms": {name: statistics.median(d) * 1000 for name, d in sorted(durations.items())},
    }


def _ledger_beside(
    spans: list[tuple[float, float]], calls: list[tuple[str, str, float, float]]
) -> dict[bool, list[float]]:
    """Each request's latency, by whether a ledger statement (the flusher's) started or
    ended between its send and its answer: the gateway's work for it (building and sending
    the batch; waking when it commits) and the server's (the insert, its rollups, the
    commit) beside that request on the same cores."""
    ledger = [(t0, t1) for system, label, t0, t1 in calls if label.endswith("[ledger flusher]")]
    found: dict[bool, list[float]] = {True: [], False: []}
    for start, end in spans:
        touched = any(start <= t0 <= end or start <= t1 <= end for t0, t1 in ledger)
        found[touched].append(end - start)
    return found


def _storage(counts: dict[str, float]) -> float:
    return sum(n for call, n in counts.items() if not call.startswith("upstream"))


def _typical(counters: list[collections.Counter[str]]) -> dict[str, float]:
    """Each call's mean count a request (exact for a steady request path)."""
    names = sorted({name for c in counters for name in c})
    return {name: sum(c[name] for c in counters) / len(counters) for name in names}


def _storage_of(
    backend: str, args: argparse.Namespace, made: list[tuple[str, str]]
) -> dict[str, Any]:
    """`storage_of`; a backend named ``…-async`` is that backend with the ledger's commit
    asynchronous (``storage.postgres.synchronous_commit: false``: what waiting for the
    server's WAL flush costs)."""
    asynchronous = backend.endswith(ASYNC)
    section = storage_of(backend.removesuffix(ASYNC), args.postgres_url, args.counters_url, made)
    if asynchronous:
        section["storage"]["postgres"]["synchronous_commit"] = False
    return section


async def main_async(args: argparse.Namespace) -> str:
    made: list[tuple[str, str]] = []
    out = Path(os.environ.setdefault(OUT_ENV, tempfile.mkdtemp(prefix="round-trips-")))
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.json"):
        old.unlink()
    variants: dict[str, dict[str, Any]] = {}
    probe = [PYTHON, "-m", "benchmarks.round_trips", "--probe"]
    try:
        for backend in args.backends.split(","):
            section = _storage_of(backend, args, made)
            variants[f"{backend} (this tree)"] = {**NESTED, **section, LAUNCH: probe}
            if args.baseline:
                section = _storage_of(backend, args, made)
                variants[f"{backend} (baseline)"] = {
                    **NESTED,
                    **section,
                    LAUNCH: probe,
                    SOURCE: args.baseline,
                }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        pids: dict[str, int] = {}
        with stack(variants=variants) as s:
            pids = dict(s.pids)
            async with aiohttp.ClientSession() as session:
                targets = [gateway_target(s, name, "/v1/chat/completions") for name in variants]
                for target in targets:
                    await _run(session, target.url, target.headers, 50)  # warm up
                for _ in range(args.rounds):
                    for target in targets:
                        results[target.name] += await _run(
                            session, target.url, target.headers, args.requests // args.rounds
                        )
        lines = []
        for name, spans in results.items():
            found = out / f"{pids[name]}.json"
            calls = [tuple(c) for c in orjson.loads(found.read_bytes())] if found.exists() else []
            report = _analyse(spans, calls)
            lines.append(
                f"{name}: p50 {report['p50_ms']:.2f} ms; storage calls a request, started "
                f"between its send and its answer {_storage(report['on_path']):.2f}, "
                f"after its answer {_storage(report['between']):.2f}"
            )
            for touched, title in ((True, "with"), (False, "without")):
                times = report["ledger_beside"][touched]
                share = len(times) / len(spans)
                p50 = f"{statistics.median(times) * 1000:.2f} ms" if times else "-"
                lines.append(
                    f"    requests {title} a ledger statement starting or ending on their "
                    f"path: {share:.0%}, p50 {p50}"
                )
            for kind, title in (("on_path", "before"), ("between", "after")):
                for call, count in report[kind].items():
                    lines.append(f"    started {title} the answer: {call:60} {count:5.2f}")
            lines.append("    timeline, median ms from the client's send (start -> end):")
            for call, (t0, t1) in report["timeline_ms"].items():
                lines.append(f"        {call:64} {t0 * 1000:6.3f} -> {t1 * 1000:6.3f}")
            lines.append(f"        {'the client has the whole answer':64} {report['p50_ms']:6.3f}")
            for call, took in report["call_ms"].items():
                lines.append(f"    p50 of one {call:50} {took:6.3f} ms")
        return "\n".join(lines)
    finally:
        drop_made(made, args.postgres_url, args.counters_url)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--probe":
        _probe()
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default="redis-pg")
    parser.add_argument("--baseline", default=None, help="another source tree (its src/)")
    parser.add_argument("--postgres-url", default="postgresql://root@127.0.0.1:5432/postgres")
    parser.add_argument("--counters-url", default="redis://127.0.0.1:6379/0")
    print(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
