"""`Storage.blocks` sums in the backend exactly what the reference fold over ledger rows
(`spendgate.domain.totals.block_totals`) computes, retryable refusals and overruns
included, and `Storage.marked` returns exactly the refused and overrun rows: for any mix
of answered, refused (402 or 429), shadow-hit and settled-above rows."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_samples import NOW, build_row

from spendgate.domain.ledger import LedgerRow
from spendgate.domain.totals import block_totals
from spendgate.errors import BUDGET_EXHAUSTED
from spendgate.storage import Storage

NAMES = st.sampled_from(["team-daily", "per-user", "rpm"])
MONEY = st.integers(min_value=0, max_value=5_000_000)
ERRORS = st.sampled_from([None, f"{BUDGET_EXHAUSTED}x", "Rate limit"])


@st.composite
def rows(draw: st.DrawFn) -> LedgerRow:
    refused = draw(st.booleans())
    return build_row(
        ts=NOW + timedelta(seconds=draw(st.integers(min_value=0, max_value=3600))),
        status=draw(st.sampled_from([402, 429])) if refused else 200,
        blocked_by=draw(NAMES | st.just("loop-detection")) if refused else None,
        error=draw(st.sampled_from([None, f"{BUDGET_EXHAUSTED}x", "Rate limit"]))
        if refused
        else None,
        cost_nanos=0 if refused else draw(MONEY),
        would_cost_nanos=draw(MONEY) if refused else 0,
        shadow_blocks=() if refused else tuple(draw(st.sets(NAMES, max_size=2))),
        settled_above=() if refused else tuple(sorted(draw(st.sets(NAMES, max_size=2)))),
    )


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.lists(rows(), max_size=30))
async def test_backend_block_sums_match_the_reference_fold(
    storage: Storage, batch: list[LedgerRow]
) -> None:
    for row in batch:
        await storage.record(row)
    since, until = NOW, NOW + timedelta(hours=2)
    stored = await storage.ledger(since, until)  # this example's rows and earlier ones
    assert await storage.blocks(since, until) == block_totals(stored)
    marked = await storage.marked(since, until)
    assert marked == [row for row in stored if row.blocked_by or row.settled_above]
    half = since + timedelta(minutes=30)
    assert await storage.marked(since, half) == [row for row in marked if row.ts < half]


async def test_overruns_and_retryable_refusals_are_counted(storage: Storage) -> None:
    await storage.record(build_row(request_id="a", cost_nanos=70, settled_above=("team-daily",)))
    await storage.record(
        build_row(request_id="b", cost_nanos=30, settled_above=("team-daily", "per-user"))
    )
    await storage.record(build_row(request_id="c", status=429, blocked_by="team-daily"))
    await storage.record(build_row(request_id="d", status=402, blocked_by="team-daily"))
    # A budget with nothing left answers an OpenAI client 429 too, and loop detection
    # every client, both with x-should-retry: false: neither is counted as retryable.
    exhausted = f"{BUDGET_EXHAUSTED}team 'ml' (team-daily)"
    await storage.record(
        build_row(request_id="e", status=429, blocked_by="team-daily", error=exhausted)
    )
    await storage.record(build_row(request_id="f", status=429, blocked_by="loop-detection"))
    found = await storage.blocks(NOW - timedelta(hours=1), NOW + timedelta(hours=1))
    [loops, per_user, team] = found
    assert (team.name, team.blocked, team.retryable) == ("team-daily", 3, 1)
    assert (loops.name, loops.blocked, loops.retryable) == ("loop-detection", 1, 0)
    assert (team.overruns, team.overrun_cost_nanos) == (2, 100)
    assert (per_user.name, per_user.blocked, per_user.overruns) == ("per-user", 0, 1)
