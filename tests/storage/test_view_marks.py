"""`Storage.view_marks` (what a budgets view reads of the marked rows) is, on every
backend, `spendgate.domain.marks.view_marks` of the rows `Storage.marked` returns: the
recent marked rows and each caller's newest refusal for an exhausted budget (PostgreSQL:
from its rollup, migration 0006), for rows written in any order; and `Storage.overruns`
is `spendgate.domain.marks.overruns` of them (SQLite: from its rollups, migration 0018),
over spans with partial hours at both edges, rows rolled up or not."""

from __future__ import annotations

import random
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_samples import NOW, build_row

from spendgate.domain.ledger import LedgerRow
from spendgate.domain.marks import overruns, view_marks
from spendgate.errors import BUDGET_EXHAUSTED
from spendgate.storage import Storage

SPAN = 2 * 86_400  # seconds: rows over two days for the overruns' rollups
ERRORS = st.sampled_from([f"{BUDGET_EXHAUSTED}team-daily", "Rate limit rpm", None])


@st.composite
def rows(draw: st.DrawFn) -> LedgerRow:
    kind = draw(st.sampled_from(["refused", "refused", "overrun", "answered"]))
    name = draw(st.sampled_from(["team-daily", "per-user"]))
    extra = draw(st.lists(st.sampled_from(["team-daily", "per-user"]), max_size=1))
    at = draw(st.integers(min_value=0, max_value=3600) | st.integers(min_value=0, max_value=SPAN))
    return build_row(
        ts=NOW + timedelta(seconds=at),
        key_id=draw(st.sampled_from(["key_0", "key_1"])),
        user=draw(st.sampled_from(["ada", None])),
        session_id=draw(st.sampled_from(["s1", None])),
        routed_model=draw(st.sampled_from(["fast", None])),
        tags=tuple(draw(st.sets(st.sampled_from(["a", "b"])))),
        status=402 if kind == "refused" else 200,
        blocked_by=name if kind == "refused" else None,
        error=draw(ERRORS) if kind == "refused" else None,
        cost_nanos=0 if kind == "refused" else 10,
        settled_above=(name, *extra) if kind == "overrun" else (),
    )


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batch=st.lists(rows(), max_size=30),
    order=st.randoms(use_true_random=False),
    recent_s=st.integers(min_value=0, max_value=3600),
)
async def test_view_marks_are_the_marked_rows_a_view_reads(
    storage: Storage, batch: list[LedgerRow], order: random.Random, recent_s: int
) -> None:
    order.shuffle(batch)  # written late: newest refusals not written last
    for row in batch:
        await storage.record(row)
    since, until = NOW, NOW + timedelta(hours=2)
    recent = NOW + timedelta(seconds=recent_s)
    expected = view_marks(await storage.marked(since, until), recent)
    assert await storage.view_marks(since, recent, until) == expected


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batch=st.lists(rows(), max_size=40),
    order=st.randoms(use_true_random=False),
    rolled=st.integers(min_value=0, max_value=40),
    span=st.tuples(
        st.integers(min_value=-60, max_value=SPAN), st.integers(min_value=0, max_value=SPAN)
    ),
)
async def test_overruns_are_the_marked_rows_counted(
    storage: Storage,
    batch: list[LedgerRow],
    order: random.Random,
    rolled: int,
    span: tuple[int, int],
) -> None:
    """Per name, scope and member; the first ``rolled`` rows rolled up where a ledger has
    rollups, the rest not; a span of any length from anywhere (partial edge hours)."""
    order.shuffle(batch)
    for index, row in enumerate(batch):
        if index == rolled and hasattr(storage.ledger_store, "roll_up"):
            await storage.ledger_store.roll_up()
        await storage.record(row)
    since = NOW + timedelta(seconds=span[0])
    until = since + timedelta(seconds=span[1])
    expected = overruns(await storage.marked(since, until), since, until)
    assert await storage.overruns(since, until) == expected


async def test_a_callers_newest_refusal_before_the_window_end_is_read(storage: Storage) -> None:
    """A caller refused for an exhausted budget before ``recent`` and again after
    ``until``: the view reads the first (the newest of its window), as the reference does.
    PostgreSQL kept only the caller's newest refusal of all time, and lost it."""
    exhausted = f"{BUDGET_EXHAUSTED}team-daily"
    for at in (10, 3 * 3600):
        await storage.record(
            build_row(
                ts=NOW + timedelta(seconds=at),
                status=402,
                blocked_by="team-daily",
                error=exhausted,
                cost_nanos=0,
            )
        )
    since, until = NOW, NOW + timedelta(hours=2)
    recent = NOW + timedelta(hours=1)
    expected = view_marks(await storage.marked(since, until), recent)
    assert [row.ts for row in expected] == [NOW + timedelta(seconds=10)]
    assert await storage.view_marks(since, recent, until) == expected
