"""What each SQLite statement of the budget path costs, in process: reservations on six
counters (the three nested budgets of `benchmarks.budgets`, twice over, as the full policy
has six counters), each settled with its ledger row, one after another on one SQLite
file; the event-loop thread's CPU time around every statement, by kind.

    python -m benchmarks.statement_cost [--pairs 3000]

CPU time, not wall time: on a shared machine wall time would charge a statement for
whatever ran while it was preempted.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from collections import defaultdict
from typing import Any

from benchmarks.budgets import LINE_NOW, NESTED, _line_plan
from spendgate.clock import ManualClock
from spendgate.config.schema import BudgetScope
from spendgate.domain.budgets import Budget, CounterRef, Scoped, Unit
from spendgate.domain.periods import Calendar, Period, window
from spendgate.storage import open_storage

_cpu_ns: defaultdict[str, int] = defaultdict(int)
_count: defaultdict[str, int] = defaultdict(int)


class _Timed(sqlite3.Connection):
    def execute(self, sql: str, params: Any = (), /) -> sqlite3.Cursor:
        started = time.thread_time_ns()
        try:
            return super().execute(sql, params)
        finally:
            kind = " ".join(sql.split()[:4])[:50]
            _cpu_ns[kind] += time.thread_time_ns() - started
            _count[kind] += 1


def _refs() -> tuple[CounterRef, ...]:
    members = {"key": "key", "team": "ml", "org": "acme"}
    calendar = Calendar.of("UTC")
    refs = []
    for copy in ("", "2"):
        for b in NESTED["budgets"]:
            scoped = Scoped(BudgetScope(b["scope"]), b["match"], ())
            period = Period.parse(b["period"])
            budget = Budget(b["name"] + copy, scoped, Unit.NANOS, 10**18, period, True, ())
            refs.append(CounterRef(budget, members[b["name"]], window(period, LINE_NOW, calendar)))
    return tuple(refs)


async def measure(pairs: int, warm_up: int = 300) -> str:
    connect = sqlite3.connect
    sqlite3.connect = lambda *a, **kw: connect(*a, **{**kw, "factory": _Timed})  # type: ignore[assignment]
    refs = _refs()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            storage = open_storage(f"sqlite:///{tmp}/cost.db", clock=ManualClock(LINE_NOW))
            await storage.open()
            for index in range(warm_up + pairs):
                if index == warm_up:
                    _cpu_ns.clear()
                    _count.clear()
                plan = _line_plan(index, refs)
                await storage.reserve(plan)
                await storage.settle(plan.reservation_id, (60_000,) * len(refs), plan.template)
            await storage.close()
    finally:
        sqlite3.connect = connect
    lines = ["| statement | per pair | CPU µs per pair |", "|---|---:|---:|"]
    for kind in sorted(_cpu_ns, key=lambda k: -_cpu_ns[k]):
        if _count[kind] / pairs >= 0.005:
            lines.append(
                f"| `{kind}` | {_count[kind] / pairs:.2f} | {_cpu_ns[kind] / pairs / 1e3:.1f} |"
            )
    total = sum(_cpu_ns.values()) / pairs / 1e3
    lines.append(f"| **all** | | **{total:.1f}** |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=3000)
    args = parser.parse_args()
    print(asyncio.run(measure(args.pairs)))


if __name__ == "__main__":
    main()
