"""`spendgate blocks`' distinct requests and estimate summed by name inside SQLite.

A month of refusals spread over many callers is hundreds of thousands of combinations
(`rollups.refusal_sources`); bringing each into Python cost more than finding them
(docs/benchmarks.md). Here the sources' rows are summed by name in SQL with the estimate of
`spendgate.domain.refusals.estimate_sums` written out: per row, its requests times the
token cost of the typical output (the caller's median on the model, else the model's,
else `DEFAULT_OUTPUT_TOKENS`; at most the row's ceiling) at its rate, rounded up per
request as `spendgate.money.token_cost`, plus its fixed part. A combination's estimate is
linear in its requests and fixed part, so summing its rows' estimates is summing its own.

The medians: a pair's kept median (`medians`) where it answers the sample span exactly,
else a walk, as `ledger.output_medians` (a pair the walk finds no sample for holds NULL:
the model's median applies, never a kept one that does not answer); they and every
model's go to scratch tables on the report's connection first, and the sources' rows to
a third (each source runs once; a view would run it for every column read from it).
Names are fixed (S608 waivers).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from spendgate.domain.refusals import DEFAULT_OUTPUT_TOKENS, RefusalGroup
from spendgate.money import TOKENS_PER_PRICE_UNIT
from spendgate.storage.sqlite import rollup_sql as job
from spendgate.storage.sqlite.rollups import Source

_COLUMNS = "name, key_id, model, ceiling, rate, requests, worst, fixed"
_KEPT_OK = (
    "(SELECT m.median FROM answered_medians AS m WHERE m.key_id = s.key_id "
    "AND m.model = s.model AND m.newest_ts < :until AND m.oldest_ts >= :sampled)"
)
# Per source: every (key, model) its rows price an output for, and whether the kept median
# does not answer for it.
_PAIRS = (
    f"SELECT s.key_id, s.model, {_KEPT_OK} FROM temp.estimate_rows AS s "  # noqa: S608
    "WHERE s.rate != 0 AND s.requests != 0 GROUP BY s.key_id, s.model"
)
TABLES = (
    f"CREATE TEMP TABLE IF NOT EXISTS estimate_rows ({_COLUMNS})",
    "CREATE TEMP TABLE IF NOT EXISTS estimate_pairs "
    "(key_id TEXT NOT NULL, model TEXT NOT NULL, median INTEGER, PRIMARY KEY (key_id, model))",
    "CREATE TEMP TABLE IF NOT EXISTS estimate_models (model TEXT PRIMARY KEY, median INTEGER)",
)
CLEAR = (
    "DELETE FROM temp.estimate_rows",
    "DELETE FROM temp.estimate_pairs",
    "DELETE FROM temp.estimate_models",
)
_ROWS = "INSERT INTO temp.estimate_rows {source}"
_FILL_PAIRS = "INSERT INTO temp.estimate_pairs VALUES (?, ?, ?)"
_FILL_MODELS = "INSERT INTO temp.estimate_models VALUES (?, ?)"

_TYPICAL = f"COALESCE(w.median, wm.median, {DEFAULT_OUTPUT_TOKENS})"
_OUTPUT = f"CASE WHEN s.ceiling > 0 THEN MIN({_TYPICAL}, s.ceiling) ELSE {_TYPICAL} END"
_UNIT = TOKENS_PER_PRICE_UNIT
# Outputs are never negative and prices never either: the product rounds up per request
# as `token_cost` does (0 tokens cost 0). The output is written once: one lookup a row.
_COST = (
    "CASE WHEN s.requests = 0 OR s.rate = 0 THEN 0 "
    f"ELSE s.requests * ((({_OUTPUT}) * s.rate + {_UNIT - 1}) / {_UNIT}) END"
)
ESTIMATE = (
    f"SELECT s.name, SUM(s.requests), SUM(s.worst), SUM(s.fixed) + SUM({_COST}) "  # noqa: S608
    "FROM temp.estimate_rows AS s "
    "LEFT JOIN temp.estimate_pairs AS w ON w.key_id = s.key_id AND w.model = s.model "
    "LEFT JOIN temp.estimate_models AS wm ON wm.model = s.model GROUP BY s.name"
)

Walk = Callable[[list[tuple[str, str]], list[str]], dict[tuple[str | None, str], int]]


def estimate(
    conn: sqlite3.Connection,
    sources: list[Source],
    sampled_ms: int,
    until_ms: int,
    walk: Walk,
) -> dict[str, RefusalGroup]:
    """Per name, the figures of `estimate_sums` over the rows of ``sources``; ``walk``
    gives the medians of the pairs and models it is asked for (`ledger.walked_medians`).
    Inside the read transaction that found ``sources``."""
    span = {"sampled": sampled_ms, "until": until_ms}
    mark = int(conn.execute(job.MARK).fetchone()[0])
    past = set(conn.execute(_PAST, (mark, sampled_ms, until_ms)).fetchall())
    for statement in (*TABLES, *CLEAR):
        conn.execute(statement)
    for sql, params in sources:  # each source once, into the scratch table
        conn.execute(_ROWS.format(source=sql), params)
    typical: dict[tuple[str, str], int | None] = {}
    walked: list[tuple[str, str]] = []
    for key_id, model, kept in conn.execute(_PAIRS, span):
        typical[(key_id, model)] = kept
        if kept is None or (key_id, model) in past:
            walked.append((key_id, model))
    models = sorted({model for _, model in typical})
    found = walk(walked, models)
    for pair in walked:  # a walk without a sample is None: the model's median, or the default
        typical[pair] = found.get(pair)
    conn.executemany(_FILL_PAIRS, ((k, m, median) for (k, m), median in typical.items()))
    conn.executemany(_FILL_MODELS, ((m, found.get((None, m))) for m in models))
    sums = conn.execute(ESTIMATE, span).fetchall()
    for statement in CLEAR:
        conn.execute(statement)
    return {
        name: RefusalGroup(name, 0, requests, 0, worst, estimated)
        for name, requests, worst, estimated in sorted(sums)
        if requests
    }


_PAST = (
    "SELECT DISTINCT key_id, COALESCE(routed_model, requested_model) FROM ledger NOT INDEXED "
    "WHERE id > ? AND blocked_by IS NULL AND status < 400 AND ts >= ? AND ts < ?"
)
