"""Reports on PostgreSQL at 1 M and 10 M ledger rows: `usage` (by team, by key) and
`savings` (by team) over the last 30 days, through the backend's own code path.

    python -m benchmarks.postgres_reports [--url postgresql://root@127.0.0.1:5432/postgres]
        [--sizes 1000000,10000000] [--days 90] [--repeat 5]

A throwaway database (``sg_bench_<hex>``) is created on the server of ``--url`` and dropped
at the end. Rows are generated server-side (``generate_series``; the hourly rollup is added
in the same statement, as the backend's insert does), spread evenly over the last
``--days`` days across 500 keys (each of one user, one of 40 services, one of 25
teams), one row in ten routed
(a downgrade with a baseline cost), one in 97 a failure; the ledger's monthly partitions
and indexes are those of the migrations. Each size is loaded on top of the previous one,
then ANALYZEd; each report runs ``--repeat`` times and the median and the slowest are
printed (milliseconds, wall clock around the awaited call).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from spendgate.clock import ManualClock, to_ms
from spendgate.domain.refusals import RECENT_OUTPUTS, callers_and_models, refusal_groups
from spendgate.domain.savings import SavingsBy
from spendgate.domain.totals import GroupBy, UsageQuery
from spendgate.services.reports import blocks_report
from spendgate.storage.postgres import PostgresSettings, PostgresStorage, reports, rollup_sql
from spendgate.storage.postgres.ledger import ROLLUP_INSERTED
from spendgate.storage.postgres.partitions import month_of_ms, shift
from spendgate.storage.sqlite.rows import LEDGER

NOW = datetime(2026, 12, 1, tzinfo=UTC)
# The savings statement in the SQLite backend's form (one COUNT(DISTINCT ...) per count),
# timed beside the backend's per-request form.
_SAVINGS_DISTINCT = (
    "WITH r AS (" + reports.SAVINGS_ROWS.format(column="team") + ") "  # noqa: S608
    "SELECT grp, COUNT(DISTINCT req), SUM(cost_nanos)::bigint, SUM(counterfactual)::bigint, "
    "COUNT(DISTINCT CASE WHEN route_kind = 'alias' THEN req END), "
    "COUNT(DISTINCT CASE WHEN route_kind = 'rewrite' THEN req END), "
    "COUNT(DISTINCT CASE WHEN route_kind = 'downgrade' THEN req END), "
    "COUNT(DISTINCT CASE WHEN attempt > 0 AND status < 400 THEN req END), "
    "SUM(shadow_cost)::bigint, SUM(counterfactual)::bigint, "
    "SUM(cost_nanos - shadow_cost)::bigint FROM r GROUP BY grp"
)
# Usage by team straight from the ledger (no rollup), timed beside the backend's form.
_USAGE_RAW = (
    "SELECT team, COUNT(*) FILTER (WHERE blocked_by IS NULL), SUM(input_tokens)::bigint, "
    "SUM(output_tokens)::bigint, SUM(cost_nanos)::bigint, "
    "COUNT(*) FILTER (WHERE status >= 400 AND blocked_by IS NULL) "
    "FROM ledger WHERE ts >= $1 AND ts < $2 GROUP BY team ORDER BY SUM(cost_nanos) DESC"
)
CHUNK = 1_000_000

_GENERATE = """
WITH g AS (
    SELECT i, $3::bigint + ((i - $5::bigint) * $4::bigint / $6::bigint) AS ts,
        i % 50 = 1 AS attempt, i % 33 = 7 AS refused
    FROM generate_series($1::bigint, $2::bigint) AS i
), ids AS (
    INSERT INTO ledger_ids (request_id, ts)
    SELECT CASE WHEN attempt THEN 'req_' || (i - 1) || '-1' ELSE 'req_' || i END, ts FROM g
), inserted AS (
INSERT INTO ledger (
    request_id, ts, surface, key_id, "user", service, team, org, tags, requested_model,
    served_model, provider, input_tokens, cached_input_tokens, cache_write_tokens,
    output_tokens, reasoning_tokens, cost_nanos, status, latency_ms, ttfb_ms, streamed,
    client_disconnected, usage_estimated, route_kind, baseline_model, baseline_cost_nanos,
    attempt, blocked_by, would_cost_nanos, would_input_nanos, would_output_rate, would_ceiling,
    fingerprint, retry_count, shadow_rule, shadow_cost_nanos)
SELECT CASE WHEN attempt THEN 'req_' || (i - 1) || '-1' ELSE 'req_' || i END, ts,
    'openai.chat', 'key_' || (i % 500), 'user_' || (i % 500),
    'svc_' || (i % 500 % 40), 'team_' || (i % 500 % 25), 'acme', '[]',
    CASE WHEN i % 3 = 0 THEN 'gpt-4o' ELSE 'gpt-4o-mini' END, 'gpt-4o-mini', 'openai',
    1000 + i % 500, 0, 0, CASE WHEN refused THEN 0 ELSE 200 + i % 300 END, 0,
    CASE WHEN refused THEN 0 ELSE 1000 + (i % 5000) * 100 END,
    CASE WHEN refused THEN 429 WHEN i % 97 = 0 OR i % 50 = 0 THEN 503 ELSE 200 END,
    120.0, 30.0, i % 2 = 0, FALSE, FALSE,
    CASE WHEN i % 10 = 0 THEN 'downgrade' END, CASE WHEN i % 10 = 0 THEN 'gpt-4o' END,
    CASE WHEN i % 10 = 0 THEN 5000000 END,
    attempt::int, CASE WHEN refused THEN (ARRAY['team-daily', 'user-daily', 'rpm'])[i % 3 + 1] END,
    CASE WHEN refused THEN 3000000 + i % 1000 ELSE 0 END,
    CASE WHEN refused AND i % 10 != 0 THEN 5000 + i % 700 ELSE 0 END,
    CASE WHEN refused AND i % 10 != 0 THEN 600000000 * (1 + i % 3) ELSE 0 END,
    CASE WHEN refused THEN (ARRAY[0, 4096, 32000])[i % 3 + 1] ELSE 0 END,
    CASE WHEN refused THEN 'fp' || (i % 500) || '-' || (i / 500 % 3) END,
    CASE WHEN refused AND i % 5 = 0 THEN 1 ELSE 0 END,
    CASE WHEN i % 20 = 3 THEN 'try-mini' END, CASE WHEN i % 20 = 3 THEN 400 + i % 300 END
FROM g
RETURNING *
)
"""  # + the rollup of what was inserted, as the backend's own insert statement does


async def _blocks_before(conn: asyncpg.Connection[Any], since: datetime, until: datetime) -> object:
    """The blocks report's refusal figures as computed before 0005: the period's refused
    rows loaded and folded, the samples from a window over 30 days of rows."""
    low, high = to_ms(since), to_ms(until)
    found = await conn.fetch(reports.MARKED, low, high)
    refused = [r for r in (LEDGER.load(tuple(row)) for row in found) if r.blocked_by]
    pairs = callers_and_models(refused)
    samples: dict[Any, list[int]] = {}
    if pairs:
        models = sorted({model for _, model in pairs})
        keys = sorted({key for key, _ in pairs})
        params = (high - 30 * 86_400_000, high, models, keys, RECENT_OUTPUTS)
        for key, model, output, _ in await conn.fetch(reports.RECENT_OUTPUTS, *params):
            samples.setdefault((key, model), []).append(output)
    return refusal_groups(refused, samples)


async def timed(work: Callable[[], Awaitable[Any]], repeat: int) -> tuple[float, float]:
    await work()  # warm: plans, caches
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        await work()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times)


async def load(conn: asyncpg.Connection[Any], first: int, last: int, days: int) -> None:
    """Rows ``first..last``, spread evenly over the last ``days`` days."""
    span = days * 86_400_000
    start = to_ms(NOW) - span
    for low in range(first, last + 1, CHUNK):
        high = min(last, low + CHUNK - 1)
        began = time.perf_counter()
        await conn.execute(
            _GENERATE.rstrip() + f", {rollup_sql.ROLLUPS_INSERTED} {ROLLUP_INSERTED}",
            low,
            high,
            start,
            span,
            first,
            last - first + 1,
        )
        print(f"  loaded rows {low:,}..{high:,} in {time.perf_counter() - began:.1f} s", flush=True)


async def run(
    url: str, sizes: list[int], days: int, repeat: int, statement_timeout_s: float
) -> None:
    name = f"sg_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    db_url = url.rsplit("/", 1)[0] + "/" + name
    # A report may take longer than the gateway's default statement timeout here.
    settings = PostgresSettings(statement_timeout_s=statement_timeout_s)
    store = PostgresStorage(db_url, clock=ManualClock(NOW), settings=settings)
    try:
        await store.open()
        first = month_of_ms(to_ms(NOW - timedelta(days=days)))
        months = [shift(first, i) for i in range(days // 28 + 2)]
        await store.database.ensure_months(months)
        conn = await asyncpg.connect(db_url)
        shown = {
            key: await conn.fetchval(f"SHOW {key}")
            for key in (
                "server_version",
                "shared_buffers",
                "work_mem",
                "max_parallel_workers_per_gather",
            )
        }
        print("server:", shown)
        loaded = 0
        since, until = NOW - timedelta(days=30), NOW
        timings: dict[str, Callable[[], Awaitable[Any]]] = {
            "usage by team, 30 days": lambda: store.usage(UsageQuery(GroupBy.TEAM, since, until)),
            "  (from the ledger, no rollup)": lambda: conn.fetch(
                _USAGE_RAW, to_ms(since), to_ms(until)
            ),
            "usage by key, 30 days": lambda: store.usage(UsageQuery(GroupBy.KEY, since, until)),
            "savings by team, 30 days": lambda: store.savings(since, until, SavingsBy.TEAM),
            "  (per-request form, before 0005)": lambda: conn.fetch(
                reports.SAVINGS["team"], to_ms(since), to_ms(until)
            ),
            "  (COUNT DISTINCT form)": lambda: conn.fetch(
                _SAVINGS_DISTINCT, to_ms(since), to_ms(until)
            ),
            "blocks report, 30 days": lambda: blocks_report(store, ManualClock(NOW), period="30d"),
            "  (rows folded, before 0005)": lambda: _blocks_before(conn, since, until),
        }
        for size in sizes:
            await load(conn, loaded + 1, size, days)  # on top of the last size's rows
            loaded = size
            await conn.execute("ANALYZE")
            in_window = await conn.fetchval(
                "SELECT count(*) FROM ledger WHERE ts >= $1 AND ts < $2", to_ms(since), to_ms(until)
            )
            print(f"{size:,} rows ({in_window:,} in the 30 days):", flush=True)
            before = await conn.fetch(reports.SAVINGS["team"], to_ms(since), to_ms(until))
            after, _ = await store.savings(since, until, SavingsBy.TEAM)
            same = sorted(tuple(row) for row in before) == sorted(
                (
                    g.group,
                    g.requests,
                    g.cost_nanos,
                    g.counterfactual_nanos,
                    g.aliased,
                    g.rewritten,
                    g.downgraded,
                    g.fell_back,
                    g.shadow_cost_nanos,
                    g.capped_counterfactual_nanos,
                    g.shadow_spend_saved_nanos,
                )
                for g in after
            )
            print(f"  savings from the rollups equal the per-request form: {same}", flush=True)
            for label, work in timings.items():
                median, worst = await timed(work, repeat)
                print(
                    f"  {label:28s} median {median:9.1f} ms   slowest {worst:9.1f} ms", flush=True
                )
        await conn.close()
    finally:
        await store.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="postgresql://root@127.0.0.1:5432/postgres")
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--statement-timeout-s", type=float, default=900.0)
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))
    asyncio.run(run(args.url, sizes, args.days, args.repeat, args.statement_timeout_s))


if __name__ == "__main__":
    main()
