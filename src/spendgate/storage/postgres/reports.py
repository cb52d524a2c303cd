"""The ledger's report statements on PostgreSQL: the SQLite backend's, in PostgreSQL's
dialect (``COUNT(*) FILTER`` for sums of conditions, sums cast back to BIGINT, JSON
arrays expanded with ``jsonb_array_elements_text``). Each scans ``ts`` in ``[$1, $2)``,
which prunes the scan to the partitions of those months."""

from __future__ import annotations

from spendgate.storage.base import GroupBy
from spendgate.storage.sqlite.rows import GROUP_COLUMNS, LEDGER

COLUMNS = LEDGER.columns

USAGE = {
    group_by: (
        f"SELECT {column}, COUNT(*) FILTER (WHERE blocked_by IS NULL), "  # noqa: S608
        "SUM(input_tokens)::bigint, SUM(cached_input_tokens)::bigint, "
        "SUM(cache_write_tokens)::bigint, SUM(output_tokens)::bigint, "
        "SUM(reasoning_tokens)::bigint, SUM(cost_nanos)::bigint, "
        "COUNT(*) FILTER (WHERE status >= 400 AND blocked_by IS NULL), "
        "COUNT(*) FILTER (WHERE usage_estimated), COUNT(*) FILTER (WHERE blocked_by IS NOT NULL), "
        "SUM(would_cost_nanos)::bigint, "
        "COUNT(*) FILTER (WHERE retry_count > 0 AND blocked_by IS NULL), "
        "COALESCE(SUM(cost_nanos) FILTER (WHERE retry_count > 0), 0)::bigint "
        "FROM ledger WHERE ts >= $1 AND ts < $2 "
        f'GROUP BY {column} ORDER BY SUM(cost_nanos) DESC, {column} IS NULL, {column} COLLATE "C"'
    )
    for group_by, column in GROUP_COLUMNS.items()
}

_SAVINGS_ROWS = (
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
SAVINGS = {
    name: (
        f"WITH r AS ({_SAVINGS_ROWS.format(column=column)}) "  # noqa: S608
        "SELECT grp, COUNT(DISTINCT req), SUM(cost_nanos)::bigint, SUM(counterfactual)::bigint, "
        "COUNT(DISTINCT CASE WHEN route_kind = 'alias' THEN req END), "
        "COUNT(DISTINCT CASE WHEN route_kind = 'rewrite' THEN req END), "
        "COUNT(DISTINCT CASE WHEN route_kind = 'downgrade' THEN req END), "
        "COUNT(DISTINCT CASE WHEN attempt > 0 AND status < 400 THEN req END), "
        "SUM(shadow_cost)::bigint, SUM(counterfactual)::bigint, "
        "SUM(cost_nanos - shadow_cost)::bigint "
        "FROM r GROUP BY grp"
    )
    for name, column in (("team", "team"), ("service", "service"))
}
SHADOW_SAVINGS = (
    f"WITH r AS ({_SAVINGS_ROWS.format(column='NULL::text')}) "  # noqa: S608
    "SELECT shadow_rule, COUNT(DISTINCT req), SUM(cost_nanos)::bigint, SUM(shadow_cost)::bigint "
    'FROM r WHERE shadow_rule IS NOT NULL GROUP BY shadow_rule ORDER BY shadow_rule COLLATE "C"'
)

BLOCKED = (
    "SELECT blocked_by, COUNT(*), SUM(would_cost_nanos)::bigint, "
    "COUNT(*) FILTER (WHERE status = 429) FROM ledger "
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
