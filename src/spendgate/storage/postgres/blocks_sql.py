"""`spendgate blocks`' sums on PostgreSQL from ``blocks_hourly`` (migration 0006): what
each budget, limit or breaker refused and what shadow limits and overruns marked, per hour
and name; additive, so kept by the statement that inserts ledger rows. A report reads the
rollup for the whole hours of its period and the ledger for its edges."""

from __future__ import annotations

from spendgate.domain.totals import told_to_retry_sql

_SUMS = (
    "blocked, blocked_would_cost_nanos, shadow_hits, shadow_cost_nanos, retryable, overruns, "
    "overrun_cost_nanos"
)
# A ledger row's marks, one per name: refused by it, a shadow hit of it, an overrun of it.
_MARKS = (
    "SELECT ts - ts % 3600000 AS hour_ms, blocked_by AS name, 1 AS blocked, "  # noqa: S608
    f"would_cost_nanos AS would, 0 AS hits, 0 AS hit_cost, {told_to_retry_sql()}::int "
    "AS retryable, "
    "0 AS overruns, 0 AS over_cost FROM inserted WHERE blocked_by IS NOT NULL "
    "UNION ALL SELECT ts - ts % 3600000, hit, 0, 0, 1, cost_nanos, 0, 0, 0 "
    "FROM inserted, jsonb_array_elements_text(shadow_blocks::jsonb) AS hit "
    "WHERE shadow_blocks != '[]' "
    "UNION ALL SELECT ts - ts % 3600000, over, 0, 0, 0, 0, 0, 1, cost_nanos "
    "FROM inserted, jsonb_array_elements_text(settled_above::jsonb) AS over "
    "WHERE settled_above != '[]'"
)
# Added to the statement that inserts rows: the marks of ``inserted``, locked in one order.
BLOCKS_INSERTED = (
    f"blocks AS (INSERT INTO blocks_hourly (hour_ms, name, {_SUMS}) "  # noqa: S608
    "SELECT hour_ms, name, SUM(blocked), SUM(would), SUM(hits), SUM(hit_cost), "
    f"SUM(retryable), SUM(overruns), SUM(over_cost) FROM ({_MARKS}) AS marks "
    'GROUP BY 1, 2 ORDER BY 1, name COLLATE "C" '
    "ON CONFLICT (hour_ms, name) DO UPDATE SET "
    + ", ".join(f"{name} = blocks_hourly.{name} + excluded.{name}" for name in _SUMS.split(", "))
    + ")"
)
# The whole hours [$1, $2), per name, in `BlockGroup`'s field order.
ROLLED = (
    "SELECT name, SUM(blocked)::bigint, SUM(blocked_would_cost_nanos)::bigint, "
    "SUM(shadow_hits)::bigint, SUM(shadow_cost_nanos)::bigint, SUM(retryable)::bigint, "
    "SUM(overruns)::bigint, SUM(overrun_cost_nanos)::bigint FROM blocks_hourly "
    "WHERE hour_ms >= $1 AND hour_ms < $2 GROUP BY name"
)
