"""`Storage.view_marks` (what a budgets view reads of the marked rows) is, on every
backend, `spendgate.domain.marks.view_marks` of the rows `Storage.marked` returns: the
recent marked rows and each caller's newest refusal for an exhausted budget (PostgreSQL:
from its rollup, migration 0006), for rows written in any order and rows newer than the
view's end; and `Storage.overruns` is `spendgate.domain.marks.overruns` of them (SQLite:
from its rollups, migration 0018), over spans with partial hours at both edges, rows rolled
up or not.

The examples of a test share one storage (a function-scoped fixture is not set up again
per example), so each writes and reads a span of time of its own (`fresh_span`): it sees
only its own rows, and a failing example replays and shrinks alone."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace
from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_samples import NOW, build_row

from spendgate.domain.ledger import LedgerRow
from spendgate.domain.marks import overruns, view_marks
from spendgate.errors import BUDGET_EXHAUSTED
from spendgate.storage import Storage

SPAN = 2 * 86_400  # seconds: rows over two days for the overruns' rollups
ERRORS = st.sampled_from([f"{BUDGET_EXHAUSTED}team-daily", "Rate limit rpm", None])
AT = st.integers(min_value=0, max_value=3600) | st.integers(min_value=0, max_value=SPAN)
_SPANS = itertools.count()


def fresh_span(batch: list[LedgerRow]) -> tuple[datetime, list[LedgerRow]]:
    """A start no row of an earlier example is near (3 days apart: rows span 2 days after
    it, reads at most 60 s before it), and ``batch`` moved there from `NOW`."""
    shift = timedelta(days=3 * next(_SPANS))
    return NOW + shift, [replace(row, ts=row.ts + shift) for row in batch]


def copies(batch: list[LedgerRow], again: list[tuple[int, int | None]]) -> list[LedgerRow]:
    """For each (index, seconds) of ``again``, the row of ``batch`` at that index (modulo
    its length) again as another request: at ``seconds`` after `NOW`, or at its own moment
    (None)."""
    found = []
    for count, (index, at) in enumerate(again if batch else []):
        row = batch[index % len(batch)]
        ts = row.ts if at is None else NOW + timedelta(seconds=at)
        found.append(replace(row, request_id=f"{row.request_id}-{count}", ts=ts))
    return found


@st.composite
def rows(draw: st.DrawFn) -> LedgerRow:
    kind = draw(st.sampled_from(["refused", "refused", "overrun", "answered"]))
    name = draw(st.sampled_from(["team-daily", "per-user"]))
    extra = draw(st.lists(st.sampled_from(["team-daily", "per-user"]), max_size=1))
    at = draw(AT)
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
    again=st.lists(st.tuples(st.integers(min_value=0, max_value=29), AT | st.none()), max_size=10),
    order=st.randoms(use_true_random=False),
    recent_s=st.integers(min_value=0, max_value=3600),
)
async def test_view_marks_are_the_marked_rows_a_view_reads(
    storage: Storage,
    batch: list[LedgerRow],
    again: list[tuple[int, int | None]],
    order: random.Random,
    recent_s: int,
) -> None:
    """``again``: more rows of a caller of ``batch`` (`copies`), so that one caller's
    refusals fall before the recent moment, after the view's end, or at one instant."""
    since, written = fresh_span(batch + copies(batch, again))
    order.shuffle(written)  # written late: newest refusals not written last
    for row in written:
        await storage.record(row)
    until = since + timedelta(hours=2)  # rows up to 2 days later: newer than the view's end
    recent = since + timedelta(seconds=recent_s)
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
    start, batch = fresh_span(batch)
    order.shuffle(batch)
    for index, row in enumerate(batch):
        if index == rolled and hasattr(storage.ledger_store, "roll_up"):
            await storage.ledger_store.roll_up()
        await storage.record(row)
    since = start + timedelta(seconds=span[0])
    until = since + timedelta(seconds=span[1])
    expected = overruns(await storage.marked(since, until), since, until)
    assert await storage.overruns(since, until) == expected


async def test_a_refusal_newer_than_the_view_keeps_the_callers_older_one(storage: Storage) -> None:
    """A caller refused (budget exhausted) before the recent moment and again after the
    view's end (written since the view took its now, or by a gateway whose clock is ahead):
    the view still reads the older refusal, its newest of the view's span (PostgreSQL's
    rollup holds the newer one: the older is looked up in the ledger)."""

    def refusal(seconds: int) -> LedgerRow:
        error = f"{BUDGET_EXHAUSTED}team-daily"
        at = NOW + timedelta(seconds=seconds)
        return build_row(ts=at, status=402, blocked_by="team-daily", error=error, cost_nanos=0)

    older, newer = refusal(10), refusal(3 * 3600)
    await storage.record(older)
    await storage.record(newer)
    since, recent, until = NOW, NOW + timedelta(minutes=30), NOW + timedelta(hours=2)
    expected = view_marks(await storage.marked(since, until), recent)
    assert [row.request_id for row in expected] == [older.request_id]
    assert await storage.view_marks(since, recent, until) == expected
