"""Distinct refusals summed per combination over whole days (migration 0016).

``refusals_hourly`` (0014) holds a row per hour and combination; with refusals spread over
many callers, models and ceilings almost every refused request of an hour is a combination
of its own, so a month's report read as many rollup rows as refusals. ``refusals_daily``
keeps, per combination and day with refusals, the running sums of that combination's
hourly rows up to the end of the day; the sums of ``[d1, d2)`` are the running sums at the
last day before ``d2`` less those at the last day before ``d1``: two lookups per
combination, whatever the refusals per combination. ``refusal_combos`` lists the
combinations with the first and last day they appear on, so that a report walks only
those whose days overlap its period.

The job writes both from the changes it writes to ``refusals_hourly`` (`refusal_sql`:
the rows its batch adds, and the rows it turns into repeats, taken back), collected per
hour in a scratch table first: a change on a day adds to that day's running sums (opened
from the day before it when the day had none) and to every later day of the combination.
A late row (an earlier time than rows already rolled up) so updates a few rows more; the
sums stay those of ``refusals_hourly`` exactly. Names are fixed here (S608 waivers).
"""

from __future__ import annotations

DAY_MS = 86_400_000

_COMBO_COLUMNS = ("name", "key_id", "model", "ceiling", "rate")
_SUMS = ("requests", "worst_case_nanos", "fixed_nanos")


def _same(a: str, b: str) -> str:
    """Rows ``a`` and ``b`` are of one combination."""
    return " AND ".join(f"{a}.{column} = {b}.{column}" for column in _COMBO_COLUMNS)


_COMBO = ", ".join(_COMBO_COLUMNS)
_DAY = "hour - (((hour % 86400000) + 86400000) % 86400000)"

# The job's scratch table: its changes to refusals_hourly, per hour and combination.
DELTA_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS refusal_delta (hour INTEGER, name TEXT, key_id TEXT, "
    "model TEXT, ceiling INTEGER, rate INTEGER, requests INTEGER, worst_case_nanos INTEGER, "
    "fixed_nanos INTEGER)"
)
DELTA_CLEAR = "DELETE FROM temp.refusal_delta"
DELTA_INSERT = (
    "INSERT INTO temp.refusal_delta "
    "(hour, name, key_id, model, ceiling, rate, requests, worst_case_nanos, fixed_nanos) "
)
_SUMMED = ", ".join(f"SUM({column})" for column in _SUMS)
_ADD = ", ".join(f"{column} = {column} + excluded.{column}" for column in _SUMS)
_BY_DAY = f"SELECT *, {_DAY} AS day FROM temp.refusal_delta"  # noqa: S608

# The changes applied: to the hourly rollups, ...
TO_HOURLY = (
    f"INSERT INTO refusals_hourly (hour, {_COMBO}, {', '.join(_SUMS)}) "  # noqa: S608
    f"SELECT hour, {_COMBO}, {_SUMMED} FROM temp.refusal_delta GROUP BY hour, {_COMBO} "
    f"ON CONFLICT (hour, {_COMBO}) DO UPDATE SET {_ADD}"
)
# ... to the list of combinations, ...
TO_COMBOS = (
    f"INSERT INTO refusal_combos ({_COMBO}, first_day, last_day, {', '.join(_SUMS)}) "  # noqa: S608
    f"SELECT {_COMBO}, MIN(day), MAX(day), {_SUMMED} FROM ({_BY_DAY}) GROUP BY {_COMBO} "
    f"ON CONFLICT ({_COMBO}) DO UPDATE SET first_day = MIN(first_day, excluded.first_day), "
    f"last_day = MAX(last_day, excluded.last_day), {_ADD}"
)
# ... a running-sums row opened (from the day before) for each changed day without one, ...
_PREVIOUS = (
    f"(SELECT MAX(q.day) FROM refusals_daily AS q WHERE {_same('q', 'd')} "  # noqa: S608
    "AND q.day < d.day)"
)
TO_DAYS_OPEN = (
    f"INSERT INTO refusals_daily ({_COMBO}, day, {', '.join(_SUMS)}) "  # noqa: S608
    f"SELECT {', '.join(f'd.{c}' for c in _COMBO_COLUMNS)}, d.day, "
    + ", ".join(f"IFNULL(p.{column}, 0)" for column in _SUMS)
    + f" FROM (SELECT DISTINCT {_COMBO}, day FROM ({_BY_DAY})) AS d "  # noqa: S608
    f"LEFT JOIN refusals_daily AS p ON {_same('p', 'd')} AND p.day = {_PREVIOUS} "
    f"WHERE true ON CONFLICT ({_COMBO}, day) DO NOTHING"
)
# ... and every running sum from each changed day on.
TO_DAYS_ADD = (
    "UPDATE refusals_daily AS c SET "  # noqa: S608
    + ", ".join(f"{column} = c.{column} + x.{column}" for column in _SUMS)
    + f" FROM (SELECT {', '.join(f'e.{c}' for c in _COMBO_COLUMNS)}, e.day, "
    + ", ".join(f"SUM(d.{column}) AS {column}" for column in _SUMS)
    + f" FROM ({_BY_DAY}) AS d JOIN refusals_daily AS e ON {_same('e', 'd')} "
    f"AND e.day >= d.day GROUP BY {', '.join(f'e.{c}' for c in _COMBO_COLUMNS)}, e.day) AS x "
    f"WHERE {_same('c', 'x')} AND c.day = x.day"
)
APPLY = (TO_HOURLY, TO_COMBOS, TO_DAYS_OPEN, TO_DAYS_ADD)


def _at(column: str, bound: str) -> str:
    """Combination ``c``'s running sum ``column`` at its last day before ``bound``."""
    return (
        f"(SELECT q.{column} FROM refusals_daily AS q WHERE {_same('q', 'c')} "  # noqa: S608
        f"AND q.day < {bound} ORDER BY q.day DESC LIMIT 1)"
    )


def _in_days(column: str) -> str:
    """Combination ``c``'s sum ``column`` over the days ``[:d1, :d2)``: its sums over every
    day unless it has days from ``:d2`` on, less its running sum before ``:d1`` if it has
    days before it (a lookup each, only where needed)."""
    return (
        f"CASE WHEN c.last_day < :d2 THEN c.{column} ELSE {_at(column, ':d2')} END "
        f"- CASE WHEN c.first_day >= :d1 THEN 0 ELSE {_at(column, ':d1')} END"
    )


# A report's whole days [:d1, :d2): per combination whose days overlap them, its sums there.
DAYS = (
    f"SELECT {', '.join(f'c.{column}' for column in _COMBO_COLUMNS)}, "  # noqa: S608
    + ", ".join(_in_days(column) for column in _SUMS)
    + " FROM refusal_combos AS c WHERE c.last_day >= :d1 AND c.first_day < :d2"
)


def whole_days(first: int, end: int) -> tuple[int, int] | None:
    """The whole UTC days inside ``[first, end)`` (epoch ms), or None when there is none."""
    d1 = -(-first // DAY_MS) * DAY_MS
    d2 = end // DAY_MS * DAY_MS
    return (d1, d2) if d1 < d2 else None
