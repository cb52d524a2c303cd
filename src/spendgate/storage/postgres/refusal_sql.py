"""The distinct refused requests on PostgreSQL from hourly rollups (migration 0006): the
statements of the roll-up job and of the report (`refusal_rollups`, `spans`).

Whether a refused row is a repeat (`spendgate.domain.refusals.repeats`) depends only on the
refused rows of its request (which share its time: `pipeline/proxy.py` stamps a request's
rows with its arrival) and those of its key and fingerprint within `RETRY_WINDOW` before
it. So the rows of ``[low, high)`` are told apart by the window functions of `REFUSALS`
over the refused rows of ``[low - window, high)``, and an hour's figures change only when a
refused row is written in it or within the window before it. Names are fixed here, never
input (hence the S608 waivers).
"""

from __future__ import annotations

from spendgate.domain.refusals import RETRY_WINDOW

WINDOW_MS = int(RETRY_WINDOW.total_seconds() * 1000)

_REQUEST = (
    "CASE WHEN attempt > 0 AND right(request_id, length(attempt::text) + 1) = '-' || attempt"
    " THEN left(request_id, -(length(attempt::text) + 1)) ELSE request_id END"
)
_ORDER = 'ts, retry_count, attempt, request_id COLLATE "C"'
_FIXED = (
    "CASE WHEN would_output_rate = 0 AND would_input_nanos = 0 THEN would_cost_nanos "
    "ELSE would_input_nanos END"
)
# The refused rows of ranges ($1, $2, $3: arrays of scan start, start, end; the scans do
# not overlap), with whether each is counted (inside [start, end)) and a repeat.
_DISTINCT = (
    "WITH g AS (SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) "  # noqa: S608
    "AS g(scan_low, low, high)), "
    "l AS (SELECT x.*, x.ts >= g.low AS counted FROM g CROSS JOIN LATERAL "
    "(SELECT request_id, attempt, ts, retry_count, blocked_by, key_id, routed_model, "
    "requested_model, would_ceiling, would_output_rate, would_cost_nanos, would_input_nanos, "
    "fingerprint FROM ledger "
    "WHERE blocked_by IS NOT NULL AND ts >= g.scan_low AND ts < g.high) AS x), "
    "r AS (SELECT ts - ts % 3600000 AS hour_ms, blocked_by, key_id, "
    "COALESCE(routed_model, requested_model) AS model, would_ceiling, would_output_rate, "
    f"would_cost_nanos, {_FIXED} AS fixed, counted, retry_count, ts, fingerprint, "
    f"row_number() OVER (PARTITION BY {_REQUEST} ORDER BY {_ORDER}) AS nth, "
    f"lag(ts) OVER (PARTITION BY key_id, fingerprint ORDER BY {_ORDER}) AS previous FROM l), "
    "d AS (SELECT * FROM r WHERE counted AND retry_count = 0 AND nth = 1 "
    f"AND (fingerprint IS NULL OR previous IS NULL OR ts - previous > {WINDOW_MS})) "
)
_SUMS = "COUNT(*), SUM(would_cost_nanos)::bigint, SUM(fixed)::bigint"
# The report's raw part: per combination.
RAW = (
    f"{_DISTINCT}SELECT blocked_by, key_id, model, would_ceiling, would_output_rate, "  # noqa: S608
    f"{_SUMS} FROM d GROUP BY 1, 2, 3, 4, 5"
)
# The report's rolled part ($1, $2: arrays of range starts and ends).
ROLLED = (
    "SELECT name, key_id, model, ceiling, rate, SUM(requests)::bigint, "
    "SUM(worst_case_nanos)::bigint, SUM(fixed_nanos)::bigint "
    "FROM unnest($1::bigint[], $2::bigint[]) AS g(low, high) "
    "JOIN refusals_hourly ON hour_ms >= g.low AND hour_ms < g.high GROUP BY 1, 2, 3, 4, 5"
)
# The pending rows' times in [$1, $2) (those that can change an hour there).
PENDING = "SELECT ts FROM refusals_pending WHERE ts >= $1 AND ts < $2"

# The job: only one at a time (a transaction-scoped advisory lock, tried).
TAKE = (
    "DELETE FROM refusals_pending WHERE id = ANY(ARRAY("
    "SELECT id FROM refusals_pending ORDER BY id LIMIT $1)) RETURNING ts"
)
CLEAR_HOURS = "DELETE FROM refusals_hourly WHERE hour_ms = ANY($1::bigint[])"
# ($1..$3 as _DISTINCT: the scans of the hours to recompute, merged where they touch)
FILL_HOURS = (
    f"{_DISTINCT}INSERT INTO refusals_hourly SELECT hour_ms, blocked_by, key_id, model, "  # noqa: S608
    f"would_ceiling, would_output_rate, {_SUMS} FROM d GROUP BY 1, 2, 3, 4, 5, 6"
)

# Added to the statement that inserts ledger rows: each refused row waits for the job.
PENDING_INSERTED = (
    "pending AS (INSERT INTO refusals_pending (id, ts) "
    "SELECT id, ts FROM inserted WHERE blocked_by IS NOT NULL)"
)
