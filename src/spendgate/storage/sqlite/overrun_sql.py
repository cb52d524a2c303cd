"""The budgets view's overruns from rollups (migration 0018): per budget name, scope and
member, the ledger rows settled above that budget over a span, as
`spendgate.domain.marks.overruns` counts them from the rows.

The roll-up job adds the rows past the mark to ``overruns_hourly`` and to its running day
sums (``overruns_daily``, ``overrun_combos``: `day_sums`). `counts` reads, in one read
transaction, a span's whole days from the day sums, its other whole hours from
``overruns_hourly``, the rows of its whole hours past the mark raw, and the partial hours
at its edges raw (as `rollups` reads every report): at most two lookups per (name, scope,
member) for the days, whatever the overruns per member. Names are fixed here, never input
(hence the S608 waivers).
"""

from __future__ import annotations

import sqlite3

from spendgate.domain.totals import whole_hours
from spendgate.storage.sqlite import rollup_sql as job
from spendgate.storage.sqlite.day_sums import DaySums, whole_days

OVERRUNS = DaySums(
    hourly="overruns_hourly",
    daily="overruns_daily",
    combos="overrun_combos",
    delta="overrun_delta",
    columns=("name", "scope", "member"),
    sums=("overruns",),
    column_types=("TEXT", "TEXT", "TEXT"),
)

# A row's members under each scope but tags (`spendgate.domain.marks.row_members`).
_SCOPES = " UNION ALL ".join(
    f"SELECT '{scope}' AS scope" if i == 0 else f"SELECT '{scope}'"
    for i, scope in enumerate(("org", "team", "service", "user", "key", "session", "model"))
)
_MEMBER = (
    "CASE s.scope WHEN 'org' THEN l.org WHEN 'team' THEN l.team WHEN 'service' THEN l.service "
    "WHEN 'user' THEN l.\"user\" WHEN 'key' THEN l.key_id WHEN 'session' THEN l.session_id "
    "ELSE l.routed_model END"
)


def _counted(bucket: str, ledger: str, where: str) -> str:
    """Per ``bucket`` (an expression of ``ts``, or a constant), name, scope and member,
    the overrun rows of ``ledger`` (the table with its index clause) that ``where``
    keeps: each row once per name it was settled above and member it has."""
    of = f"FROM {ledger} CROSS JOIN json_each(l.settled_above) AS o"  # the rows outermost
    rows = f"WHERE l.settled_above != '[]' AND {where}"
    return (
        f"SELECT {bucket}, name, scope, member, COUNT(DISTINCT id) FROM ("  # noqa: S608
        f"SELECT l.id, l.ts, o.value AS name, s.scope, {_MEMBER} AS member "
        f"{of} CROSS JOIN ({_SCOPES}) AS s {rows} "
        f"UNION ALL SELECT l.id, l.ts, o.value, 'tag', t.value {of} "
        f"CROSS JOIN json_each(l.tags) AS t "
        f"{rows}) WHERE member IS NOT NULL GROUP BY 1, name, scope, member"
    )


_HOUR = "ts - (((ts % 3600000) + 3600000) % 3600000)"
# The job: the rows of ids (:mark, :last] into its scratch table, per hour (by rowid).
ROLL = OVERRUNS.delta_insert + _counted(
    _HOUR, "ledger AS l NOT INDEXED", "l.id > :mark AND l.id <= :last"
)
# A span's parts: the rows of [:low, :high) (by 0017's index on overrun rows), those of
# them past the mark (by rowid), the hourly rollups of whole hours [:first, :end).
_RAW = _counted("0", "ledger AS l", "l.ts >= :low AND l.ts < :high")
_PAST = _counted("0", "ledger AS l NOT INDEXED", "l.ts >= :low AND l.ts < :high AND l.id > :mark")
_HOURS = (
    "SELECT 0, name, scope, member, SUM(overruns) FROM overruns_hourly "
    "WHERE hour >= :first AND hour < :end GROUP BY name, scope, member"
)
_DAYS = f"SELECT 0, {OVERRUNS.days.removeprefix('SELECT ')}"

Counts = dict[tuple[str, str, str], int]


def roll_up(conn: sqlite3.Connection, mark: int, last: int) -> None:
    """Add the overruns of ledger ids ``(mark, last]`` to the rollups (the job's step,
    inside its transaction)."""
    conn.execute(OVERRUNS.delta_table)
    conn.execute(OVERRUNS.delta_clear)
    conn.execute(ROLL, {"mark": mark, "last": last})
    for statement in OVERRUNS.apply:
        conn.execute(statement)
    conn.execute(OVERRUNS.delta_clear)


def counts(conn: sqlite3.Connection, since_ms: int, until_ms: int) -> Counts:
    """Per (name, scope, member), the overrun rows of ``[since_ms, until_ms)``; none of
    zero. Inside a read transaction (`rollups.read`)."""
    sources: list[tuple[str, dict[str, int]]] = []
    hours = whole_hours(since_ms, until_ms)
    if hours is None:
        if since_ms < until_ms:
            sources.append((_RAW, {"low": since_ms, "high": until_ms}))
    else:
        first, end = hours
        mark = int(conn.execute(job.MARK).fetchone()[0])
        days = whole_days(first, end)
        rolled = [(first, end)]
        if days is not None:
            sources.append((_DAYS, {"d1": days[0], "d2": days[1]}))
            rolled = [(first, days[0]), (days[1], end)]
        sources += [(_HOURS, {"first": low, "end": high}) for low, high in rolled if low < high]
        sources.append((_PAST, {"low": first, "high": end, "mark": mark}))
        for low, high in ((since_ms, first), (end, until_ms)):
            if low < high:
                sources.append((_RAW, {"low": low, "high": high}))
    found: Counts = {}
    for sql, params in sources:
        for _, name, scope, member, count in conn.execute(sql, params):
            found[(name, scope, member)] = found.get((name, scope, member), 0) + count
    return {combo: count for combo, count in found.items() if count}
