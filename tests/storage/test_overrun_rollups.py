"""SQLite's overrun counts for the budgets view (migration 0018: per budget name, scope and
member, hourly rollups and running day sums) equal `spendgate.domain.marks.overruns` of the
period's marked rows: for random overruns over four days (several names, repeated names
and tags, members that are None), written in random order in parts (late rows with
earlier times, after the days they fall on were summed), rolled up after none, some or
every part, and periods that start and end anywhere, on a day or an hour, or just after;
and after an upgrade, 0018's backfill of a ledger rolled up under 0017."""

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
from spendgate.domain.marks import overruns
from spendgate.storage.sqlite import SqliteStorage

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
START = NOW - timedelta(hours=NOW.hour, days=3)  # a midnight: four days from it
DAYS = 4
# a time in the four days, often near a day's or an hour's start or end
MOMENT = st.builds(
    lambda day, hour, within: day * DAY_MS + hour * HOUR_MS + within,
    st.integers(min_value=0, max_value=DAYS - 1),
    st.sampled_from([0, 1, 12, 22, 23]),
    st.integers(min_value=0, max_value=HOUR_MS - 1) | st.sampled_from([0, 1, HOUR_MS - 1]),
)
NAMES = st.lists(st.sampled_from(["team-daily", "per-user"]), min_size=1, max_size=3)


@st.composite
def marked_rows(draw: st.DrawFn) -> LedgerRow:
    """An overrun (most), a refusal or an answered row, of one of a few callers."""
    kind = draw(st.sampled_from(["overrun", "overrun", "overrun", "refused", "answered"]))
    return build_row(
        ts=START + timedelta(milliseconds=draw(MOMENT)),
        key_id=draw(st.sampled_from(["key_0", "key_1"])),
        user=draw(st.sampled_from(["ada", "bob", None])),
        team=draw(st.sampled_from(["core", None])),
        session_id=draw(st.sampled_from(["s1", None])),
        routed_model=draw(st.sampled_from(["fast", None])),
        tags=tuple(draw(st.lists(st.sampled_from(["a", "b"]), max_size=3))),
        status=402 if kind == "refused" else 200,
        blocked_by="team-daily" if kind == "refused" else None,
        cost_nanos=0 if kind == "refused" else 10,
        settled_above=tuple(draw(NAMES)) if kind == "overrun" else (),
    )


@st.composite
def periods(draw: st.DrawFn) -> tuple[int, int]:
    since = draw(MOMENT | st.sampled_from([0, 1, DAY_MS, DAY_MS + 1, DAY_MS - 1]))
    length = draw(
        st.integers(min_value=0, max_value=DAYS * DAY_MS)
        | st.sampled_from([HOUR_MS, DAY_MS, 2 * DAY_MS, DAY_MS + HOUR_MS, DAYS * DAY_MS])
    )
    return since, since + length


async def _check(storage: SqliteStorage, since_ms: int, until_ms: int) -> None:
    since = START + timedelta(milliseconds=since_ms)
    until = START + timedelta(milliseconds=until_ms)
    expected = overruns(await storage.marked(since, until), since, until)
    assert await storage.overruns(since, until) == expected


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(marked_rows(), max_size=40),
    order=st.randoms(use_true_random=False),
    rolls=st.lists(st.booleans(), min_size=1, max_size=4),
    windows=st.lists(periods(), min_size=1, max_size=4),
)
async def test_overrun_counts_from_rollups_equal_the_rows(
    rows: list[LedgerRow],
    order: random.Random,
    rolls: list[bool],
    windows: list[tuple[int, int]],
) -> None:
    order.shuffle(rows)  # written late: ids out of time order
    with tempfile.TemporaryDirectory() as folder:
        storage = SqliteStorage(str(Path(folder) / "over.db"), clock=ManualClock(NOW))
        await storage.open()
        try:
            await write_in_parts(storage, rows, rolls)
            for since_ms, until_ms in [*windows, (0, DAYS * DAY_MS)]:
                await _check(storage, since_ms, until_ms)
        finally:
            await storage.close()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(marked_rows(), max_size=40), windows=st.lists(periods(), max_size=3))
async def test_migration_0018_backfills_the_overrun_rollups(
    rows: list[LedgerRow], windows: list[tuple[int, int]]
) -> None:
    """A ledger rolled up under 0017 (its rows up to the mark in the rollups), upgraded:
    0018 counts its overruns up to the mark; later rows come through the job."""
    random.Random(len(rows)).shuffle(rows)
    third = len(rows) // 3
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "old.db"
        written_before_rollups(db, rows[:third], 17)  # 0011: rolled up, mark at the end
        storage = SqliteStorage(str(db), clock=ManualClock(NOW))
        await storage.open()
        try:
            for since_ms, until_ms in [*windows, (0, DAYS * DAY_MS)]:
                await _check(storage, since_ms, until_ms)  # the backfill's
            await write_in_parts(storage, rows[third:], [True, False])
            for since_ms, until_ms in [*windows, (0, DAYS * DAY_MS)]:
                await _check(storage, since_ms, until_ms)
        finally:
            await storage.close()
