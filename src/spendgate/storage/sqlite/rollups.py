"""Reports from the hourly rollups (migration 0011), and the job that keeps them.

`roll_up` adds the ledger rows past the mark (``rollup_mark.rolled_to``, a ledger id) to
``usage_hourly``, ``blocks_hourly`` and ``shadow_hourly`` (and to the later migrations'
rollups: `refusal_sql`, `refusal_days`, `medians`, `overrun_sql`) and moves the mark, in one
transaction on the writer. A report takes, in one read transaction: the whole hours of its
period from the rollups, the rows of those hours past the mark raw (rows written since the
job last ran), and the partial hours at its edges raw; and sums them. Its answer is what
the raw rows give however far behind the job is (the storage tests hold every report to
the domain's folds over the rows); the job only keeps the raw part small. A 30-day report
reads ~720 rollup rows per group instead of every ledger row (see docs/storage.md,
"Rollups").
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Iterable
from typing import TypeVar

from spendgate.clock import from_ms
from spendgate.domain.refusals import ComboSums, RefusalCombo
from spendgate.domain.savings import SavingsBy, SavingsGroup, ShadowSavings
from spendgate.domain.totals import (
    BlockGroup,
    Bucket,
    GroupBy,
    UsageGroup,
    UsagePoint,
    merge_blocks,
    merge_series,
    merge_usage,
    told_to_retry_sql,
    whole_hours,
)
from spendgate.storage.sqlite import medians, overrun_sql, refusal_days, refusal_sql
from spendgate.storage.sqlite import rollup_sql as job
from spendgate.storage.sqlite.rows import GROUP_COLUMNS, SAVINGS, SHADOW_SAVINGS, USAGE

T = TypeVar("T")

_DIMS = job.DIMS
ROLL_BATCH = 5_000  # ledger rows per roll-up transaction: bounds how long it holds the writer
BEHIND = "SELECT (SELECT IFNULL(MAX(id), 0) FROM ledger) > (SELECT rolled_to FROM rollup_mark)"
# A group stored as the integer 0 is NULL in the ledger (see the migration).
_GROUP = "CASE WHEN typeof(grp) = 'integer' THEN NULL ELSE grp END"
_RANGE = "dim = ? AND hour >= ? AND hour < ?"

# Selected in UsageGroup's field order.
_USAGE = (
    f"SELECT {_GROUP}, SUM(requests), SUM(input_tokens), SUM(cached_input_tokens), "  # noqa: S608
    "SUM(cache_write_tokens), SUM(output_tokens), SUM(reasoning_tokens), SUM(cost_nanos), "
    "SUM(errors), SUM(estimated), SUM(blocked), SUM(blocked_would_cost_nanos), SUM(retries), "
    f"SUM(retry_cost_nanos) FROM usage_hourly WHERE {_RANGE} GROUP BY grp"
)
# Selected in SavingsGroup's field order, as `rows.SAVINGS`; groups with no served row
# are left out, as there.
_SAVINGS = (
    f"SELECT {_GROUP}, SUM(s_requests), SUM(s_cost_nanos), SUM(s_counterfactual_nanos), "  # noqa: S608
    "SUM(s_aliased), SUM(s_rewritten), SUM(s_downgraded), SUM(s_fell_back), "
    "SUM(s_shadow_cost_nanos), SUM(s_counterfactual_nanos), "
    "SUM(s_cost_nanos - s_shadow_cost_nanos) "
    f"FROM usage_hourly WHERE {_RANGE} GROUP BY grp HAVING SUM(requests) > 0"
)
_SHADOW = (
    "SELECT rule, SUM(requests), SUM(cost_nanos), SUM(shadow_cost_nanos) FROM shadow_hourly "
    "WHERE hour >= ? AND hour < ? GROUP BY rule"
)
_BLOCKS = (
    "SELECT name, SUM(blocked), SUM(blocked_would_cost_nanos), SUM(shadow_hits), "
    "SUM(shadow_cost_nanos), SUM(retryable), SUM(overruns), SUM(overrun_cost_nanos) "
    "FROM blocks_hourly WHERE hour >= ? AND hour < ? GROUP BY name"
)
# Series: buckets of whole hours from the rollups, the edges from the rows.
_SERIES = (
    f"SELECT hour - hour % ? AS bucket, {_GROUP}, SUM(requests), SUM(input_tokens), "  # noqa: S608
    "SUM(output_tokens), SUM(cost_nanos), SUM(blocked) "
    f"FROM usage_hourly WHERE {_RANGE} GROUP BY bucket, grp"
)
_RAW_SERIES = {
    group_by: (
        f"SELECT ts - ts % ? AS bucket, {column}, SUM(blocked_by IS NULL), "  # noqa: S608
        "SUM(input_tokens), SUM(output_tokens), SUM(cost_nanos), SUM(blocked_by IS NOT NULL) "
        "FROM ledger WHERE ts >= ? AND ts < ? GROUP BY 1, 2"
    )
    for group_by, column in GROUP_COLUMNS.items()
}
_RANGE_SQL = "ts >= ? AND ts < ?"
_PAST_SQL = "ts >= ? AND ts < ? AND ledger.id > ?"


def _past(sql: str) -> str:
    """A raw statement over ``[since, until)`` narrowed to the rows past the mark, found by
    id (NOT INDEXED keeps SQLite off the ts and team indexes, which walk the whole period)."""
    assert sql.count(_RANGE_SQL) == 1
    assert sql.count("FROM ledger ") + sql.count("FROM ledger,") == 1
    narrowed = sql.replace(_RANGE_SQL, _PAST_SQL)
    return narrowed.replace("FROM ledger ", "FROM ledger NOT INDEXED ").replace(
        "FROM ledger,", "FROM ledger NOT INDEXED,"
    )


_BLOCKED_SQL = (
    f"SELECT blocked_by, COUNT(*), SUM(would_cost_nanos), SUM({told_to_retry_sql()}) "  # noqa: S608
    "FROM ledger "
    "WHERE ts >= ? AND ts < ? AND blocked_by IS NOT NULL GROUP BY blocked_by"
)
_SHADOW_HITS_SQL = (
    "SELECT hit.value, COUNT(*), SUM(ledger.cost_nanos) FROM ledger, "
    "json_each(ledger.shadow_blocks) AS hit "
    "WHERE ts >= ? AND ts < ? AND ledger.shadow_blocks != '[]' GROUP BY hit.value"
)
_OVERRUNS_SQL = (
    "SELECT over.value, COUNT(*), SUM(ledger.cost_nanos) FROM ledger, "
    "json_each(ledger.settled_above) AS over "
    "WHERE ts >= ? AND ts < ? AND ledger.settled_above != '[]' GROUP BY over.value"
)
# (over a range, over the rows of a range past the mark)
_BLOCKED = (_BLOCKED_SQL, _past(_BLOCKED_SQL))
_SHADOW_HITS = (_SHADOW_HITS_SQL, _past(_SHADOW_HITS_SQL))
_OVERRUNS = (_OVERRUNS_SQL, _past(_OVERRUNS_SQL))


def _split(
    conn: sqlite3.Connection,
    since_ms: int,
    until_ms: int,
    raw: Callable[[tuple[int, ...]], T],
    rolled: Callable[[int, int], T],
) -> list[T]:
    """The parts of ``[since_ms, until_ms)``: the rollups for its whole hours and the rows
    of those hours past the mark, the raw rows for the partial hours at its edges (or for
    all of it when it holds no whole hour). ``raw`` gets (since, until) or (since, until,
    mark): the latter asks for the rows past the mark only. Call inside a read transaction."""
    hours = whole_hours(since_ms, until_ms)
    if hours is None:
        return [raw((since_ms, until_ms))] if since_ms < until_ms else []
    first, end = hours
    mark = int(conn.execute(job.MARK).fetchone()[0])
    parts = [rolled(first, end), raw((first, end, mark))]
    if since_ms < first:
        parts.append(raw((since_ms, first)))
    if end < until_ms:
        parts.append(raw((end, until_ms)))
    return parts


def read(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """``work`` in one read transaction: the mark, the rollups and the rows it reads are
    of one moment, whatever the job commits meanwhile."""
    conn.execute("BEGIN")
    try:
        return work(conn)
    finally:
        conn.execute("COMMIT")


def roll_up(conn: sqlite3.Connection, batch: int = ROLL_BATCH) -> int:
    """Add up to ``batch`` rows past the mark to the rollups and move the mark (on the
    writer, inside its transaction); how many ledger ids it covered."""
    mark = int(conn.execute(job.MARK).fetchone()[0])
    last = min(int(conn.execute(job.LAST_ID).fetchone()[0]), mark + batch)
    if last <= mark:
        return 0
    conn.execute(job.SEEN_TABLE)
    conn.execute(job.SEEN_CLEAR)
    conn.execute(job.SEEN_FILL, (mark, last))
    for statement in (job.ROLL_USAGE, job.ROLL_BLOCKS, job.ROLL_SHADOW):
        conn.execute(statement, (mark, last))
    conn.execute(refusal_days.DELTA_TABLE)
    conn.execute(refusal_days.DELTA_CLEAR)
    for statement in (refusal_sql.ROLL_TAKEN_BACK, refusal_sql.ROLL_NEW):
        conn.execute(statement, {"mark": mark, "last": last})
    for statement in refusal_days.APPLY:
        conn.execute(statement)
    conn.execute(refusal_days.DELTA_CLEAR)
    medians.keep(conn, mark, last)
    overrun_sql.roll_up(conn, mark, last)
    conn.execute(job.SEEN_CLEAR)
    conn.execute(job.SET_MARK, (last,))
    return last - mark


def usage(
    conn: sqlite3.Connection, group_by: GroupBy, since_ms: int, until_ms: int
) -> list[UsageGroup]:
    def raw(params: tuple[int, ...]) -> list[UsageGroup]:
        sql = USAGE[group_by] if len(params) == 2 else _past(USAGE[group_by])
        return [UsageGroup(*row) for row in conn.execute(sql, params)]

    def rolled(low: int, high: int) -> list[UsageGroup]:
        params = (_DIMS[group_by], low, high)
        return [UsageGroup(*row) for row in conn.execute(_USAGE, params)]

    return merge_usage(*_split(conn, since_ms, until_ms, raw, rolled))


def blocks(conn: sqlite3.Connection, since_ms: int, until_ms: int) -> list[BlockGroup]:
    def raw(params: tuple[int, ...]) -> list[BlockGroup]:
        past = len(params) == 3
        found: dict[str, list[int]] = {}
        for name, count, cost, retryable in conn.execute(_BLOCKED[past], params):
            values = found.setdefault(name, [0] * 7)
            values[0:2], values[4] = [count, cost], retryable
        for name, count, cost in conn.execute(_SHADOW_HITS[past], params):
            found.setdefault(name, [0] * 7)[2:4] = [count, cost]
        for name, count, cost in conn.execute(_OVERRUNS[past], params):
            found.setdefault(name, [0] * 7)[5:7] = [count, cost]
        return [BlockGroup(name, *values) for name, values in found.items()]

    def rolled(low: int, high: int) -> list[BlockGroup]:
        return [BlockGroup(*row) for row in conn.execute(_BLOCKS, (low, high))]

    return merge_blocks(*_split(conn, since_ms, until_ms, raw, rolled))


Source = tuple[str, dict[str, int]]  # a statement and its parameters


def refusal_sources(conn: sqlite3.Connection, since_ms: int, until_ms: int) -> list[Source]:
    """The statements whose rows (`ComboSums`, a combination in as many rows as come) sum
    per combination to `spendgate.domain.refusals.refusal_combos` over the rows of
    ``[since_ms, until_ms)`` (`refusal_sql`): the whole days' running sums
    (`refusal_days`) and the other whole hours' rollups, corrected for their rows that the
    period or the rows past the mark answer differently, the edge hours and the rows past
    the mark raw. Inside the read transaction that runs them."""
    span = {"since": since_ms}
    hours = whole_hours(since_ms, until_ms)
    if hours is None:
        raw = {**span, "low": since_ms, "high": until_ms}
        return [(refusal_sql.RAW, raw)] if since_ms < until_ms else []
    first, end = hours
    mark = int(conn.execute(job.MARK).fetchone()[0])
    sources: list[Source] = []
    days = refusal_days.whole_days(first, end)
    rolled = [(first, end)]
    if days is not None:
        sources.append((refusal_days.DAYS, {"d1": days[0], "d2": days[1]}))
        rolled = [(first, days[0]), (days[1], end)]
    sources += [
        (refusal_sql.ROLLED, {"first": low, "end": high}) for low, high in rolled if low < high
    ]
    whole = {**span, "first": first, "end": end, "mark": mark}
    sources += [(refusal_sql.CORRECTION, whole), (refusal_sql.PAST, whole)]
    for low, high in ((since_ms, first), (end, until_ms)):
        if low < high:
            sources.append((refusal_sql.RAW, {**span, "low": low, "high": high}))
    return sources


def refusal_parts(conn: sqlite3.Connection, since_ms: int, until_ms: int) -> list[ComboSums]:
    """The rows of `refusal_sources`."""
    return [
        part
        for sql, params in refusal_sources(conn, since_ms, until_ms)
        for part in conn.execute(sql, params)
    ]


def refusals(conn: sqlite3.Connection, since_ms: int, until_ms: int) -> list[RefusalCombo]:
    """`refusal_parts` summed per combination, sorted, none of zero requests."""
    found: dict[tuple[str, str, str, int, int], list[int]] = {}
    for name, key, model, ceiling, rate, *sums in refusal_parts(conn, since_ms, until_ms):
        values = found.setdefault((name, key, model, ceiling, rate), [0, 0, 0])
        for index, value in enumerate(sums):
            values[index] += value
    return [
        RefusalCombo(*combo, *values) for combo, values in sorted(found.items()) if values[0] != 0
    ]


Savings = tuple[list[SavingsGroup], list[ShadowSavings]]


def savings(conn: sqlite3.Connection, by: SavingsBy, since_ms: int, until_ms: int) -> Savings:
    """Per group and per shadow rule. A request's rows share its arrival time (and so its
    hour) and its key (and so its team and service): summing the parts counts it once."""

    def raw(params: tuple[int, ...]) -> Savings:
        past = len(params) == 3  # rows past the mark: counted as the rollups count them
        grouped = job.TAIL_SAVINGS[by.value] if past else SAVINGS[by.value]
        groups = [SavingsGroup(*row) for row in conn.execute(grouped, params)]
        shadow = job.TAIL_SHADOW if past else SHADOW_SAVINGS
        return groups, [ShadowSavings(*row) for row in conn.execute(shadow, params)]

    def rolled(low: int, high: int) -> Savings:
        params = (by.value, low, high)
        groups = [SavingsGroup(*row) for row in conn.execute(_SAVINGS, params)]
        shadows = [ShadowSavings(*row) for row in conn.execute(_SHADOW, (low, high))]
        return groups, shadows

    parts = _split(conn, since_ms, until_ms, raw, rolled)
    return _sum_groups(g for part in parts for g in part[0]), _sum_shadows(
        s for part in parts for s in part[1]
    )


_SAVINGS_SUMS = (
    "requests",
    "cost_nanos",
    "counterfactual_nanos",
    "aliased",
    "rewritten",
    "downgraded",
    "fell_back",
    "shadow_cost_nanos",
    "capped_counterfactual_nanos",
    "shadow_spend_saved_nanos",
)


def _sum_groups(groups: Iterable[SavingsGroup]) -> list[SavingsGroup]:
    sums: dict[str | None, SavingsGroup] = {}
    for g in groups:
        seen = sums.get(g.group)
        if seen is None:
            sums[g.group] = g
            continue
        added = {name: getattr(seen, name) + getattr(g, name) for name in _SAVINGS_SUMS}
        sums[g.group] = dataclasses.replace(seen, **added)
    return list(sums.values())


def _sum_shadows(shadows: Iterable[ShadowSavings]) -> list[ShadowSavings]:
    sums: dict[str, list[int]] = {}
    for s in shadows:
        total = sums.setdefault(s.rule, [0, 0, 0])
        total[0] += s.requests
        total[1] += s.cost_nanos
        total[2] += s.shadow_cost_nanos
    return [ShadowSavings(rule, *values) for rule, values in sorted(sums.items())]


def series(
    conn: sqlite3.Connection, group_by: GroupBy, bucket: Bucket, since_ms: int, until_ms: int
) -> list[UsagePoint]:
    def points(sql: str, params: tuple[object, ...]) -> list[UsagePoint]:
        return [UsagePoint(from_ms(start), *rest) for start, *rest in conn.execute(sql, params)]

    def raw(params: tuple[int, ...]) -> list[UsagePoint]:
        sql = _RAW_SERIES[group_by] if len(params) == 2 else _past(_RAW_SERIES[group_by])
        return points(sql, (bucket.ms, *params))

    def rolled(low: int, high: int) -> list[UsagePoint]:
        return points(_SERIES, (bucket.ms, _DIMS[group_by], low, high))

    return merge_series(*_split(conn, since_ms, until_ms, raw, rolled))
