"""SQLite's blocks report over whole days (migration 0016: running sums per combination
and day, and the output medians the roll-up job keeps) equals the raw computation over the
period's rows: for random ledgers over four days (refusals in bursts, answered rows enough
to fill a caller's samples and more), written in random order in parts (late rows with
earlier times, after the days they fall on were summed), rolled up after none, some or
every part, and periods that start and end anywhere, on a day or an hour, or just after.
The medians are asked over the period and over spans that cut a caller's samples."""

from __future__ import annotations

import random
import tempfile
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rollup_samples import write_in_parts, written_before_rollups
from storage_samples import NOW, build_row

from spendgate.clock import ManualClock
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.refusals import (
    RECENT_OUTPUTS,
    RETRY_WINDOW,
    SAMPLE_SPAN,
    callers_and_models,
    combo_pairs,
    medians,
    output_samples,
    refusal_combos,
    refusal_groups,
)
from spendgate.storage.sqlite import SqliteStorage

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
WINDOW_MS = int(RETRY_WINDOW.total_seconds() * 1000)
START = NOW - timedelta(hours=NOW.hour, days=3)  # a midnight: four days from it
DAYS = 4
KEYS = st.sampled_from(["key_0", "key_1"])
MODELS = st.sampled_from(["gpt-4o", "haiku"])
# a time in the four days, often near a day's or an hour's start or end
MOMENT = st.builds(
    lambda day, hour, within: day * DAY_MS + hour * HOUR_MS + within,
    st.integers(min_value=0, max_value=DAYS - 1),
    st.sampled_from([0, 1, 12, 22, 23]),
    st.integers(min_value=0, max_value=HOUR_MS - 1)
    | st.integers(min_value=0, max_value=2 * WINDOW_MS)
    | st.integers(min_value=HOUR_MS - 2 * WINDOW_MS, max_value=HOUR_MS - 1),
)


def _at(ms: int) -> dict[str, object]:
    return {"ts": START + timedelta(milliseconds=ms)}


@st.composite
def refusals(draw: st.DrawFn) -> list[LedgerRow]:
    """A burst of refusals of one key and content: resent, retried, refused again later."""
    at, key = draw(MOMENT), draw(KEYS)
    fingerprint = draw(st.sampled_from(["fp_a", "fp_b", None]))
    rows = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        at += draw(st.sampled_from([0, 1, WINDOW_MS, WINDOW_MS + 1, HOUR_MS, DAY_MS]))
        rows.append(
            build_row(
                **_at(at),
                key_id=key,
                fingerprint=fingerprint,
                retry_count=draw(st.sampled_from([0, 0, 1])),
                requested_model=draw(MODELS),
                status=402,
                blocked_by=draw(st.sampled_from(["daily", "rpm"])),
                cost_nanos=0,
                output_tokens=0,
                would_cost_nanos=draw(st.integers(0, 10**6)),
                would_input_nanos=draw(st.sampled_from([0, 700])),
                would_output_rate=draw(st.sampled_from([0, 4_000_000_000, 3_333_333])),
                would_ceiling=draw(st.sampled_from([0, 256, 2000])),
            )
        )
    return rows


@st.composite
def answered(draw: st.DrawFn) -> list[LedgerRow]:
    """A caller's answered (and failed) requests on a model: up to past a sample's size."""
    key, model = draw(KEYS), draw(MODELS)
    count = draw(st.sampled_from([0, 3, RECENT_OUTPUTS - 1, RECENT_OUTPUTS + 20]))
    spread = draw(st.sampled_from([HOUR_MS, DAY_MS, DAYS * DAY_MS]))
    first = draw(st.integers(min_value=0, max_value=DAYS * DAY_MS - spread))
    rng = random.Random(draw(st.integers(0, 2**16)))
    return [
        build_row(
            **_at(first + rng.randrange(spread)),
            key_id=key,
            requested_model=model,
            status=rng.choice([200, 200, 200, 503]),
            output_tokens=rng.randrange(3000),
        )
        for _ in range(count)
    ]


@st.composite
def periods(draw: st.DrawFn) -> tuple[int, int]:
    since = draw(MOMENT | st.sampled_from([0, 1, DAY_MS, DAY_MS + 1, DAY_MS + WINDOW_MS]))
    length = draw(
        st.integers(min_value=0, max_value=DAYS * DAY_MS)
        | st.sampled_from([DAY_MS, 2 * DAY_MS, DAY_MS + HOUR_MS, DAYS * DAY_MS])
    )
    return since, since + length


async def _check(storage: SqliteStorage, since_ms: int, until_ms: int, span_ms: int) -> None:
    since = START + timedelta(milliseconds=since_ms)
    until = START + timedelta(milliseconds=until_ms)
    raw = await storage.ledger(since, until)
    combos = await storage.refusals(since, until)
    assert combos == refusal_combos(raw)
    pairs = sorted({*combo_pairs(combos), ("key_0", "gpt-4o"), ("key_1", "haiku")})
    low = until - timedelta(milliseconds=span_ms)
    sampled = await storage.ledger(low, until)
    found = await storage.output_medians(pairs, low, until, RECENT_OUTPUTS)
    assert found == medians(output_samples(sampled, pairs, RECENT_OUTPUTS))
    refused = [row for row in raw if row.blocked_by is not None]
    spanned = await storage.ledger(until - SAMPLE_SPAN, until)
    samples = output_samples(spanned, callers_and_models(refused), RECENT_OUTPUTS)
    expected = {
        g.name: (g.distinct, g.distinct_worst_case_nanos, g.estimate_nanos)
        for g in refusal_groups(refused, samples)
        if g.distinct
    }
    estimated = await storage.refusal_estimates(since, until)
    assert {
        g.name: (g.distinct, g.distinct_worst_case_nanos, g.estimate_nanos)
        for g in estimated.values()
    } == expected


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bursts=st.lists(refusals(), max_size=10),
    callers=st.lists(answered(), max_size=4),
    order=st.randoms(use_true_random=False),
    rolls=st.lists(st.booleans(), min_size=1, max_size=4),
    windows=st.lists(periods(), min_size=1, max_size=4),
    span=st.sampled_from([HOUR_MS, DAY_MS, 30 * DAY_MS]),
)
async def test_whole_days_and_kept_medians_equal_the_raw_computation(
    bursts: list[list[LedgerRow]],
    callers: list[list[LedgerRow]],
    order: random.Random,
    rolls: list[bool],
    windows: list[tuple[int, int]],
    span: int,
) -> None:
    rows = [row for group in (*bursts, *callers) for row in group]
    order.shuffle(rows)  # written late: ids out of time order
    with tempfile.TemporaryDirectory() as folder:
        storage = SqliteStorage(str(Path(folder) / "days.db"), clock=ManualClock(NOW))
        await storage.open()
        try:
            await write_in_parts(storage, rows, rolls)
            for since_ms, until_ms in windows:
                await _check(storage, since_ms, until_ms, span)
        finally:
            await storage.close()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bursts=st.lists(refusals(), max_size=10),
    callers=st.lists(answered(), max_size=3),
    windows=st.lists(periods(), max_size=3),
)
async def test_migration_0016_backfills_the_days_and_the_medians(
    bursts: list[list[LedgerRow]],
    callers: list[list[LedgerRow]],
    windows: list[tuple[int, int]],
) -> None:
    """A ledger rolled up under 0015 (its refusals in refusals_hourly up to the mark),
    upgraded: 0016 sums its days and keeps its medians; later rows come through the job."""
    rows = [row for group in (*bursts, *callers) for row in group]
    random.Random(len(rows)).shuffle(rows)
    third = len(rows) // 3
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "old.db"
        written_before_rollups(db, rows[:third], 15)  # 0011, 0014: rolled up
        storage = SqliteStorage(str(db), clock=ManualClock(NOW))
        await storage.open()
        try:
            for since_ms, until_ms in [*windows, (0, DAYS * DAY_MS)]:
                await _check(storage, since_ms, until_ms, 30 * DAY_MS)  # the backfill's
            await write_in_parts(storage, rows[third:], [True, False])
            for since_ms, until_ms in [*windows, (0, DAYS * DAY_MS)]:
                await _check(storage, since_ms, until_ms, 30 * DAY_MS)
        finally:
            await storage.close()
