"""Savings, refusals and the estimate's samples on PostgreSQL without scanning the period
(migration 0005). Names are fixed here, never input (hence the S608 waivers).

**Savings.** ``savings_hourly`` and ``shadow_hourly`` sum, per hour, every row not refused
as if it were a request of its own; they are kept by the statement that inserts ledger rows
(`ROLLUPS_INSERTED`). A report adds the rollups of its whole hours and the rows of its edges,
then takes back what the requests of several rows in the period (a request and its
fallback attempts: each such request has a row with ``attempt > 0``) counted more than
once: for each, its rows less one, and per routing kind, fallback and shadow rule its rows
of that kind less one where it has any. Those rows are found from the period's answered
attempts (an index of their own), so the raw part is the attempts and their first rows,
not the period.

**Refusals.** The distinct refused requests per `spendgate.domain.refusals.RefusalCombo`
over the period's refused rows (the ``ledger_blocked`` index), repeats found with window
functions in the order of `spendgate.domain.refusals.repeats`.

**Samples.** The newest answered outputs per (key, model) and per model: one walk down an
index each, ``LIMIT`` rows, all in one statement (``LATERAL``).
"""

from __future__ import annotations

from spendgate.domain.refusals import RETRY_WINDOW
from spendgate.storage.postgres import blocks_sql, marks_sql, refusal_sql

_COUNTERFACTUAL = (
    "CASE WHEN baseline_cost_nanos IS NULL OR unreconciled THEN cost_nanos"
    " ELSE baseline_cost_nanos END"
)
_SHADOW_COST = (
    "CASE WHEN shadow_cost_nanos IS NULL OR unreconciled THEN cost_nanos ELSE shadow_cost_nanos END"
)
# The request a row belongs to (`spendgate.domain.savings.request_of`).
_REQUEST = (
    "CASE WHEN attempt > 0 AND right(request_id, length(attempt::text) + 1) = '-' || attempt"
    " THEN left(request_id, -(length(attempt::text) + 1)) ELSE request_id END"
)
_SAVINGS_SUMS = (
    "answered, cost_nanos, counterfactual_nanos, aliased, rewritten, downgraded, fell_back, "
    "shadow_cost_nanos"
)
# A row's share of each sum, as savings_hourly counts it.
_ROW_SAVINGS = (
    f"1, cost_nanos, {_COUNTERFACTUAL}, (route_kind IS NOT DISTINCT FROM 'alias')::int, "
    "(route_kind IS NOT DISTINCT FROM 'rewrite')::int, "
    "(route_kind IS NOT DISTINCT FROM 'downgrade')::int, "
    f"(attempt > 0 AND status < 400)::int, {_SHADOW_COST}"
)

# Added to the statement that inserts rows, after ledger_hourly's: the rows of ``inserted``.
_SAVINGS_INSERTED = (
    f"saved AS (INSERT INTO savings_hourly (hour_ms, team, service, {_SAVINGS_SUMS}) "  # noqa: S608
    "SELECT ts - ts % 3600000, team, service, COUNT(*), SUM(cost_nanos), "
    f"SUM({_COUNTERFACTUAL}), COUNT(*) FILTER (WHERE route_kind = 'alias'), "
    "COUNT(*) FILTER (WHERE route_kind = 'rewrite'), "
    "COUNT(*) FILTER (WHERE route_kind = 'downgrade'), "
    f"COUNT(*) FILTER (WHERE attempt > 0 AND status < 400), SUM({_SHADOW_COST}) "
    "FROM inserted WHERE blocked_by IS NULL GROUP BY 1, 2, 3 "
    'ORDER BY 1, team COLLATE "C", service COLLATE "C" '
    "ON CONFLICT (hour_ms, team, service) DO UPDATE SET "
    + ", ".join(
        f"{name} = savings_hourly.{name} + excluded.{name}" for name in _SAVINGS_SUMS.split(", ")
    )
    + "), shadowed AS (INSERT INTO shadow_hourly "  # noqa: S608
    "SELECT ts - ts % 3600000, shadow_rule, COUNT(*), SUM(cost_nanos), "
    f"SUM({_SHADOW_COST}) FROM inserted "
    "WHERE blocked_by IS NULL AND shadow_rule IS NOT NULL GROUP BY 1, 2 "
    'ORDER BY 1, shadow_rule COLLATE "C" ON CONFLICT (hour_ms, rule) DO UPDATE SET '
    "answered = shadow_hourly.answered + excluded.answered, "
    "cost_nanos = shadow_hourly.cost_nanos + excluded.cost_nanos, "
    "shadow_cost_nanos = shadow_hourly.shadow_cost_nanos + excluded.shadow_cost_nanos)"
)

# $1, $2: the period; $3, $4: its whole hours ([$4, $4) when none).
_EDGES = "((ts >= $1 AND ts < $3) OR (ts >= $4 AND ts < $2))"
# The rows of the period's requests that may hold several rows, with their request: the
# rows with attempt > 0 and the first rows copied beside them (``fallback_rows``, 0006),
# and from the ledger the first rows not copied (written after their attempts). {rows}:
# a condition on the rows (the shadow rules' correction counts only rows with a rule).
_SEVERAL = (
    "several AS (SELECT {column} AS grp, request AS req, route_kind, attempt, status, "
    "shadow_rule FROM fallback_rows WHERE ts >= $1 AND ts < $2 AND answered AND {rows} "
    "UNION ALL SELECT {column}, request_id, route_kind, attempt, status, shadow_rule "
    "FROM ledger WHERE ts >= $1 AND ts < $2 AND attempt = 0 AND blocked_by IS NULL "
    "AND {rows} AND request_id = ANY(ARRAY(SELECT a.request FROM fallback_rows AS a "
    "WHERE a.ts >= $1 AND a.ts < $2 AND a.attempt > 0 AND a.answered AND {rows} AND NOT EXISTS "
    "(SELECT 1 FROM fallback_rows AS f WHERE f.request_id = a.request "
    "AND f.ts >= $1 AND f.ts < $2))))"
)
_FALLBACK_COLUMNS = "answered, status, team, service, route_kind, shadow_rule"
_FIRST_OF = (
    "SELECT l.request_id, l.ts, l.request_id, 0, l.blocked_by IS NULL, l.status, l.team, "
    "l.service, l.route_kind, l.shadow_rule "
)
# Added to the statement that inserts rows: its rows with attempt > 0, and the first rows
# of their requests (already in the ledger, found by request id, or in the same batch).
FALLBACKS_INSERTED = (
    "fallbacks AS (INSERT INTO fallback_rows (request_id, ts, request, attempt, "  # noqa: S608
    f"{_FALLBACK_COLUMNS}) SELECT DISTINCT ON (request_id) * FROM ("
    f"SELECT request_id, ts, {_REQUEST} AS request, attempt, blocked_by IS NULL, status, "
    "team, service, route_kind, shadow_rule FROM inserted WHERE attempt > 0 "
    f"UNION ALL {_FIRST_OF}FROM (SELECT DISTINCT {_REQUEST} AS request FROM inserted "
    "WHERE attempt > 0) AS a JOIN ledger_ids AS d ON d.request_id = a.request "
    "JOIN ledger AS l ON l.request_id = a.request AND l.ts = d.ts WHERE l.attempt = 0 "
    f"UNION ALL {_FIRST_OF}FROM inserted AS l WHERE l.attempt = 0 AND l.request_id IN "
    f"(SELECT {_REQUEST} FROM inserted WHERE attempt > 0)) AS found "
    "ORDER BY request_id ON CONFLICT (request_id) DO NOTHING)"
)


# Everything the statement that inserts ledger rows adds besides ledger_hourly (a CTE
# named ``inserted`` returning the rows): savings, fallback rows, block sums, refusals
# left to the roll-up job, each caller's newest exhausted refusal.
ROLLUPS_INSERTED = ", ".join(
    (
        _SAVINGS_INSERTED,
        FALLBACKS_INSERTED,
        blocks_sql.BLOCKS_INSERTED,
        refusal_sql.PENDING_INSERTED,
        marks_sql.LATEST_INSERTED,
    )
)


def _less_one(condition: str) -> str:
    """What counting each row of a request as a request added, for rows of ``condition``."""
    return f"COUNT(*) FILTER (WHERE {condition}) - (COUNT(*) FILTER (WHERE {condition}) > 0)::int"


_ALIASED = _less_one("route_kind = 'alias'")
_REWRITTEN = _less_one("route_kind = 'rewrite'")
_DOWNGRADED = _less_one("route_kind = 'downgrade'")
_FELL_BACK = _less_one("attempt > 0 AND status < 400")
SAVINGS = {
    name: (
        f"WITH {_SEVERAL.format(column=column, rows='TRUE')}, "  # noqa: S608
        f"parts AS (SELECT {column} AS grp, {_SAVINGS_SUMS} FROM savings_hourly "
        "WHERE hour_ms >= $3 AND hour_ms < $4 "
        f"UNION ALL SELECT {column}, {_ROW_SAVINGS} FROM ledger "
        f"WHERE {_EDGES} AND blocked_by IS NULL "
        "UNION ALL SELECT grp, -(COUNT(*) - 1), 0, 0, "
        f"-({_ALIASED}), -({_REWRITTEN}), -({_DOWNGRADED}), -({_FELL_BACK}), 0 "
        "FROM several GROUP BY grp, req HAVING COUNT(*) > 1) "
        "SELECT grp, SUM(answered)::bigint, SUM(cost_nanos)::bigint, "
        "SUM(counterfactual_nanos)::bigint, SUM(aliased)::bigint, SUM(rewritten)::bigint, "
        "SUM(downgraded)::bigint, SUM(fell_back)::bigint, SUM(shadow_cost_nanos)::bigint, "
        "SUM(counterfactual_nanos)::bigint, SUM(cost_nanos - shadow_cost_nanos)::bigint "
        "FROM parts GROUP BY grp HAVING SUM(answered) > 0"
    )
    for name, column in (("team", "team"), ("service", "service"))
}
SHADOW_SAVINGS = (
    f"WITH {_SEVERAL.format(column='NULL::text', rows='shadow_rule IS NOT NULL')}, "  # noqa: S608
    "parts AS (SELECT rule, answered, cost_nanos, shadow_cost_nanos FROM shadow_hourly "
    "WHERE hour_ms >= $3 AND hour_ms < $4 "
    f"UNION ALL SELECT shadow_rule, 1, cost_nanos, {_SHADOW_COST} FROM ledger "
    f"WHERE {_EDGES} AND blocked_by IS NULL AND shadow_rule IS NOT NULL "
    "UNION ALL SELECT shadow_rule, -(COUNT(*) - 1), 0, 0 FROM several "
    "WHERE shadow_rule IS NOT NULL GROUP BY shadow_rule, req HAVING COUNT(*) > 1) "
    "SELECT rule, SUM(answered)::bigint, SUM(cost_nanos)::bigint, "
    'SUM(shadow_cost_nanos)::bigint FROM parts GROUP BY rule ORDER BY rule COLLATE "C"'
)

_WINDOW_MS = int(RETRY_WINDOW.total_seconds() * 1000)
_ORDER = 'ts, retry_count, attempt, request_id COLLATE "C"'
# The distinct refused requests of [$1, $2) per combination (`RefusalCombo`'s fields).
REFUSALS = (
    "WITH r AS (SELECT blocked_by, key_id, COALESCE(routed_model, requested_model) AS model, "  # noqa: S608
    "would_ceiling, would_output_rate, would_cost_nanos, "
    "CASE WHEN would_output_rate = 0 AND would_input_nanos = 0 THEN would_cost_nanos "
    "ELSE would_input_nanos END AS fixed, retry_count, ts, fingerprint, "
    f"row_number() OVER (PARTITION BY {_REQUEST} ORDER BY {_ORDER}) AS nth, "
    f"lag(ts) OVER (PARTITION BY key_id, fingerprint ORDER BY {_ORDER}) AS previous "
    "FROM ledger WHERE ts >= $1 AND ts < $2 AND blocked_by IS NOT NULL) "
    "SELECT blocked_by, key_id, model, would_ceiling, would_output_rate, COUNT(*), "
    "SUM(would_cost_nanos)::bigint, SUM(fixed)::bigint FROM r "
    "WHERE retry_count = 0 AND nth = 1 AND (fingerprint IS NULL OR previous IS NULL "
    f"OR ts - previous > {_WINDOW_MS}) GROUP BY 1, 2, 3, 4, 5"
)

# $1, $2: keys and models of the pairs; $3: the models; $4, $5: the span; $6: the limit.
_ANSWERED = (
    "blocked_by IS NULL AND status < 400 AND ts >= $4 AND ts < $5 "
    "ORDER BY ts DESC, request_id DESC LIMIT $6"
)
RECENT_OUTPUTS = (
    "SELECT p.key_id, p.model, o.output_tokens, o.ts, o.request_id "  # noqa: S608
    "FROM unnest($1::text[], $2::text[]) AS p(key_id, model) CROSS JOIN LATERAL "
    "(SELECT output_tokens, ts, request_id FROM ledger WHERE key_id = p.key_id "
    f"AND COALESCE(routed_model, requested_model) = p.model AND {_ANSWERED}) AS o "
    "UNION ALL SELECT NULL, m.model, o.output_tokens, o.ts, o.request_id "
    "FROM unnest($3::text[]) AS m(model) CROSS JOIN LATERAL "
    "(SELECT output_tokens, ts, request_id FROM ledger "
    f"WHERE COALESCE(routed_model, requested_model) = m.model AND {_ANSWERED}) AS o "
    "ORDER BY 1 NULLS FIRST, 2, 4 DESC, 5 DESC"
)

# The lower median of each (percentile_disc(0.5): the ceil(n/2)-th smallest, as
# `spendgate.domain.refusals.median`'s (n-1)//2-th from 0).
MEDIANS = (
    "SELECT p.key_id, p.model, (SELECT percentile_disc(0.5) WITHIN GROUP "  # noqa: S608
    "(ORDER BY output_tokens) FROM (SELECT output_tokens FROM ledger WHERE key_id = p.key_id "
    f"AND COALESCE(routed_model, requested_model) = p.model AND {_ANSWERED}) AS o) "
    "FROM unnest($1::text[], $2::text[]) AS p(key_id, model) "
    "UNION ALL SELECT NULL, m.model, (SELECT percentile_disc(0.5) WITHIN GROUP "
    "(ORDER BY output_tokens) FROM (SELECT output_tokens FROM ledger "
    f"WHERE COALESCE(routed_model, requested_model) = m.model AND {_ANSWERED}) AS o) "
    "FROM unnest($3::text[]) AS m(model)"
)
