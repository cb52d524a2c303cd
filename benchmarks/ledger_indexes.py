"""What the ledger's secondary indexes cost a request: reservations on six counters, each
settled with its ledger row (as `benchmarks.statement_cost`), on SQLite files that differ
only in which ledger indexes exist; the calling thread's CPU time per pair, variants
interleaved round by round, medians.

    python -m benchmarks.ledger_indexes [--rounds 5] [--pairs 1500]

A measurement for a schema decision, not a change: ``ledger_team_ts`` and ``ledger_key_ts``
serve reports by team and by key (and a key's latest rows), which need them until hourly
rollups answer those reports.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time

from benchmarks.budgets import LINE_NOW, _line_plan
from benchmarks.statement_cost import _refs
from spendgate.clock import ManualClock
from spendgate.storage import open_storage

VARIANTS: dict[str, tuple[str, ...]] = {
    "every index (as migrated)": (),
    "without ledger_team_ts, ledger_key_ts": (
        "DROP INDEX ledger_team_ts",
        "DROP INDEX ledger_key_ts",
    ),
    "without ledger_ts, ledger_team_ts, ledger_key_ts": (
        "DROP INDEX ledger_ts",
        "DROP INDEX ledger_team_ts",
        "DROP INDEX ledger_key_ts",
    ),
}


async def _pairs(path: str, first: int, count: int) -> None:
    refs = _refs()
    storage = open_storage(f"sqlite:///{path}", clock=ManualClock(LINE_NOW))
    await storage.open()
    try:
        for index in range(first, first + count):
            plan = _line_plan(index, refs)
            await storage.reserve(plan)
            await storage.settle(plan.reservation_id, (60_000,) * len(refs), plan.template)
    finally:
        await storage.close()


async def one(drops: tuple[str, ...], pairs: int, warm_up: int = 300) -> float:
    """CPU microseconds per reservation and settlement with ``drops`` applied."""
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/variant.db"
        await _pairs(path, 0, 1)  # migrate
        conn = sqlite3.connect(path)
        for statement in drops:
            conn.execute(statement)
        conn.commit()
        conn.close()
        await _pairs(path, 1, warm_up)
        started = time.thread_time_ns()
        await _pairs(path, 1 + warm_up, pairs)
        return (time.thread_time_ns() - started) / pairs / 1e3


async def measure(rounds: int, pairs: int) -> str:
    figures: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(rounds):
        for name, drops in VARIANTS.items():
            figures[name].append(await one(drops, pairs))
    lines = ["| ledger indexes | CPU µs per pair (median) | rounds |", "|---|---:|---|"]
    for name, values in figures.items():
        spread = ", ".join(f"{v:.0f}" for v in values)
        lines.append(f"| {name} | {statistics.median(values):.1f} | {spread} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=1500)
    args = parser.parse_args()
    print(asyncio.run(measure(args.rounds, args.pairs)))


if __name__ == "__main__":
    main()
