"""Refused requests rolled up per hour (migration 0014): the statements of the roll-up
job's refusal step and of the `spendgate blocks` report's read.

``refusals_hourly`` holds, per hour and `spendgate.domain.refusals.RefusalCombo`, the
distinct refused requests among the ledger rows up to the job's mark, where *distinct* is
`spendgate.domain.refusals.repeats` chained over every refused row up to the mark. That
chaining is not additive, but it is local: a refused row is a repeat when it is an SDK
retry, or when an earlier refused row (in the order ``(ts, retry_count, attempt,
request_id)``) is of the same request or has the same key and fingerprint at most
`RETRY_WINDOW` before it. So:

* the job adds the rows of its batch that are not repeats of any row up to the new mark,
  and takes back the rows up to the old mark that the batch's rows turned into repeats
  (a row written late, with an earlier time): only the rows of the same request or within
  the window after a new row can change, and only from distinct to repeat;
* a report takes the rollups of its whole hours, corrected for the rolled rows whose
  answer differs in the period: those within the window after its start (their earlier
  rows before the period do not count there) and those that rows past the mark make
  repeats; and it reads raw only the edge hours and the rows past the mark.

A request's rows share its arrival time (`pipeline/proxy.py`), so an earlier row of the
same request is never outside a period its row is in. Names are fixed here, never input
(hence the S608 waivers).
"""

from __future__ import annotations

from spendgate.domain.refusals import RETRY_WINDOW
from spendgate.storage.sqlite.refusal_days import DELTA_INSERT
from spendgate.storage.sqlite.rollup_sql import request_of

WINDOW_MS = int(RETRY_WINDOW.total_seconds() * 1000)
NO_LIMIT = 2**63 - 1  # every id; every time (as the earliest time counted)
NO_SINCE = -(2**63)

_COMBO = (
    "{r}.blocked_by, {r}.key_id, COALESCE({r}.routed_model, {r}.requested_model), "
    "{r}.would_ceiling, {r}.would_output_rate"
)
_FIXED = (
    "CASE WHEN {r}.would_output_rate = 0 AND {r}.would_input_nanos = 0 "
    "THEN {r}.would_cost_nanos ELSE {r}.would_input_nanos END"
)
_HOUR = "{r}.ts - ((({r}.ts % 3600000) + 3600000) % 3600000)"


def _of_request(p: str, r: str) -> str:
    """Row ``p`` is of row ``r``'s request (found by the request id's unique index)."""
    base = request_of(r)
    return (
        f"(({p}.request_id = {base} AND ({p}.attempt = 0 OR "
        f"substr({p}.request_id, -length({p}.attempt) - 1) != '-' || {p}.attempt)) "
        f"OR ({p}.request_id > {base} || '-' AND {p}.request_id < {base} || '.' "
        f"AND {p}.attempt > 0 AND {p}.request_id = {base} || '-' || {p}.attempt))"
    )


def _before(p: str, r: str) -> str:
    """``p`` sorts before ``r`` (``+`` keeps SQLite from walking a time index for it)."""
    return (
        f"(+{p}.ts, {p}.retry_count, {p}.attempt, {p}.request_id) "
        f"< ({r}.ts, {r}.retry_count, {r}.attempt, {r}.request_id)"
    )


def repeat(r: str, limit: str, since: str) -> str:
    """Whether refused row ``r`` repeats an earlier refused row among those with an id up
    to ``limit`` and a time from ``since`` on (SQL expressions)."""
    return (
        f"({r}.retry_count > 0 OR EXISTS (SELECT 1 FROM ledger AS p WHERE "  # noqa: S608
        f"{_of_request('p', r)} AND p.blocked_by IS NOT NULL AND p.id <= {limit} "
        f"AND +p.ts >= {since} AND {_before('p', r)}) "
        f"OR ({r}.fingerprint IS NOT NULL AND EXISTS (SELECT 1 FROM ledger AS p "
        "INDEXED BY ledger_refused_fp WHERE p.blocked_by IS NOT NULL "
        f"AND p.fingerprint IS NOT NULL AND p.key_id = {r}.key_id "
        f"AND p.fingerprint = {r}.fingerprint AND p.ts >= MAX({r}.ts - {WINDOW_MS}, {since}) "
        f"AND p.ts <= {r}.ts AND p.id <= {limit} AND {_before('p', r)})))"
    )


def _successors(a_where: str) -> str:
    """The ids of refused rows that a refused row ``a`` matching ``a_where`` could make
    repeats: rows of its request, rows of its key and fingerprint within the window after."""
    return (
        "SELECT b.id FROM ledger AS a NOT INDEXED, ledger AS b INDEXED BY ledger_refused_fp "  # noqa: S608
        f"WHERE {a_where} AND a.blocked_by IS NOT NULL AND a.fingerprint IS NOT NULL "
        "AND b.blocked_by IS NOT NULL AND b.fingerprint IS NOT NULL "
        "AND b.key_id = a.key_id AND b.fingerprint = a.fingerprint "
        f"AND b.ts >= a.ts AND b.ts <= a.ts + {WINDOW_MS} "
        "UNION SELECT b.id FROM ledger AS a NOT INDEXED, ledger AS b "
        f"WHERE {a_where} AND a.blocked_by IS NOT NULL AND b.blocked_by IS NOT NULL "
        f"AND {_of_request('b', 'a')}"
    )


_ADDED = " GROUP BY 1, 2, 3, 4, 5, 6"
_ROW = f"{_HOUR}, {_COMBO}".format(r="r")

# The job, over the batch of ids (:mark, :last], into its scratch table of changes
# (`refusal_days.APPLY` applies them): first the rows it turns into repeats (distinct up
# to :mark, repeats up to :last), taken back; then its own distinct rows.
ROLL_TAKEN_BACK = (
    f"{DELTA_INSERT}SELECT {_ROW}, -COUNT(*), -SUM(r.would_cost_nanos), "  # noqa: S608
    f"-SUM({_FIXED.format(r='r')}) FROM ledger AS r WHERE r.id IN "
    f"({_successors('a.id > :mark AND a.id <= :last')}) AND r.id <= :mark "
    f"AND NOT {repeat('r', ':mark', str(NO_SINCE))} AND {repeat('r', ':last', str(NO_SINCE))}"
    f"{_ADDED}"
)
ROLL_NEW = (
    f"{DELTA_INSERT}SELECT {_ROW}, COUNT(*), SUM(r.would_cost_nanos), "  # noqa: S608
    f"SUM({_FIXED.format(r='r')}) FROM ledger AS r NOT INDEXED "
    "WHERE r.id > :mark AND r.id <= :last AND r.blocked_by IS NOT NULL "
    f"AND NOT {repeat('r', ':last', str(NO_SINCE))}{_ADDED}"
)

# The report over [:since, :until), whole hours [:first, :end), the mark :mark.
_SUMS = "SUM(requests), SUM(worst_case_nanos), SUM(fixed_nanos)"
ROLLED = (
    f"SELECT name, key_id, model, ceiling, rate, {_SUMS} FROM refusals_hourly "  # noqa: S608
    "WHERE hour >= :first AND hour < :end GROUP BY 1, 2, 3, 4, 5"
)
_DISTINCT_IN_PERIOD = f"NOT {repeat('r', str(NO_LIMIT), ':since')}"
_RAW_SELECT = (
    f"SELECT {_COMBO.format(r='r')}, COUNT(*), SUM(r.would_cost_nanos), "  # noqa: S608
    f"SUM({_FIXED.format(r='r')}) FROM ledger AS r "
)
# Rows read raw over [:low, :high) (edge hours, or a period of no whole hour).
RAW = (
    f"{_RAW_SELECT}INDEXED BY ledger_blocked WHERE r.blocked_by IS NOT NULL "
    f"AND r.ts >= :low AND r.ts < :high AND {_DISTINCT_IN_PERIOD} GROUP BY 1, 2, 3, 4, 5"
)
# Rows of the whole hours past the mark.
PAST = (
    f"{_RAW_SELECT}NOT INDEXED WHERE r.id > :mark AND r.blocked_by IS NOT NULL "
    f"AND r.ts >= :first AND r.ts < :end AND {_DISTINCT_IN_PERIOD} GROUP BY 1, 2, 3, 4, 5"
)
# Rolled rows whose answer differs in the period: + where distinct only in the period
# (an earlier row before it), - where distinct only in the rollups (an earlier row past
# the mark).
_CHANGE = f"(({_DISTINCT_IN_PERIOD}) - (NOT {repeat('r', ':mark', str(NO_SINCE))}))"
CORRECTION = (
    f"SELECT {_COMBO.format(r='r')}, SUM({_CHANGE}), "  # noqa: S608
    f"SUM({_CHANGE} * r.would_cost_nanos), SUM({_CHANGE} * {_FIXED.format(r='r')}) "
    "FROM ledger AS r WHERE r.id IN (SELECT id FROM ledger INDEXED BY ledger_blocked "
    f"WHERE blocked_by IS NOT NULL AND ts >= :first AND ts < MIN(:end, :since + {WINDOW_MS}) "
    f"UNION {_successors('a.id > :mark AND a.ts >= :since AND a.ts < :end')}) "
    "AND r.id <= :mark AND r.ts >= :first AND r.ts < :end GROUP BY 1, 2, 3, 4, 5"
)
