"""What budgets need of the SQLite backend in particular: its writer's batches and
savepoints, its inline commits, its lock shared with other processes on one file, its page
layout and its speed. The two-process test runs this module as a script
(``python test_sqlite_budgets.py reserve ...``)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from budget_samples import FULL, budget, ledger, one, plan, ref, settled
from storage_samples import NOW, build_row

from spendgate.clock import ManualClock
from spendgate.config.schema import BudgetScope
from spendgate.domain.admission import Admitted, CounterState
from spendgate.domain.budgets import Unit
from spendgate.errors import StorageError
from spendgate.storage import Storage, open_storage
from spendgate.storage.sqlite import SqliteStorage


@pytest.fixture
def url(tmp_path: Path) -> str:
    """This module's tests look inside a SQLite file."""
    return f"sqlite:///{tmp_path / 'spend.db'}"


@pytest.fixture
def counters_url() -> str | None:
    return None  # every role in the one file


def sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


async def test_a_failing_job_does_not_roll_back_its_batch(url: str, clock: ManualClock) -> None:
    """Jobs share the writer's transaction but fail alone: a settle that fails (its
    amounts do not fit its reservation) undoes its own changes; the reservations batched
    with it commit."""
    storage = SqliteStorage(sqlite_path(url), clock=clock)
    await storage.open()
    blocker = sqlite3.connect(sqlite_path(url), isolation_level=None)
    try:
        team = ref(budget("team"), NOW)
        clash = plan([team], NOW)
        await storage.reserve(clash)
        await storage.record(build_row(request_id=clash.reservation_id))
        others = [plan([team], NOW) for _ in range(5)]

        blocker.execute("BEGIN IMMEDIATE")  # the writer waits on its first batch...
        extra = build_row()
        first = asyncio.ensure_future(storage.record(extra))
        await asyncio.sleep(0.05)
        batch = asyncio.gather(  # ...while these queue up into the next one
            storage.reserve(others[0]),
            storage.settle(clash.reservation_id, (FULL, FULL), settled(clash, FULL)),
            *(storage.reserve(p) for p in others[1:]),
            return_exceptions=True,
        )
        await asyncio.sleep(0.05)
        blocker.execute("COMMIT")
        await first
        results = await batch
        assert isinstance(results[1], StorageError)
        assert all(isinstance(r, Admitted) for r in results[:1] + results[2:])
        assert await one(storage, team, NOW) == CounterState(team, 100 * FULL, 0, 6 * FULL)
        rows = {row.request_id for row in await ledger(storage)}
        assert rows == {clash.reservation_id, extra.request_id}
    finally:
        blocker.close()
        await storage.close()


async def test_a_failing_job_does_not_roll_back_its_gathered_commit(storage: Storage) -> None:
    """The same on the event loop: with requests in flight, the writes of one turn commit
    together (see `test_requests_in_flight_share_commits`), and a job that fails among
    them undoes only its own changes."""
    writer = storage._require().writer  # type: ignore[attr-defined]
    team = ref(budget("team"), NOW)
    clash = plan([team], NOW)
    await storage.reserve(clash)  # live: the writes below have company
    await storage.record(build_row(request_id=clash.reservation_id))
    others = [plan([team], NOW) for _ in range(5)]
    before = writer.commits
    results = await asyncio.gather(
        storage.reserve(others[0]),
        storage.settle(clash.reservation_id, (FULL, FULL), settled(clash, FULL)),
        *(storage.reserve(p) for p in others[1:]),
        return_exceptions=True,
    )
    assert writer.commits - before <= 2  # one, or two if the writer was checkpointing
    assert isinstance(results[1], StorageError)
    assert all(isinstance(r, Admitted) for r in results[:1] + results[2:])
    assert await one(storage, team, NOW) == CounterState(team, 100 * FULL, 0, 6 * FULL)
    assert [row.request_id for row in await ledger(storage)] == [clash.reservation_id]


async def test_a_cancelled_reserve_releases_its_reservation(storage: Storage) -> None:
    """The caller gave up while waiting (client gone): the reservation must not linger
    until its lease lapses and then charge the worst case."""
    team = ref(budget("team"), NOW)
    writer = storage._require().writer  # type: ignore[attr-defined]
    with writer._lock:  # as if a batch were committing: the reservation must queue
        task = asyncio.create_task(storage.reserve(plan([team], NOW)))
        await asyncio.sleep(0)  # queued on the writer
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    # The queued reservation commits once the lock is free, and its release follows it.
    # Inline writes may overtake a batch the writer has dequeued but not yet begun, so wait
    # for the outcome rather than counting writes.
    deadline = time.monotonic() + 10
    while True:
        members = await storage.active_members("team", 0)
        state = await one(storage, team, NOW)
        if (members == ["ml"] and state.reserved == 0) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    assert members == ["ml"]  # it was reserved ...
    assert state == CounterState(team, 100 * FULL, 0, 0)  # ... then released, no charge
    assert await storage.expire_leases(NOW + timedelta(days=1)) == 0
    assert await ledger(storage) == []


CHILD_BUDGETS = (
    budget("org", limit=150 * FULL, period="lifetime", scope=BudgetScope.ORG),
    budget("team", limit=10**6 * FULL, period="lifetime"),
)


async def _child_reserve(url: str, meeting: Path, count: int) -> None:
    storage = open_storage(url)
    await storage.open()
    # Both processes start together, once both are open (a fixed start time is missed
    # when one is slow to start, and the other then takes everything alone).
    (meeting / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + 30
    while len(list(meeting.glob("ready-*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    try:
        now = datetime.now(UTC)
        refs = [ref(spec, now, member="acme") for spec in CHILD_BUDGETS]
        plans = [plan(refs, now, min_output=1_000, owner=f"gw-{os.getpid()}") for _ in range(count)]
        admitted = 0
        for wave in range(0, count, 4):  # small waves, so both processes interleave
            # A gateway's requests pause (for the provider); with no pause at all, SQLite's
            # unfair write lock can let one process take nearly everything (docs/storage.md).
            await asyncio.sleep(0.0005)
            batch = plans[wave : wave + 4]
            for p, d in zip(
                batch, await asyncio.gather(*(storage.reserve(p) for p in batch)), strict=True
            ):
                if isinstance(d, Admitted):
                    admitted += 1
                    await storage.settle(p.reservation_id, d.amounts, settled(p, d.amounts[0]))
        print(admitted, flush=True)
    finally:
        await storage.close()


def test_two_processes_never_overshoot(url: str, tmp_path: Path) -> None:
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "reserve", url, str(meeting), "300"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [child.communicate(timeout=60)[0] for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    admitted = [int(out.split()[-1]) for out in outputs]
    assert sum(admitted) == 150  # exactly what fits, across both processes
    assert all(n > 0 for n in admitted), admitted  # both really competed

    with closing(sqlite3.connect(sqlite_path(url))) as conn:
        spent, reserved = conn.execute(
            "SELECT SUM(spent), SUM(reserved) FROM budget_counters WHERE budget = 'org'"
        ).fetchone()
        (rows,) = conn.execute("SELECT COUNT(*) FROM ledger").fetchone()
    assert (spent, reserved) == (150 * FULL, 0)
    assert rows == 150


async def test_schema_has_budget_tables_and_indexes(url: str, clock: ManualClock) -> None:
    storage = SqliteStorage(sqlite_path(url), clock=clock)
    await storage.open()
    await storage.close()
    with closing(sqlite3.connect(sqlite_path(url))) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        ledger_columns = {row[1] for row in conn.execute("PRAGMA table_info(ledger)")}
    assert {"budget_counters", "reservations", "budget_overrides"} <= names
    assert "budget_overrides_budget" in names
    # In-flight reservations are few: no secondary index to write on every reserve/settle.
    assert not {"reservations_expires", "reservations_owner"} & names
    assert {"output_ceiling", "clamped_from", "unreconciled", "routed_model"} <= ledger_columns


async def test_a_reservation_settles_from_another_storage_on_the_file(
    url: str, clock: ManualClock
) -> None:
    """Settlement reads what a reservation holds from its row when this process did not
    make it (the in-memory copy is only a shortcut)."""
    first = SqliteStorage(sqlite_path(url), clock=clock)
    second = SqliteStorage(sqlite_path(url), clock=clock)
    await first.open()
    await second.open()
    try:
        team, tokens = ref(budget("team"), NOW), ref(budget("tok", unit=Unit.TOKENS), NOW)
        reservation = plan([team, tokens], NOW)
        assert isinstance(await first.reserve(reservation), Admitted)
        row = settled(reservation, 7)
        assert await second.settle(reservation.reservation_id, (7, 9), row) is True
        assert await first.settle(reservation.reservation_id, (7, 9), row) is False
        assert await first.counter_states((team, tokens), NOW) == [
            CounterState(team, 100 * FULL, 7, 0),
            CounterState(tokens, 100 * FULL, 9, 0),
        ]
        assert await ledger(first) == [row]
    finally:
        await second.close()
        await first.close()


async def test_a_reservation_fits_in_its_page(url: str, clock: ManualClock) -> None:
    """The lapse template leaves blank fields out: a reservation needs no overflow page,
    which would be allocated at reserve and freed at settle (three more pages written)."""
    storage = SqliteStorage(sqlite_path(url), clock=clock)
    await storage.open()
    try:
        refs = [ref(budget(f"budget-{i}"), NOW, f"member-{i}") for i in range(6)]
        assert isinstance(await storage.reserve(plan(refs, NOW)), Admitted)
    finally:
        await storage.close()
    with closing(sqlite3.connect(sqlite_path(url))) as conn:
        try:
            (overflow,) = conn.execute(
                "SELECT COUNT(*) FROM dbstat WHERE name = 'reservations' AND pagetype = 'overflow'"
            ).fetchone()
        except sqlite3.OperationalError:
            pytest.skip("this SQLite has no dbstat table")
    assert overflow == 0


async def test_a_queued_write_waits_for_another_connection_s_lock(
    url: str, clock: ManualClock
) -> None:
    """The writer connection's busy timeout is 0 (the inline path must never wait); a
    write that finds the lock taken queues, and the writer thread waits for it."""
    storage = SqliteStorage(sqlite_path(url), clock=clock)
    await storage.open()
    try:
        with closing(sqlite3.connect(sqlite_path(url), isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")
            row = build_row()
            write = asyncio.ensure_future(storage.record(row))
            await asyncio.sleep(0.2)
            assert not write.done()
            other.execute("COMMIT")
            await asyncio.wait_for(write, 5)
        assert await ledger(storage) == [row]
    finally:
        await storage.close()


async def test_reserve_and_settle_latency(url: str, clock: ManualClock) -> None:
    """p50 of one awaited reserve / settle on three counters, one caller at a time."""
    storage = SqliteStorage(sqlite_path(url), clock=clock)
    await storage.open()
    try:
        refs = [
            ref(budget("key", scope=BudgetScope.KEY, limit=10**15), NOW, "k"),
            ref(budget("team", limit=10**15), NOW, "ml"),
            ref(budget("org", scope=BudgetScope.ORG, limit=10**15), NOW, "acme"),
        ]
        reserve_ns, settle_ns = [], []
        for i in range(1_200):
            p = plan(refs, NOW)
            start = time.perf_counter_ns()
            decision = await storage.reserve(p)
            middle = time.perf_counter_ns()
            assert isinstance(decision, Admitted)
            await storage.settle(p.reservation_id, decision.amounts, settled(p, FULL))
            end = time.perf_counter_ns()
            if i >= 200:  # warm
                reserve_ns.append(middle - start)
                settle_ns.append(end - middle)
    finally:
        await storage.close()
    reserve_p50 = statistics.median(reserve_ns) / 1e3
    settle_p50 = statistics.median(settle_ns) / 1e3
    print(f"\nbudget store p50: reserve {reserve_p50:.0f} us, settle {settle_p50:.0f} us")
    assert reserve_p50 < 2_000
    assert settle_p50 < 2_000


async def test_a_reservation_placed_after_a_waiting_settlement_finds_it_settled(
    storage: Storage,
) -> None:
    """One request at a time: a settlement that cannot commit at once (the writer is busy,
    as in a checkpoint) waits on the writer thread, and the next reservation, placed after
    it, waits behind it rather than committing inline first: it finds it settled."""
    team = ref(budget("team", limit=FULL + FULL // 2), NOW)  # room for one worst case
    writer = storage._require().writer  # type: ignore[attr-defined]
    first = plan([team], NOW)
    assert isinstance(await storage.reserve(first), Admitted)
    with writer._lock:  # the writer is busy: the settlement must wait for it
        settling = asyncio.ensure_future(
            storage.settle(first.reservation_id, (FULL // 2,), settled(first, FULL // 2))
        )
        await asyncio.sleep(0.05)
        assert not settling.done()
        second = plan([team], NOW)
        reserving = asyncio.ensure_future(storage.reserve(second))
        await asyncio.sleep(0.05)
        assert not reserving.done()  # behind the settlement, not beside it
    assert await settling
    assert isinstance(await reserving, Admitted)  # it found the first one settled
    assert await one(storage, team, NOW) == CounterState(team, FULL + FULL // 2, FULL // 2, FULL)


async def test_requests_in_flight_share_commits(storage: Storage) -> None:
    """With other reservations live (other requests in flight), the reservations and
    settlements made in one turn of the event loop commit together: a COMMIT is the
    largest part of a write's cost. Each still decides on what those before it did."""
    team = ref(budget("team", limit=30 * FULL + FULL // 2), NOW)  # worth 30.5 requests
    writer = storage._require().writer  # type: ignore[attr-defined]
    first = plan([team], NOW)
    before = writer.commits
    assert isinstance(await storage.reserve(first), Admitted)  # alone: its own commit
    assert writer.commits == before + 1

    plans = [plan([team], NOW, min_output=1_000) for _ in range(40)]
    before = writer.commits
    decisions = await asyncio.gather(*(storage.reserve(p) for p in plans))
    assert writer.commits - before <= 2  # one, or two if the writer was checkpointing
    admitted = [p for p, d in zip(plans, decisions, strict=True) if isinstance(d, Admitted)]
    assert len(admitted) == 29  # 30 fit, and the first holds one
    assert (await one(storage, team, NOW)).reserved == 30 * FULL

    before = writer.commits
    done = await asyncio.gather(
        *(storage.settle(p.reservation_id, (FULL // 2,), settled(p, FULL // 2)) for p in admitted)
    )
    assert all(done)
    assert writer.commits - before <= 2
    assert await one(storage, team, NOW) == CounterState(
        team, 30 * FULL + FULL // 2, 29 * (FULL // 2), FULL
    )
    assert len(await ledger(storage)) == 29


if __name__ == "__main__":
    _mode, _url, _meeting, _count = sys.argv[1:5]
    asyncio.run(_child_reserve(_url, Path(_meeting), int(_count)))
