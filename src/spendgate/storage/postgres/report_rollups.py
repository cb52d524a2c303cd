"""`spendgate blocks`' figures on PostgreSQL from rollups (migration 0006), and the job that
keeps the refusal rollups.

* **Sums** (`blocks`): ``blocks_hourly`` for the whole hours of the period, the ledger for
  its edges; the rollup is kept by the statement that inserts the rows.
* **Distinct refusals** (`refusals`): ``refusals_hourly`` for the hours `spans.plan` lets
  it answer, the ledger for the rest (`refusal_sql`), all in one snapshot (a repeatable-read
  transaction): the pending rows, the rollups and the rows are of one moment.
* **The job** (`roll_up`, every `ROLL_UP_EVERY_S` on each open storage: `rolling_up`): takes
  pending refused rows and recomputes the hours they can change. One process at a time
  (a tried transaction-scoped advisory lock: the others skip that turn). Reports are exact
  whether or not it ran; it keeps their raw part small.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from spendgate.domain.refusals import RefusalCombo
from spendgate.domain.totals import BlockGroup, merge_blocks, whole_hours
from spendgate.storage.periodic import Periodic
from spendgate.storage.postgres import blocks_sql, refusal_sql, reports, spans
from spendgate.storage.postgres.database import Conn, PgDatabase, lock_key

ROLL_UP_EVERY_S = 5.0
ROLL_BATCH = 5_000  # pending refused rows per job transaction
NO_SINCE = -(2**63)  # the job counts against every earlier row


T = TypeVar("T")


async def _snapshot(db: PgDatabase, work: Callable[[Conn], Awaitable[T]], what: str) -> T:
    """``work`` in one read-only repeatable-read transaction: one snapshot."""

    async def read(conn: Conn) -> T:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return await work(conn)

    return await db.run(read, what)


async def blocks(db: PgDatabase, since_ms: int, until_ms: int) -> list[BlockGroup]:
    async def read(conn: Conn) -> list[BlockGroup]:
        hours = whole_hours(since_ms, until_ms)
        edges = [(since_ms, until_ms)]
        parts: list[list[BlockGroup]] = []
        if hours is not None:
            first, end = hours
            edges = [(since_ms, first), (end, until_ms)]
            rolled = await conn.fetch(blocks_sql.ROLLED, first, end)
            parts.append([BlockGroup(*row) for row in rolled])
        for low, high in edges:
            if low < high:
                parts.append(await _raw_blocks(conn, low, high))
        return merge_blocks(*parts)

    return await _snapshot(db, read, "a blocks report")


async def _raw_blocks(conn: Conn, low: int, high: int) -> list[BlockGroup]:
    found: dict[str, list[int]] = {}
    for name, count, cost, retryable in await conn.fetch(reports.BLOCKED, low, high):
        values = found.setdefault(name, [0] * 7)
        values[0:2], values[4] = [count, cost], retryable
    for name, count, cost in await conn.fetch(reports.SHADOW_HITS, low, high):
        found.setdefault(name, [0] * 7)[2:4] = [count, cost]
    for name, count, cost in await conn.fetch(reports.OVERRUNS, low, high):
        found.setdefault(name, [0] * 7)[5:7] = [count, cost]
    return [BlockGroup(name, *values) for name, values in found.items()]


def _scan_params(scans: list[tuple[int, int, int]]) -> tuple[list[int], list[int], list[int]]:
    return [s[0] for s in scans], [s[1] for s in scans], [s[2] for s in scans]


async def refusals(db: PgDatabase, since_ms: int, until_ms: int) -> list[RefusalCombo]:
    """The distinct refused requests of ``[since_ms, until_ms)`` per combination, as
    `spendgate.domain.refusals.refusal_combos` folds the period's rows."""
    window = refusal_sql.WINDOW_MS

    async def read(conn: Conn) -> list[RefusalCombo]:
        pending = await conn.fetch(refusal_sql.PENDING, since_ms - window, until_ms)
        dirty = spans.changed_hours((row[0] for row in pending), window)
        plan = spans.plan(since_ms, until_ms, dirty, window)
        found: dict[tuple[str, str, str, int, int], list[int]] = {}
        rows = []
        if plan.rolled:
            lows, highs = [r[0] for r in plan.rolled], [r[1] for r in plan.rolled]
            rows.extend(await conn.fetch(refusal_sql.ROLLED, lows, highs))
        if plan.raw:
            scans = spans.scans(plan.raw, since_ms, window)
            rows.extend(await conn.fetch(refusal_sql.RAW, *_scan_params(scans)))
        for name, key, model, ceiling, rate, *sums in rows:
            values = found.setdefault((name, key, model, ceiling, rate), [0, 0, 0])
            for index, value in enumerate(sums):
                values[index] += value
        return [RefusalCombo(*combo, *values) for combo, values in sorted(found.items())]

    return await _snapshot(db, read, "a refusals report")


async def roll_up(db: PgDatabase, batch: int = ROLL_BATCH) -> int:
    """Recompute the refusal rollups of the hours that pending refused rows can change, a
    batch per transaction, until none is left (or another process holds the job); how
    many pending rows it took."""
    done = 0
    while True:
        step = await db.transaction(lambda conn: _roll_step(conn, batch), "a refusal roll-up")
        done += step
        if step < batch:
            return done


async def _roll_step(conn: Conn, batch: int) -> int:
    if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", lock_key("refusals")):
        return 0
    taken = [row[0] for row in await conn.fetch(refusal_sql.TAKE, batch)]
    if not taken:
        return 0
    hours = sorted(spans.changed_hours(taken, refusal_sql.WINDOW_MS))
    scans = spans.scans(spans.hour_ranges(hours), NO_SINCE, refusal_sql.WINDOW_MS)
    await conn.execute(refusal_sql.CLEAR_HOURS, hours)
    await conn.execute(refusal_sql.FILL_HOURS, *_scan_params(scans))
    return len(taken)


def rolling_up(db: PgDatabase) -> Periodic:
    """The job every `ROLL_UP_EVERY_S` while the storage is open."""
    return Periodic(lambda: roll_up(db), ROLL_UP_EVERY_S, "the refusal roll-up")
