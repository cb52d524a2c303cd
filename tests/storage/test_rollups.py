"""Reports answered from hourly rollups (SQLite, migration 0011) or straight from rows
(memory) equal the domain's folds over the raw ledger rows of the period, to the nano-dollar
and the count: for random ledgers and random periods that start and end inside an hour.

Every row of a request (its fallback attempts) carries the request's arrival time, as the
pipeline writes them (`pipeline/proxy.py`): the samples keep that invariant."""

from __future__ import annotations

import tempfile
from contextlib import closing
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_samples import NOW, build_row

from spendgate.clock import ManualClock
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.savings import SavingsBy, from_totals, savings
from spendgate.domain.totals import (
    Bucket,
    GroupBy,
    block_totals,
    usage_series,
    usage_totals,
)
from spendgate.errors import BUDGET_EXHAUSTED
from spendgate.storage import Storage, UsageQuery
from spendgate.storage.sqlite import SqliteStorage
from spendgate.storage.sqlite.connection import connect
from spendgate.storage.sqlite.migrate import apply_migrations, load_migrations
from spendgate.storage.sqlite.rows import INSERT_LEDGER, LEDGER

SPAN_MS = 6 * 3_600_000  # the sample ledgers cover six hours from START
START = NOW - timedelta(hours=2, minutes=17)  # not on an hour

NAMES = st.sampled_from(["a", "b", "c", None])
BUDGETS = st.sampled_from(["team-daily", "user-rpm", "breaker", "loop"])
MONEY = st.integers(min_value=0, max_value=5_000_000)
TOKENS = st.integers(min_value=0, max_value=100_000)
HOUR_MS = 3_600_000
# Hours and offsets inside them drawn apart: a time anywhere in the span, not only at its
# ends (where integer strategies like to go).
OFFSET = st.builds(
    lambda hour, within: hour * HOUR_MS + within,
    st.integers(min_value=0, max_value=SPAN_MS // HOUR_MS - 1),
    st.integers(min_value=0, max_value=HOUR_MS - 1),
)


@st.composite
def requests(draw: st.DrawFn) -> list[LedgerRow]:
    """One request's rows, all at its arrival time: failed attempts then an answer, or a
    refusal; with random groups, tokens, costs, routing, shadow and overrun marks."""
    base = build_row()
    ts = START + timedelta(milliseconds=draw(OFFSET))
    same = {
        "ts": ts,
        "team": draw(NAMES),
        "service": draw(NAMES),
        "user": draw(NAMES),
        "org": draw(NAMES),
        "key_id": draw(st.sampled_from(["key_0", "key_1", "key_2"])),
        "retry_count": draw(st.sampled_from([0, 0, 1, 2])),
        "route_kind": draw(st.sampled_from([None, "alias", "rewrite", "downgrade"])),
        "shadow_rule": draw(st.sampled_from([None, "try-mini", "try-haiku"])),
    }
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        return [
            build_row(
                **same,
                blocked_by=draw(BUDGETS | st.just("loop-detection")),
                status=429 if draw(st.booleans()) else 402,
                error=draw(st.sampled_from([None, f"{BUDGET_EXHAUSTED}team-daily", "Rate limit"])),
                cost_nanos=0,
                would_cost_nanos=draw(MONEY),
                input_tokens=draw(TOKENS),
                output_tokens=0,
                shadow_blocks=tuple(draw(st.lists(BUDGETS, max_size=2))),
            )
        ]
    failures = draw(st.integers(min_value=0, max_value=2))
    first = draw(st.integers(min_value=0, max_value=1))  # attempt 0 may have left no row
    rows = []
    for index, attempt in enumerate(range(first, first + failures + 1)):
        last = index == failures
        status = (
            draw(st.sampled_from([200, 200, 500]))
            if last
            else draw(st.sampled_from([429, 503, 200]))
        )
        rows.append(
            build_row(
                **same,
                request_id=base.request_id if attempt == 0 else f"{base.request_id}-{attempt}",
                attempt=attempt,
                status=status,
                served_model=draw(st.sampled_from(["gpt-4o", "gpt-4o-mini", "haiku"])),
                provider=draw(st.sampled_from(["openai", "anthropic"])),
                input_tokens=draw(TOKENS),
                cached_input_tokens=draw(TOKENS),
                cache_write_tokens=draw(TOKENS),
                output_tokens=draw(TOKENS),
                reasoning_tokens=draw(TOKENS),
                cost_nanos=draw(MONEY),
                usage_estimated=draw(st.booleans()),
                baseline_cost_nanos=draw(st.none() | MONEY),
                shadow_cost_nanos=draw(st.none() | MONEY) if same["shadow_rule"] else None,
                unreconciled=draw(st.booleans()),
                shadow_blocks=tuple(draw(st.lists(BUDGETS, max_size=2))),
                settled_above=tuple(draw(st.lists(BUDGETS, max_size=2, unique=True))),
            )
        )
    return rows


@st.composite
def periods(draw: st.DrawFn) -> tuple[int, int]:
    """A period inside (or overlapping) the sample span, in ms from START: often a few
    minutes, often hours, sometimes the whole span."""
    since = draw(OFFSET) - HOUR_MS
    length = draw(st.integers(min_value=0, max_value=HOUR_MS) | OFFSET | st.just(SPAN_MS))
    return since, since + length


async def _store(
    storage: Storage, batches: list[list[LedgerRow]], one_by_one: bool, rolled: str
) -> None:
    """Store the rows; roll up (SQLite) none of them, the first half or all of them: the
    reports must not care how far behind the job is."""
    rows = [row for batch in batches for row in batch]
    roll_up = getattr(storage.ledger_store, "roll_up", None)
    half = len(rows) // 2
    for part, roll in ((rows[:half], rolled != "none"), (rows[half:], rolled == "all")):
        if one_by_one:
            for row in part:
                await storage.record(row)
        else:
            await storage.ledger_store.append(part)
        if roll and roll_up is not None:
            await roll_up()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(requests(), max_size=30),
    one_by_one=st.booleans(),
    rolled=st.sampled_from(["none", "half", "all"]),
    windows=st.lists(periods(), min_size=1, max_size=4),
)
async def test_reports_equal_the_folds_over_raw_rows(
    storage: Storage,
    batches: list[list[LedgerRow]],
    one_by_one: bool,
    rolled: str,
    windows: list[tuple[int, int]],
) -> None:
    await _store(storage, batches, one_by_one, rolled)
    for low, high in windows:
        since, until = START + timedelta(milliseconds=low), START + timedelta(milliseconds=high)
        raw = await storage.ledger(since, until)  # this example's rows and earlier ones
        for group_by in GroupBy:
            found = await storage.usage(UsageQuery(group_by=group_by, since=since, until=until))
            assert found == usage_totals(raw, group_by)
            for bucket in Bucket:
                series = await storage.usage_series(since, until, bucket, group_by)
                assert series == usage_series(raw, group_by, bucket)
        assert await storage.blocks(since, until) == block_totals(raw)
        for by in SavingsBy:
            groups, shadow = await storage.savings(since, until, by)
            assert from_totals(groups, shadow) == savings(raw, by)


async def test_a_period_inside_one_hour_and_an_empty_one(storage: Storage) -> None:
    """No whole hour inside: the rows alone answer; an empty period answers nothing."""
    at = NOW + timedelta(minutes=10)
    await storage.ledger_store.append([build_row(ts=at, team="t"), build_row(ts=at, team=None)])
    inside = await storage.usage(
        UsageQuery(GroupBy.TEAM, NOW + timedelta(minutes=5), NOW + timedelta(minutes=50))
    )
    assert [(g.group, g.requests) for g in inside] == [("t", 1), (None, 1)]
    assert await storage.usage(UsageQuery(GroupBy.TEAM, at, at)) == []
    assert await storage.usage_series(at, at, Bucket.HOUR, GroupBy.TEAM) == []


@settings(max_examples=15, deadline=None)
@given(
    batches=st.lists(requests(), max_size=30), windows=st.lists(periods(), min_size=1, max_size=3)
)
async def test_migration_0011_backfills_a_ledger_written_before_it(
    batches: list[list[LedgerRow]], windows: list[tuple[int, int]]
) -> None:
    """A ledger written under migrations 0001-0010 (no rollups), then opened by this
    version: 0011 sums the rows already there; later rows are rolled up by the job."""
    rows = [row for batch in batches for row in batch]
    later = rows[len(rows) // 2 :]
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "old.db"
        with closing(connect(str(db))) as conn:
            apply_migrations(conn, load_migrations()[:10], lambda: 0)
            conn.execute("BEGIN")
            conn.executemany(INSERT_LEDGER, [LEDGER.params(row) for row in rows[: len(rows) // 2]])
            conn.execute("COMMIT")
            assert (
                conn.execute(
                    "SELECT name FROM sqlite_master WHERE name = 'usage_hourly'"
                ).fetchall()
                == []
            )
        storage = SqliteStorage(str(db), clock=ManualClock(NOW))
        await storage.open()
        try:
            await storage.ledger_store.append(later)
            assert await storage.ledger_store.roll_up() == len(later)  # type: ignore[attr-defined]
            for low, high in windows:
                since = START + timedelta(milliseconds=low)
                until = START + timedelta(milliseconds=high)
                raw = await storage.ledger(since, until)
                assert len(raw) == sum(since <= r.ts < until for r in rows)
                for group_by in GroupBy:
                    query = UsageQuery(group_by=group_by, since=since, until=until)
                    assert await storage.usage(query) == usage_totals(raw, group_by)
                assert await storage.blocks(since, until) == block_totals(raw)
                for by in SavingsBy:
                    groups, shadow = await storage.savings(since, until, by)
                    assert from_totals(groups, shadow) == savings(raw, by)
        finally:
            await storage.close()
