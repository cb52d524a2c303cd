"""The statements of the roll-up job and of the reports' tails (rows past the mark): the
same contributions as migration 0011's backfill, over a range of ledger ids. Table and
column names are fixed here, never input (hence the S608 waivers)."""

from __future__ import annotations

from spendgate.domain.totals import GroupBy, told_to_retry_sql

DIMS = {
    GroupBy.TEAM: "team",
    GroupBy.SERVICE: "service",
    GroupBy.USER: "user",
    GroupBy.KEY: "key",
    GroupBy.MODEL: "model",
    GroupBy.ORG: "org",
    GroupBy.PROVIDER: "provider",
}


def request_of(a: str) -> str:
    """The id of the request a row belongs to (`spendgate.domain.savings.request_of`)."""
    return (
        f"(CASE WHEN {a}.attempt > 0 AND substr({a}.request_id, -length({a}.attempt) - 1)"
        f" = '-' || {a}.attempt THEN substr({a}.request_id, 1, length({a}.request_id)"
        f" - length({a}.attempt) - 1) ELSE {a}.request_id END)"
    )


def _seen(a: str) -> str:
    """A served row's mask: bit 0, an earlier served row of its request exists; bits 1-3,
    one with each routing kind; bit 4, a successful fallback; bit 5, the same shadow rule."""
    r = request_of(a)
    return (
        "SELECT (COUNT(o.id) > 0) + 2 * IFNULL(MAX(o.route_kind = 'alias'), 0)"  # noqa: S608
        " + 4 * IFNULL(MAX(o.route_kind = 'rewrite'), 0)"
        " + 8 * IFNULL(MAX(o.route_kind = 'downgrade'), 0)"
        " + 16 * IFNULL(MAX(o.attempt > 0 AND o.status < 400), 0)"
        f" + 32 * IFNULL(MAX(o.shadow_rule = {a}.shadow_rule), 0) FROM ledger AS o"
        f" WHERE o.id < {a}.id AND o.blocked_by IS NULL AND ((o.request_id = {r} AND"
        " (o.attempt = 0 OR substr(o.request_id, -length(o.attempt) - 1) != '-' || o.attempt))"
        f" OR (o.request_id > {r} || '-' AND o.request_id < {r} || '.' AND o.attempt > 0"
        f" AND o.request_id = {r} || '-' || o.attempt))"
    )


HOUR = "l.ts - (((l.ts % 3600000) + 3600000) % 3600000)"
_HOUR = HOUR
_COUNTERFACTUAL = (
    "CASE WHEN l.baseline_cost_nanos IS NULL OR l.unreconciled THEN l.cost_nanos"
    " ELSE l.baseline_cost_nanos END"
)
_SHADOW_COST = (
    "CASE WHEN l.shadow_cost_nanos IS NULL OR l.unreconciled THEN l.cost_nanos"
    " ELSE l.shadow_cost_nanos END"
)
USAGE_COLUMNS = {
    "requests": "l.blocked_by IS NULL",
    "input_tokens": "l.input_tokens",
    "cached_input_tokens": "l.cached_input_tokens",
    "cache_write_tokens": "l.cache_write_tokens",
    "output_tokens": "l.output_tokens",
    "reasoning_tokens": "l.reasoning_tokens",
    "cost_nanos": "l.cost_nanos",
    "errors": "l.blocked_by IS NULL AND l.status >= 400",
    "estimated": "l.usage_estimated",
    "blocked": "l.blocked_by IS NOT NULL",
    "blocked_would_cost_nanos": "l.would_cost_nanos",
    "retries": "l.blocked_by IS NULL AND l.retry_count > 0",
    "retry_cost_nanos": "CASE WHEN l.retry_count > 0 THEN l.cost_nanos ELSE 0 END",
    "s_requests": "l.blocked_by IS NULL AND NOT (f.seen & 1)",
    "s_cost_nanos": "CASE WHEN l.blocked_by IS NULL THEN l.cost_nanos ELSE 0 END",
    "s_counterfactual_nanos": f"CASE WHEN l.blocked_by IS NULL THEN {_COUNTERFACTUAL} ELSE 0 END",
    "s_aliased": "l.blocked_by IS NULL AND l.route_kind IS 'alias' AND NOT (f.seen & 2)",
    "s_rewritten": "l.blocked_by IS NULL AND l.route_kind IS 'rewrite' AND NOT (f.seen & 4)",
    "s_downgraded": "l.blocked_by IS NULL AND l.route_kind IS 'downgrade' AND NOT (f.seen & 8)",
    "s_fell_back": (
        "l.blocked_by IS NULL AND l.attempt > 0 AND l.status < 400 AND NOT (f.seen & 16)"
    ),
    "s_shadow_cost_nanos": f"CASE WHEN l.blocked_by IS NULL THEN {_SHADOW_COST} ELSE 0 END",
}
_GROUP = (
    "IFNULL(CASE d.dim WHEN 'team' THEN l.team WHEN 'service' THEN l.service"
    " WHEN 'user' THEN l.\"user\" WHEN 'key' THEN l.key_id WHEN 'model' THEN l.served_model"
    " WHEN 'org' THEN l.org ELSE l.provider END, 0)"
)
_DIM_ROWS = " UNION ALL ".join(f"SELECT '{dim}' AS dim" for dim in DIMS.values())

# The rows of one batch, ids in (?1, ?2]: the mask of each served row, once, into a scratch
# table on the writer's connection.
SEEN_TABLE = "CREATE TEMP TABLE IF NOT EXISTS rollup_seen (id INTEGER PRIMARY KEY, seen INTEGER)"
SEEN_CLEAR = "DELETE FROM temp.rollup_seen"
SEEN_FILL = (
    f"INSERT INTO temp.rollup_seen SELECT l.id, ({_seen('l')}) FROM ledger AS l "  # noqa: S608
    "WHERE l.id > ?1 AND l.id <= ?2 AND l.blocked_by IS NULL"
)
_sums = ", ".join(f"SUM(c{i})" for i in range(len(USAGE_COLUMNS)))
_named = ", ".join(f"{expr} AS c{i}" for i, expr in enumerate(USAGE_COLUMNS.values()))
_added = ", ".join(f"{name} = {name} + excluded.{name}" for name in USAGE_COLUMNS)
ROLL_USAGE = (
    f"INSERT INTO usage_hourly SELECT d.dim, l.hour, {_GROUP}, {_sums} "  # noqa: S608
    f"FROM (SELECT l.*, {_HOUR} AS hour, {_named} FROM ledger AS l "
    "LEFT JOIN temp.rollup_seen AS f ON f.id = l.id WHERE l.id > ?1 AND l.id <= ?2) AS l, "
    f"({_DIM_ROWS}) AS d GROUP BY 1, 2, 3 "
    f"ON CONFLICT (dim, hour, grp) DO UPDATE SET {_added}"
)
ROLL_BLOCKS = (
    "INSERT INTO blocks_hourly SELECT hour, name, SUM(blocked), SUM(would_cost), "  # noqa: S608
    "SUM(shadow_hits), SUM(shadow_cost), SUM(retryable), SUM(overruns), SUM(overrun_cost) FROM ("
    f"SELECT {_HOUR} AS hour, l.blocked_by AS name, 1 AS blocked, "
    "l.would_cost_nanos AS would_cost, 0 AS shadow_hits, 0 AS shadow_cost, "
    f"{told_to_retry_sql('l.')} AS retryable, 0 AS overruns, 0 AS overrun_cost FROM ledger AS l "
    "WHERE l.id > ?1 AND l.id <= ?2 AND l.blocked_by IS NOT NULL "
    f"UNION ALL SELECT {_HOUR}, hit.value, 0, 0, 1, l.cost_nanos, 0, 0, 0 "
    "FROM ledger AS l, json_each(l.shadow_blocks) AS hit "
    "WHERE l.id > ?1 AND l.id <= ?2 AND l.shadow_blocks != '[]' "
    f"UNION ALL SELECT {_HOUR}, over.value, 0, 0, 0, 0, 0, 1, l.cost_nanos "
    "FROM ledger AS l, json_each(l.settled_above) AS over "
    "WHERE l.id > ?1 AND l.id <= ?2 AND l.settled_above != '[]') "
    "GROUP BY hour, name ON CONFLICT (hour, name) DO UPDATE SET "
    "blocked = blocked + excluded.blocked, "
    "blocked_would_cost_nanos = blocked_would_cost_nanos + excluded.blocked_would_cost_nanos, "
    "shadow_hits = shadow_hits + excluded.shadow_hits, "
    "shadow_cost_nanos = shadow_cost_nanos + excluded.shadow_cost_nanos, "
    "retryable = retryable + excluded.retryable, overruns = overruns + excluded.overruns, "
    "overrun_cost_nanos = overrun_cost_nanos + excluded.overrun_cost_nanos"
)
ROLL_SHADOW = (
    f"INSERT INTO shadow_hourly SELECT {_HOUR}, l.shadow_rule, "  # noqa: S608
    f"SUM(NOT (f.seen & 32)), SUM(l.cost_nanos), SUM({_SHADOW_COST}) "
    "FROM ledger AS l JOIN temp.rollup_seen AS f ON f.id = l.id "
    "WHERE l.id > ?1 AND l.id <= ?2 AND l.shadow_rule IS NOT NULL GROUP BY 1, 2 "
    "ON CONFLICT (hour, rule) DO UPDATE SET requests = requests + excluded.requests, "
    "cost_nanos = cost_nanos + excluded.cost_nanos, "
    "shadow_cost_nanos = shadow_cost_nanos + excluded.shadow_cost_nanos"
)
MARK = "SELECT rolled_to FROM rollup_mark"
SET_MARK = "UPDATE rollup_mark SET rolled_to = ?"
LAST_ID = "SELECT IFNULL(MAX(id), 0) FROM ledger"

# ---------------------------------------------------------------------------- tails
# The rows past the mark inside the whole hours of a period: (since, until, mark).

# Savings of the rows past the mark, counting a request on its first served row as the
# rollups do (a request whose earlier attempt is rolled up already is not counted twice).
_TAIL_ROWS = (
    f"SELECT l.*, ({_seen('l')}) AS seen, {_COUNTERFACTUAL} AS counterfactual, "  # noqa: S608
    f"{_SHADOW_COST} AS shadow_cost FROM ledger AS l NOT INDEXED "
    "WHERE l.ts >= ? AND l.ts < ? AND l.id > ? AND l.blocked_by IS NULL"
)
TAIL_SAVINGS = {
    name: (
        f"SELECT {column}, SUM(NOT (seen & 1)), SUM(cost_nanos), SUM(counterfactual), "  # noqa: S608
        "SUM(route_kind IS 'alias' AND NOT (seen & 2)), "
        "SUM(route_kind IS 'rewrite' AND NOT (seen & 4)), "
        "SUM(route_kind IS 'downgrade' AND NOT (seen & 8)), "
        "SUM(attempt > 0 AND status < 400 AND NOT (seen & 16)), SUM(shadow_cost), "
        f"SUM(counterfactual), SUM(cost_nanos - shadow_cost) FROM ({_TAIL_ROWS}) GROUP BY 1"
    )
    for name, column in (("team", "team"), ("service", "service"))
}
TAIL_SHADOW = (
    "SELECT shadow_rule, SUM(NOT (seen & 32)), SUM(cost_nanos), SUM(shadow_cost) "  # noqa: S608
    f"FROM ({_TAIL_ROWS}) WHERE shadow_rule IS NOT NULL GROUP BY 1"
)
