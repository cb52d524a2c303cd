"""How many statements the budget path runs on SQLite, counted (issue 17: a budget path as
cheap as metering): a gathered commit wraps its jobs in one savepoint, not one each, and a
counter read is one statement. Counted with SQLite's trace callback, never timed."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from budget_samples import FULL, budget, ledger, one, plan, ref, settled
from storage_samples import NOW

from spendgate.clock import ManualClock
from spendgate.config.schema import BudgetScope
from spendgate.domain.admission import Admitted, CounterState
from spendgate.storage.sqlite import SqliteStorage


@pytest.fixture
async def sqlite(tmp_path: Path, clock: ManualClock) -> AsyncIterator[SqliteStorage]:
    store = SqliteStorage(str(tmp_path / "spend.db"), clock=clock)
    await store.open()
    yield store
    await store.close()


def traced(store: SqliteStorage, which: str) -> Counter[str]:
    """Count the statements run from now on by the writer's or the reader's connection,
    by their first word(s)."""
    seen: Counter[str] = Counter()
    conns = store._require()  # type: ignore[attr-defined]
    conn = conns.writer._conn if which == "writer" else conns.reader
    conn.set_trace_callback(lambda sql: seen.update([" ".join(sql.split()[:2])]))
    return seen


async def test_a_gathered_commit_wraps_its_jobs_in_one_savepoint(sqlite: SqliteStorage) -> None:
    team = ref(budget("team"), NOW)
    first = plan([team], NOW)
    assert isinstance(await sqlite.reserve(first), Admitted)  # live: the ones below have company
    writer = sqlite._require().writer  # type: ignore[attr-defined]
    seen = traced(sqlite, "writer")
    plans = [plan([team], NOW) for _ in range(10)]
    before = writer.commits
    decisions = await asyncio.gather(*(sqlite.reserve(p) for p in plans))
    assert all(isinstance(d, Admitted) for d in decisions)
    done = await asyncio.gather(
        *(sqlite.settle(p.reservation_id, (FULL,), settled(p, FULL)) for p in plans)
    )
    assert all(done)
    commits = writer.commits - before
    assert 2 <= commits <= 4  # one per turn, or two if the writer was checkpointing
    assert seen["SAVEPOINT job"] == 0  # no job failed: none ran in a savepoint of its own
    assert seen["SAVEPOINT batch"] <= commits
    assert seen["COMMIT"] == commits
    assert await one(sqlite, team, NOW) == CounterState(team, 100 * FULL, 10 * FULL, FULL)
    assert len(await ledger(sqlite)) == 10


async def test_a_failing_job_reruns_its_batch_with_a_savepoint_each(
    sqlite: SqliteStorage,
) -> None:
    """Only when a job fails does the batch run again, each job in its own savepoint, so
    that the failing one rolls back alone (`test_sqlite_budgets` checks the outcome)."""
    team = ref(budget("team"), NOW)
    live = plan([team], NOW)
    await sqlite.reserve(live)
    seen = traced(sqlite, "writer")
    others = [plan([team], NOW) for _ in range(3)]
    results = await asyncio.gather(
        sqlite.reserve(others[0]),
        sqlite.settle(live.reservation_id, (FULL, FULL), settled(live, FULL)),  # wrong shape
        *(sqlite.reserve(p) for p in others[1:]),
        return_exceptions=True,
    )
    assert isinstance(results[1], Exception)
    assert all(isinstance(r, Admitted) for r in results[:1] + results[2:])
    assert seen["ROLLBACK TO"] >= 1
    assert seen["SAVEPOINT job"] >= 4
    assert await one(sqlite, team, NOW) == CounterState(team, 100 * FULL, 0, 4 * FULL)


async def test_a_counter_read_is_one_statement(sqlite: SqliteStorage) -> None:
    """The early read of a request's rate and concurrency limits: one SELECT, one snapshot,
    no BEGIN and COMMIT around it."""
    refs = tuple(
        ref(budget(name, scope=scope), NOW, member=member)
        for name, scope, member in (
            ("user", BudgetScope.USER, "u"),
            ("team", BudgetScope.TEAM, "ml"),
            ("org", BudgetScope.ORG, "acme"),
        )
    )
    await sqlite.reserve(plan(list(refs), NOW))
    seen = traced(sqlite, "reader")
    states = await sqlite.counter_states(refs, NOW)
    assert [s.reserved for s in states] == [s.reserved for s in states[:1]] * 3
    assert states[0].reserved > 0
    assert sum(seen.values()) == 1, seen


async def test_the_writer_keeps_its_savepoint_journal_in_memory(sqlite: SqliteStorage) -> None:
    """A gathered commit's savepoint copies every page it changes into a sub-journal, which
    SQLite would spill to a temporary file (opened, written and unlinked on the event loop's
    thread) past 64 KiB; the writer's connection keeps it in memory. The reader's is left as
    it was: its reports may sort more than memory should hold."""
    conns = sqlite._require()  # type: ignore[attr-defined]
    assert conns.writer._conn.execute("PRAGMA temp_store").fetchone() == (2,)  # MEMORY
    assert conns.reader.execute("PRAGMA temp_store").fetchone() == (0,)  # the default
