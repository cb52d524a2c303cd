"""The estimate's per-caller output medians kept by the roll-up job (migration 0016).

`spendgate blocks` prices each distinct refused request's output at its caller's median
output on that model: the lower median of the newest `RECENT_OUTPUTS` answered rows of
the (key, model) in the `SAMPLE_SPAN` before the period's end (`Ledger.output_medians`).
Walking an index for each of the thousands of pairs a month refused in was most of the
report (docs/benchmarks.md). ``answered_medians`` holds, per pair, the median of its newest
`RECENT_OUTPUTS` answered rows up to the job's mark, with how many there were and the
times of the oldest and newest. The job recomputes the pairs of its batch's answered rows
(a late row included), from the rows up to its new mark.

A report over ``[since, until)`` takes a pair's row when the kept samples are exactly the
ones it would walk: it asks for `RECENT_OUTPUTS`, the newest kept sample is before
``until`` (so no row up to the mark is at or after it), the oldest is at or after
``since`` (so none of them is cut, and a pair with fewer kept every row it had), and no
answered row of the pair is past the mark. Every other pair, the per-model medians and
pairs without a row are walked as before (`walk`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable

from spendgate.domain.refusals import RECENT_OUTPUTS, CallerModel, median

_ANSWERED = "blocked_by IS NULL AND status < 400"
_MODEL = "COALESCE(routed_model, requested_model)"

# The job, over the batch (:mark, :last]: the pairs its answered rows touched ...
TOUCHED = (
    f"SELECT DISTINCT key_id, {_MODEL} FROM ledger NOT INDEXED "  # noqa: S608
    f"WHERE id > ? AND id <= ? AND {_ANSWERED}"
)
# ... and, per pair, its newest answered rows up to :last, newest first.
_NEWEST_UPTO = (
    "SELECT output_tokens, ts FROM ledger INDEXED BY ledger_answered "  # noqa: S608
    f"WHERE key_id = ? AND {_MODEL} = ? AND {_ANSWERED} AND id <= ? "
    "ORDER BY ts DESC, request_id DESC LIMIT ?"
)
_KEEP = (
    "INSERT INTO answered_medians (key_id, model, median, samples, oldest_ts, newest_ts) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key_id, model) DO UPDATE SET "
    "median = excluded.median, samples = excluded.samples, "
    "oldest_ts = excluded.oldest_ts, newest_ts = excluded.newest_ts"
)

# A report: the pairs with answered rows past the mark (walked) ...
_PAST = (
    f"SELECT DISTINCT key_id, {_MODEL} FROM ledger NOT INDEXED "  # noqa: S608
    f"WHERE id > ? AND {_ANSWERED} AND ts >= ? AND ts < ?"
)
# ... and the kept medians usable over [since, until) of the pairs wanted (a JSON array).
_KEPT = (
    "SELECT m.key_id, m.model, m.median FROM json_each(?) AS w "
    "JOIN answered_medians AS m ON m.key_id = json_extract(w.value, '$[0]') "
    "AND m.model = json_extract(w.value, '$[1]') WHERE m.newest_ts < ? AND m.oldest_ts >= ?"
)


def keep(conn: sqlite3.Connection, mark: int, last: int) -> None:
    """The job's step over the ids ``(mark, last]`` (on the writer, in its transaction):
    recompute the kept median of every pair its answered rows belong to."""
    touched = conn.execute(TOUCHED, (mark, last)).fetchall()
    for key_id, model in touched:
        newest = conn.execute(_NEWEST_UPTO, (key_id, model, last, RECENT_OUTPUTS)).fetchall()
        if newest:  # answered rows are never deleted: a touched pair has one at least
            outputs = [output for output, _ in newest]
            conn.execute(
                _KEEP, (key_id, model, median(outputs), len(newest), newest[-1][1], newest[0][1])
            )


def kept(
    conn: sqlite3.Connection,
    pairs: Iterable[tuple[str, str]],
    mark: int,
    since_ms: int,
    until_ms: int,
) -> dict[CallerModel, int]:
    """The medians of ``pairs`` over ``[since_ms, until_ms)`` that the kept rows answer
    exactly (see the module); the other pairs are to be walked. Inside a read transaction
    with ``mark`` read in it."""
    past = set(conn.execute(_PAST, (mark, since_ms, until_ms)).fetchall())
    wanted = json.dumps([pair for pair in pairs if pair not in past])
    return {
        (key_id, model): value
        for key_id, model, value in conn.execute(_KEPT, (wanted, until_ms, since_ms))
    }
