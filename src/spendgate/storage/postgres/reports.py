"""The ledger's report statements on PostgreSQL: the SQLite backend's, in PostgreSQL's
dialect (``COUNT(*) FILTER`` for sums of conditions, sums cast back to BIGINT, JSON
arrays expanded with ``jsonb_array_elements_text``). Each scans ``ts`` in ``[$1, $2)``,
which prunes the scan to the partitions of those months."""

from __future__ import annotations

from spendgate.domain.totals import told_to_retry_sql
from spendgate.storage.base import GroupBy
from spendgate.storage.sqlite.rows import GROUP_COLUMNS, LEDGER

COLUMNS = LEDGER.columns

HOUR_MS = 3_600_000
# Usage per group: the hourly rollup (migration 0002) for the whole hours of the period,
# [$3, $4), and the ledger's own rows for its edges, [$1, $3) and [$4, $2).
_USAGE_PARTS = (
    "SELECT {column} AS grp, answered, input_tokens, cached_input_tokens, cache_write_tokens, "
    "output_tokens, reasoning_tokens, cost_nanos, errors, estimated, blocked, "
    "would_cost_nanos, retries, retry_cost_nanos "
    "FROM ledger_hourly WHERE hour_ms >= $3 AND hour_ms < $4 "
    "UNION ALL "
    "SELECT {column}, (blocked_by IS NULL)::int, input_tokens, cached_input_tokens, "
    "cache_write_tokens, output_tokens, reasoning_tokens, cost_nanos, "
    "(status >= 400 AND blocked_by IS NULL)::int, usage_estimated::int, "
    "(blocked_by IS NOT NULL)::int, would_cost_nanos, "
    "(retry_count > 0 AND blocked_by IS NULL)::int, "
    "CASE WHEN retry_count > 0 THEN cost_nanos ELSE 0 END "
    "FROM ledger WHERE (ts >= $1 AND ts < $3) OR (ts >= $4 AND ts < $2)"
)
USAGE = {
    group_by: (
        f"WITH parts AS ({_USAGE_PARTS.format(column=column)}) "  # noqa: S608
        "SELECT grp, SUM(answered)::bigint, SUM(input_tokens)::bigint, "
        "SUM(cached_input_tokens)::bigint, SUM(cache_write_tokens)::bigint, "
        "SUM(output_tokens)::bigint, SUM(reasoning_tokens)::bigint, SUM(cost_nanos)::bigint, "
        "SUM(errors)::bigint, SUM(estimated)::bigint, SUM(blocked)::bigint, "
        "SUM(would_cost_nanos)::bigint, SUM(retries)::bigint, SUM(retry_cost_nanos)::bigint "
        'FROM parts GROUP BY grp ORDER BY SUM(cost_nanos) DESC, grp IS NULL, grp COLLATE "C"'
    )
    for group_by, column in GROUP_COLUMNS.items()
}


# Usage per time bucket ($5: its length in ms) and group: the same parts as USAGE, each
# placed in its hour (the rollup's row) or at its own time (the edges' rows).
_SERIES_PARTS = (
    "SELECT hour_ms AS at, {column} AS grp, answered, input_tokens, output_tokens, "
    "cost_nanos, blocked FROM ledger_hourly WHERE hour_ms >= $3 AND hour_ms < $4 "
    "UNION ALL "
    "SELECT ts, {column}, (blocked_by IS NULL)::int, input_tokens, output_tokens, cost_nanos, "
    "(blocked_by IS NOT NULL)::int "
    "FROM ledger WHERE (ts >= $1 AND ts < $3) OR (ts >= $4 AND ts < $2)"
)
SERIES = {
    group_by: (
        f"WITH parts AS ({_SERIES_PARTS.format(column=column)}) "  # noqa: S608
        "SELECT at - at % $5 AS bucket, grp, SUM(answered)::bigint, SUM(input_tokens)::bigint, "
        "SUM(output_tokens)::bigint, SUM(cost_nanos)::bigint, SUM(blocked)::bigint "
        "FROM parts GROUP BY 1, 2"
    )
    for group_by, column in GROUP_COLUMNS.items()
}


def rolled_span(since_ms: int, until_ms: int) -> tuple[int, int]:
    """The whole hours inside ``[since, until)`` that the rollup answers for (empty, at
    ``until``, when there are none: the ledger answers for everything)."""
    first = -(-since_ms // HOUR_MS) * HOUR_MS
    last = until_ms // HOUR_MS * HOUR_MS
    return (first, last) if first < last else (until_ms, until_ms)


SAVINGS_ROWS = (
    "SELECT {column} AS grp, "
    "CASE WHEN attempt > 0 THEN substr(request_id, 1, "
    "length(request_id) - length(attempt::text) - 1) ELSE request_id END AS req, cost_nanos, "
    "CASE WHEN baseline_cost_nanos IS NULL OR unreconciled THEN cost_nanos"
    " ELSE baseline_cost_nanos END AS counterfactual, "
    "CASE WHEN shadow_cost_nanos IS NULL OR unreconciled THEN cost_nanos"
    " ELSE shadow_cost_nanos END AS shadow_cost, "
    "route_kind, attempt, status, shadow_rule "
    "FROM ledger WHERE ts >= $1 AND ts < $2 AND blocked_by IS NULL"
)
# Savings and the estimate's samples as scans of the period, as the backend read them
# before migration 0005 (`rollup_sql` now): kept as the baseline benchmarks/postgres_reports.py
# times beside the rollups (and checks them against).
# Per request first (its rows share the request id up to ``-<attempt>``), then per group:
# counting (group, request) pairs is COUNT(DISTINCT request) within the group, and one hash
# aggregate replaces a sort per COUNT(DISTINCT ...): 8.5 s against 31 s over 3.3 M rows,
# 2.7 s against 2.0 s over 333 k (docs/benchmarks.md#reports-on-postgresql).
SAVINGS = {
    name: (
        f"WITH r AS ({SAVINGS_ROWS.format(column=column)}), "  # noqa: S608
        "per_request AS (SELECT grp, SUM(cost_nanos) AS cost, SUM(counterfactual) AS cf, "
        "bool_or(route_kind = 'alias') AS aliased, bool_or(route_kind = 'rewrite') AS rewritten, "
        "bool_or(route_kind = 'downgrade') AS downgraded, "
        "bool_or(attempt > 0 AND status < 400) AS fell_back, SUM(shadow_cost) AS shadow, "
        "SUM(cost_nanos - shadow_cost) AS saved FROM r GROUP BY grp, req) "
        "SELECT grp, COUNT(*), SUM(cost)::bigint, SUM(cf)::bigint, "
        "COUNT(*) FILTER (WHERE aliased), COUNT(*) FILTER (WHERE rewritten), "
        "COUNT(*) FILTER (WHERE downgraded), COUNT(*) FILTER (WHERE fell_back), "
        "SUM(shadow)::bigint, SUM(cf)::bigint, SUM(saved)::bigint "
        "FROM per_request GROUP BY grp"
    )
    for name, column in (("team", "team"), ("service", "service"))
}
SHADOW_SAVINGS = (
    f"WITH r AS ({SAVINGS_ROWS.format(column='NULL::text')}) "  # noqa: S608
    "SELECT shadow_rule, COUNT(DISTINCT req), SUM(cost_nanos)::bigint, SUM(shadow_cost)::bigint "
    'FROM r WHERE shadow_rule IS NOT NULL GROUP BY shadow_rule ORDER BY shadow_rule COLLATE "C"'
)

BLOCKED = (
    "SELECT blocked_by, COUNT(*), SUM(would_cost_nanos)::bigint, "  # noqa: S608
    f"COUNT(*) FILTER (WHERE {told_to_retry_sql()}) FROM ledger "
    "WHERE ts >= $1 AND ts < $2 AND blocked_by IS NOT NULL GROUP BY blocked_by"
)
SHADOW_HITS = (
    "SELECT hit, COUNT(*), SUM(cost_nanos)::bigint FROM ledger, "
    "jsonb_array_elements_text(shadow_blocks::jsonb) AS hit "
    "WHERE ts >= $1 AND ts < $2 AND shadow_blocks != '[]' GROUP BY hit"
)
OVERRUNS = (
    "SELECT over, COUNT(*), SUM(cost_nanos)::bigint FROM ledger, "
    "jsonb_array_elements_text(settled_above::jsonb) AS over "
    "WHERE ts >= $1 AND ts < $2 AND settled_above != '[]' GROUP BY over"
)
MARKED = (
    f"SELECT {COLUMNS} FROM ledger "  # noqa: S608
    "WHERE ts >= $1 AND ts < $2 AND (blocked_by IS NOT NULL OR settled_above != '[]') "
    "ORDER BY ts, id"
)
RECENT_OUTPUTS = (
    "WITH r AS (SELECT key_id, COALESCE(routed_model, requested_model) AS model, "
    "output_tokens, ts, request_id FROM ledger "
    "WHERE ts >= $1 AND ts < $2 AND blocked_by IS NULL AND status < 400 "
    "AND COALESCE(routed_model, requested_model) = ANY($3::text[])) "
    "SELECT key_id, model, output_tokens, n FROM (SELECT key_id, model, output_tokens, "
    "ROW_NUMBER() OVER (PARTITION BY key_id, model ORDER BY ts DESC, request_id DESC) AS n "
    "FROM r WHERE key_id = ANY($4::text[])) AS per_key WHERE n <= $5 "
    "UNION ALL "
    "SELECT NULL, model, output_tokens, n FROM (SELECT model, output_tokens, "
    "ROW_NUMBER() OVER (PARTITION BY model ORDER BY ts DESC, request_id DESC) AS n "
    "FROM r) AS per_model WHERE n <= $5 "
    "ORDER BY 1 NULLS FIRST, 2, 4"
)
RANGE = (
    f"SELECT {COLUMNS} FROM ledger "  # noqa: S608
    "WHERE ts >= $1 AND ts < $2 ORDER BY ts, id LIMIT $3"
)
KEY_LATEST = (
    f"SELECT {COLUMNS} FROM ledger "  # noqa: S608
    "WHERE key_id = $1 ORDER BY ts DESC, id DESC LIMIT $2"
)
ONE_ROW = (
    f"SELECT {COLUMNS} FROM ledger "  # noqa: S608
    "WHERE request_id = $1 AND ts = (SELECT ts FROM ledger_ids WHERE request_id = $1)"
)

__all__ = ["GroupBy"]
