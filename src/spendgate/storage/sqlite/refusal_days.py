"""Distinct refusals summed per combination over whole days (migration 0016).

``refusals_hourly`` (0014) holds a row per hour and combination; with refusals spread over
many callers, models and ceilings almost every refused request of an hour is a combination
of its own, so a month's report read as many rollup rows as refusals. ``refusals_daily``
keeps, per combination and day with refusals, the running sums of that combination's
hourly rows up to the end of the day; ``refusal_combos`` lists the combinations with the
first and last day they appear on (`spendgate.storage.sqlite.day_sums`: two lookups per
combination, whatever the refusals per combination).

The job writes all three from the changes it writes to ``refusals_hourly``
(`refusal_sql`: the rows its batch adds, and the rows it turns into repeats, taken back),
collected per hour in a scratch table first.
"""

from __future__ import annotations

from spendgate.storage.sqlite.day_sums import DAY_MS, DaySums, whole_days

__all__ = ["APPLY", "DAYS", "DAY_MS", "DELTA_CLEAR", "DELTA_INSERT", "DELTA_TABLE", "whole_days"]

REFUSALS = DaySums(
    hourly="refusals_hourly",
    daily="refusals_daily",
    combos="refusal_combos",
    delta="refusal_delta",
    columns=("name", "key_id", "model", "ceiling", "rate"),
    sums=("requests", "worst_case_nanos", "fixed_nanos"),
    column_types=("TEXT", "TEXT", "TEXT", "INTEGER", "INTEGER"),
)
DELTA_TABLE = REFUSALS.delta_table
DELTA_CLEAR = REFUSALS.delta_clear
DELTA_INSERT = REFUSALS.delta_insert
APPLY = REFUSALS.apply
TO_HOURLY = APPLY[0]
DAYS = REFUSALS.days
