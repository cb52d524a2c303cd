"""PostgreSQL's report rollups (migration 0006): the refusal rollups' hours and raw spans,
a refused row written late that makes one in the next hour a repeat, and 0006 (with the
earlier migrations' backfills) on a ledger written before it: every report equals the
domain's fold over the raw rows, before and after the roll-up job."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg_databases import throwaway_database
from storage_samples import NOW, build_row
from test_refusal_rollups import bursts
from test_rollups import requests
from test_view_marks import rows as marked_rows

from spendgate.clock import ManualClock, to_ms
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.marks import view_marks
from spendgate.domain.refusals import refusal_combos
from spendgate.domain.savings import SavingsBy, from_totals, savings
from spendgate.domain.totals import GroupBy, UsageQuery, block_totals, usage_totals
from spendgate.storage.postgres import PostgresStorage, partitions
from spendgate.storage.postgres.migrate import apply_migrations, load_migrations
from spendgate.storage.postgres.spans import Spans, changed_hours, plan
from spendgate.storage.sqlite.rows import LEDGER

HOUR = 3_600_000
WINDOW = 5_000


def test_the_rollups_answer_whole_clean_hours_the_ledger_the_rest() -> None:
    at = 100 * HOUR
    assert plan(at, at + 3 * HOUR, set(), WINDOW) == Spans(
        [(at + HOUR, at + 3 * HOUR)],
        [(at, at + HOUR)],  # a period starting on an hour
    )
    assert plan(at - WINDOW + 1, at + 3 * HOUR, set(), WINDOW) == Spans(
        [(at + HOUR, at + 3 * HOUR)],
        [(at - WINDOW + 1, at + HOUR)],  # ... just before one
    )
    assert plan(at - WINDOW, at + 3 * HOUR, set(), WINDOW) == Spans(
        [(at, at + 3 * HOUR)],
        [(at - WINDOW, at)],  # ... a retry window before one
    )
    assert plan(at - HOUR + 1, at + 2 * HOUR + 7, {at + HOUR}, WINDOW) == Spans(
        [(at, at + HOUR)], [(at - HOUR + 1, at), (at + HOUR, at + 2 * HOUR + 7)]
    )
    assert plan(at + 1, at + 7, {at}, WINDOW) == Spans([], [(at + 1, at + 7)])
    assert plan(at, at, set(), WINDOW) == Spans([], [])
    # a refused row in the window before an hour's end changes the next hour too
    assert changed_hours([at - 1, at + 10], WINDOW) == {at - HOUR, at}


@pytest.fixture
def pg_url() -> Iterator[str]:
    with throwaway_database() as url:
        yield url


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresStorage]:
    storage = PostgresStorage(pg_url, clock=ManualClock(NOW))
    await storage.open()
    yield storage
    await storage.close()


async def _refusals_hold(store: PostgresStorage, since_ms: int, until_ms: int) -> None:
    since = NOW + timedelta(milliseconds=since_ms)
    until = NOW + timedelta(milliseconds=until_ms)
    raw = await store.ledger(since, until)
    assert await store.refusals(since, until) == refusal_combos(raw)


async def test_a_refusal_written_late_makes_one_in_the_next_hour_a_repeat(
    store: PostgresStorage,
) -> None:
    def refused(request_id: str, at_ms: int) -> LedgerRow:
        return build_row(
            request_id=request_id,
            ts=NOW + timedelta(milliseconds=at_ms),
            status=402,
            blocked_by="daily",
            cost_nanos=0,
            fingerprint="fp",
            would_cost_nanos=100,
        )

    await store.record(refused("after", HOUR + 1))  # NOW is on an hour
    assert await store.ledger_store.roll_up() == 1  # type: ignore[attr-defined]
    await store.record(refused("late", HOUR - 1))  # 2 ms before it: "after" repeats it
    for since_ms, until_ms in ((0, 3 * HOUR), (HOUR, 3 * HOUR), (HOUR - 10, 2 * HOUR)):
        await _refusals_hold(store, since_ms, until_ms)  # before the job
    assert await store.ledger_store.roll_up() == 1  # type: ignore[attr-defined]
    for since_ms, until_ms in ((0, 3 * HOUR), (HOUR, 3 * HOUR), (-HOUR, 2 * HOUR)):
        await _refusals_hold(store, since_ms, until_ms)  # and after it
    [combo] = await store.refusals(NOW, NOW + timedelta(hours=3))
    assert combo.requests == 1


async def _write_before_0002(url: str, rows: list[LedgerRow]) -> None:
    """A ledger of the first release (migration 0001: no rollups) holding ``rows``."""
    conn = await asyncpg.connect(url)
    try:
        await apply_migrations(conn, load_migrations()[:1], lambda: 0)
        for month in {partitions.month_of_ms(to_ms(row.ts)) for row in rows}:
            await conn.execute(partitions.create_sql(month))
        names = ", ".join(f'"{name}"' for name in LEDGER.fields)
        marks = ", ".join(f"${i}" for i in range(1, len(LEDGER.fields) + 1))
        for row in rows:
            params = LEDGER.params(row)
            await conn.execute(f"INSERT INTO ledger ({names}) VALUES ({marks})", *params)  # noqa: S608
            await conn.execute("INSERT INTO ledger_ids VALUES ($1, $2)", params[0], params[1])
    finally:
        await conn.close()


async def _reports_hold(store: PostgresStorage, since_ms: int, until_ms: int) -> None:
    since = NOW + timedelta(milliseconds=since_ms)
    until = NOW + timedelta(milliseconds=until_ms)
    raw = await store.ledger(since, until)
    for group_by in GroupBy:
        assert await store.usage(UsageQuery(group_by, since, until)) == usage_totals(raw, group_by)
    assert await store.blocks(since, until) == block_totals(raw)
    for by in SavingsBy:
        groups, shadow = await store.savings(since, until, by)
        assert from_totals(groups, shadow) == savings(raw, by)
    assert await store.refusals(since, until) == refusal_combos(raw)
    recent = since + (until - since) / 2
    marked = await store.marked(since, until)
    assert await store.view_marks(since, recent, until) == view_marks(marked, recent)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    answered=st.lists(requests(), max_size=12),
    refused=st.lists(bursts(), max_size=8),
    marks=st.lists(marked_rows(), max_size=10),
    windows=st.lists(
        st.tuples(st.integers(-4 * HOUR, 4 * HOUR), st.integers(0, 8 * HOUR)), max_size=3
    ),
)
async def test_migration_0006_backfills_a_ledger_written_before_it(
    answered: list[list[LedgerRow]],
    refused: list[list[LedgerRow]],
    marks: list[LedgerRow],
    windows: list[tuple[int, int]],
) -> None:
    """Rows of a ledger written before the rollups, then opened by this version (0002,
    0005 and 0006 backfill); later rows, some written late, go through the insert
    statement and the job. Every report and the budgets view's rows hold."""
    rows = [row for group in [*answered, *refused, marks] for row in group]
    rows.reverse()  # late rows: ids out of time order
    third = len(rows) // 3
    periods = [(since, since + length) for since, length in windows]
    with throwaway_database() as url:
        await _write_before_0002(url, rows[:third])
        store = PostgresStorage(url, clock=ManualClock(NOW))
        await store.open()
        try:
            await store.ledger_store.append(rows[third : 2 * third])
            await store.ledger_store.roll_up()  # type: ignore[attr-defined]
            await store.ledger_store.append(rows[2 * third :])
            for since_ms, until_ms in [*periods, (-4 * HOUR, 8 * HOUR)]:
                await _reports_hold(store, since_ms, until_ms)
            await store.ledger_store.roll_up()  # type: ignore[attr-defined]
            await _reports_hold(store, -4 * HOUR, 8 * HOUR)
        finally:
            await store.close()


async def test_migration_0008_counts_again_the_refusals_told_to_retry() -> None:
    """Hours 0006 backfilled counted every 429 refusal as told to retry: a budget with
    nothing left (OpenAI's insufficient_quota) and loop detection too. 0008 counts them
    again as `told_to_retry` does; the report equals the fold over the rows."""
    from spendgate.errors import BUDGET_EXHAUSTED

    refusals = [
        build_row(request_id="a", status=429, blocked_by="team", error="Rate limit reached"),
        build_row(request_id="b", status=429, blocked_by="team", error=f"{BUDGET_EXHAUSTED}x"),
        build_row(request_id="c", status=402, blocked_by="team", error=f"{BUDGET_EXHAUSTED}x"),
        build_row(request_id="d", status=429, blocked_by="loop-detection", error="loop"),
    ]
    with throwaway_database() as url:
        await _write_before_0002(url, refusals)
        store = PostgresStorage(url, clock=ManualClock(NOW))
        await store.open()
        try:
            since, until = NOW - timedelta(hours=2), NOW + timedelta(hours=2)
            found = await store.blocks(since, until)
            assert found == block_totals(await store.ledger(since, until))
            assert [(g.name, g.blocked, g.retryable) for g in found] == [
                ("loop-detection", 1, 0),
                ("team", 3, 1),
            ]
        finally:
            await store.close()
