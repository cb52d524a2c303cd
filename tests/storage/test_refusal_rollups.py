"""`Storage.refusals` (the distinct refused requests behind `spendgate blocks`' request
count and estimate) equals the raw computation over the period's rows
(`spendgate.domain.refusals.refusal_combos`), and the estimate built from it equals
`refusal_groups` over those rows: for random ledgers of refusals in bursts (SDK retries,
resends of the same content within the retry window and past it, refused fallback
attempts), written in random order (late rows with earlier times), rolled up (SQLite:
migration 0014) none, half or all, and periods that start on an hour, just after one,
or anywhere.

Every row of a request carries the request's arrival time, as the pipeline writes them."""

from __future__ import annotations

import random
import tempfile
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rollup_samples import written_before_rollups
from storage_samples import NOW, build_row

from spendgate.clock import ManualClock
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.refusals import (
    RECENT_OUTPUTS,
    RETRY_WINDOW,
    SAMPLE_SPAN,
    RefusalGroup,
    callers_and_models,
    combo_pairs,
    estimate_groups,
    medians,
    output_samples,
    refusal_combos,
    refusal_groups,
)
from spendgate.storage import Storage
from spendgate.storage.sqlite import SqliteStorage

HOUR_MS = 3_600_000
WINDOW_MS = int(RETRY_WINDOW.total_seconds() * 1000)
START = NOW - timedelta(hours=2)  # on an hour: the samples cover three hours from it
KEYS = st.sampled_from(["key_0", "key_1"])
MODELS = st.sampled_from(["gpt-4o", "haiku"])
# a time in the three hours, often near an hour's start or end (where the window crosses)
MOMENT = st.builds(
    lambda hour, within: hour * HOUR_MS + within,
    st.integers(min_value=0, max_value=2),
    st.integers(min_value=0, max_value=HOUR_MS - 1)
    | st.integers(min_value=0, max_value=2 * WINDOW_MS)
    | st.integers(min_value=HOUR_MS - 2 * WINDOW_MS, max_value=HOUR_MS - 1),
)


@st.composite
def bursts(draw: st.DrawFn) -> list[LedgerRow]:
    """Requests of one key and content around one moment: each refused outright, or
    answered/failed then refused on a fallback attempt, a few ms to a few windows apart."""
    at = draw(MOMENT)
    key = draw(KEYS)
    fingerprint = draw(st.sampled_from(["fp_a", "fp_b", None]))
    rows: list[LedgerRow] = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        at += draw(st.sampled_from([0, 1, WINDOW_MS // 2, WINDOW_MS, WINDOW_MS + 1]))
        same = {
            "ts": START + timedelta(milliseconds=at),
            "key_id": key,
            "fingerprint": fingerprint,
            "retry_count": draw(st.sampled_from([0, 0, 0, 1])),
            "requested_model": draw(MODELS),
            "routed_model": draw(st.none() | MODELS),
        }
        base = build_row(**same).request_id
        attempts = draw(st.sampled_from([[0], [0], [0, 1], [1], [0, 1, 2]]))
        for index, attempt in enumerate(attempts):
            refused = index == len(attempts) - 1 or draw(st.booleans())
            rows.append(
                build_row(
                    **same,
                    request_id=base if attempt == 0 else f"{base}-{attempt}",
                    attempt=attempt,
                    status=402 if refused else draw(st.sampled_from([200, 503])),
                    blocked_by=draw(st.sampled_from(["daily", "rpm"])) if refused else None,
                    cost_nanos=0 if refused else 10,
                    output_tokens=0 if refused else draw(st.integers(0, 3000)),
                    would_cost_nanos=draw(st.integers(0, 10**6)) if refused else 0,
                    would_input_nanos=draw(st.sampled_from([0, 0, 700])) if refused else 0,
                    would_output_rate=(draw(st.sampled_from([0, 4_000_000_000])) if refused else 0),
                    would_ceiling=draw(st.sampled_from([0, 256, 2000])) if refused else 0,
                )
            )
    return rows


@st.composite
def periods(draw: st.DrawFn) -> tuple[int, int]:
    since = draw(
        MOMENT | st.sampled_from([0, HOUR_MS, HOUR_MS + 1, HOUR_MS + WINDOW_MS, 2 * HOUR_MS - 1])
    )
    length = draw(
        st.integers(min_value=0, max_value=2 * WINDOW_MS)
        | st.integers(min_value=0, max_value=3 * HOUR_MS)
        | st.just(3 * HOUR_MS)
    )
    return since, since + length


async def _store(storage: Storage, rows: list[LedgerRow], one_by_one: bool, rolled: str) -> None:
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


async def _check(storage: Storage, since_ms: int, until_ms: int) -> None:
    since = START + timedelta(milliseconds=since_ms)
    until = START + timedelta(milliseconds=until_ms)
    raw = await storage.ledger(since, until)  # this example's rows and earlier ones
    combos = await storage.refusals(since, until)
    assert combos == refusal_combos(raw)
    refused = [row for row in raw if row.blocked_by is not None]
    samples = output_samples(raw, callers_and_models(refused), 100)  # what the rows need
    pairs = combo_pairs(combos)  # what the combinations need
    assert await storage.recent_outputs(pairs, since, until, 100) == output_samples(raw, pairs, 100)
    typical = await storage.output_medians(pairs, since, until, 100)
    assert typical == medians(output_samples(raw, pairs, 100))
    needed = {who: [value] for who, value in typical.items()}  # as `blocks_report` reads them
    expected = {
        g.name: (g.distinct, g.distinct_worst_case_nanos, g.estimate_nanos)
        for g in refusal_groups(refused, samples)
        if g.distinct
    }
    found = {
        g.name: (g.distinct, g.distinct_worst_case_nanos, g.estimate_nanos)
        for g in estimate_groups(combos, needed).values()
    }
    assert found == expected
    # as `blocks_report` asks: the samples of the `SAMPLE_SPAN` before the period's end
    sampled = await storage.ledger(until - SAMPLE_SPAN, until)
    spanned = output_samples(sampled, callers_and_models(refused), RECENT_OUTPUTS)
    assert _figures(await storage.refusal_estimates(since, until)) == _figures(
        {g.name: g for g in refusal_groups(refused, spanned)}
    )


def _figures(groups: dict[str, RefusalGroup]) -> dict[str, tuple[int, int, int]]:
    return {
        name: (g.distinct, g.distinct_worst_case_nanos, g.estimate_nanos)
        for name, g in groups.items()
        if g.distinct
    }


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    groups=st.lists(bursts(), max_size=12),
    order=st.randoms(use_true_random=False),
    one_by_one=st.booleans(),
    rolled=st.sampled_from(["none", "half", "all"]),
    windows=st.lists(periods(), min_size=1, max_size=4),
)
async def test_refusals_equal_the_raw_computation(
    storage: Storage,
    groups: list[list[LedgerRow]],
    order: random.Random,
    one_by_one: bool,
    rolled: str,
    windows: list[tuple[int, int]],
) -> None:
    rows = [row for group in groups for row in group]
    order.shuffle(rows)  # written late: ids out of time order
    await _store(storage, rows, one_by_one, rolled)
    for since_ms, until_ms in windows:
        await _check(storage, since_ms, until_ms)


@settings(max_examples=10, deadline=None)
@given(groups=st.lists(bursts(), max_size=12), windows=st.lists(periods(), max_size=3))
async def test_migration_0014_backfills_the_refusals_up_to_the_mark(
    groups: list[list[LedgerRow]], windows: list[tuple[int, int]]
) -> None:
    """A ledger written before 0011, then upgraded to 0013 (its rows rolled up to the
    mark): 0014 rolls up their refusals; later rows come through the job, or raw."""
    rows = [row for group in groups for row in group]
    third = len(rows) // 3
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "old.db"
        written_before_rollups(db, rows[:third], 13)  # 0011: mark at the end
        storage = SqliteStorage(str(db), clock=ManualClock(NOW))
        await storage.open()
        try:
            await storage.ledger_store.append(rows[third : 2 * third])
            await storage.ledger_store.roll_up()  # type: ignore[attr-defined]
            await storage.ledger_store.append(rows[2 * third :])
            for since_ms, until_ms in [*windows, (0, 3 * HOUR_MS)]:
                await _check(storage, since_ms, until_ms)
        finally:
            await storage.close()
