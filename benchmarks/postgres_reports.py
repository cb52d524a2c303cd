"""Reports on PostgreSQL at 1 M and 10 M ledger rows: `usage` (by team, by key),
`savings` (by team), `blocks` and the budgets view's read over the last 30 days, through the
backend's own code path.

    python -m benchmarks.postgres_reports [--url postgresql://root@127.0.0.1:5432/postgres]
        [--sizes 1000000,10000000] [--days 90] [--repeat 5]
        [--db NAME [--template BASE] [--build-only]]

A throwaway database (``sg_bench_<hex>``) is created on the server of ``--url`` and dropped
at the end; with ``--db`` that database is used and kept (created, as a copy of
``--template`` if given, when missing; loaded up to the sizes when short). A database
that misses migrations (a ledger loaded by an earlier version) is timed as that version
read it (savings and blocks as before 0006), then migrated, the migration timed.

Rows are generated server-side (``generate_series``; the rollups are added in the same
statement, as the backend's insert does), spread evenly over the last
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
import dataclasses
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from spendgate.clock import ManualClock, to_ms
from spendgate.domain.refusals import RECENT_OUTPUTS, SAMPLE_SPAN, RefusalCombo, combo_pairs
from spendgate.domain.savings import SavingsBy
from spendgate.domain.totals import GroupBy, UsageQuery
from spendgate.services.reports import blocks_report
from spendgate.storage.postgres import PostgresSettings, PostgresStorage, reports, rollup_sql
from spendgate.storage.postgres.ledger import ROLLUP_INSERTED
from spendgate.storage.postgres.migrate import applied_versions, apply_migrations, load_migrations
from spendgate.storage.postgres.partitions import month_of_ms, shift
from spendgate.storage.postgres.rollup_sql import _REQUEST, _SEVERAL

NOW = datetime(2026, 12, 1, tzinfo=UTC)
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


# Savings' multi-row correction as read before migration 0006: the period's answered
# attempts from the ledger (index ledger_attempts) and a probe by request id for each
# first row.
_SEVERAL_0005 = (
    "several AS (SELECT {column} AS grp, " + _REQUEST + " AS req, route_kind, attempt, "  # noqa: S608
    "status, shadow_rule FROM ledger "
    "WHERE ts >= $1 AND ts < $2 AND attempt > 0 AND blocked_by IS NULL "
    "UNION ALL SELECT {column}, request_id, route_kind, attempt, status, shadow_rule "
    "FROM ledger WHERE ts >= $1 AND ts < $2 AND attempt = 0 AND blocked_by IS NULL "
    "AND request_id = ANY(ARRAY(SELECT " + _REQUEST + " FROM ledger "
    "WHERE ts >= $1 AND ts < $2 AND attempt > 0 AND blocked_by IS NULL)))"
)
SAVINGS_0005 = rollup_sql.SAVINGS["team"].replace(
    _SEVERAL.format(column="team", rows="TRUE"), _SEVERAL_0005.format(column="team")
)
SHADOW_SAVINGS_0005 = rollup_sql.SHADOW_SAVINGS.replace(
    _SEVERAL.format(column="NULL::text", rows="shadow_rule IS NOT NULL"),
    _SEVERAL_0005.format(column="NULL::text"),
)
assert rollup_sql.SAVINGS["team"] != SAVINGS_0005
assert rollup_sql.SHADOW_SAVINGS != SHADOW_SAVINGS_0005


async def _savings_0005(conn: asyncpg.Connection[Any], since: datetime, until: datetime) -> object:
    span = (to_ms(since), to_ms(until), *reports.rolled_span(to_ms(since), to_ms(until)))
    return await conn.fetch(SAVINGS_0005, *span), await conn.fetch(SHADOW_SAVINGS_0005, *span)


async def _blocks_0005(conn: asyncpg.Connection[Any], since: datetime, until: datetime) -> object:
    """The blocks report's storage reads as made before 0006: the sums and the distinct
    refusals over the period's refused rows, the medians by index walks."""
    span = (to_ms(since), to_ms(until))
    for statement in (reports.BLOCKED, reports.SHADOW_HITS, reports.OVERRUNS):
        await conn.fetch(statement, *span)
    combos = [RefusalCombo(*row) for row in await conn.fetch(rollup_sql.REFUSALS, *span)]
    pairs = sorted(set(combo_pairs(combos)))
    models = [model for _, model in pairs]
    return await conn.fetch(
        rollup_sql.MEDIANS,
        [key for key, _ in pairs],
        models,
        sorted(set(models)),
        to_ms(until - SAMPLE_SPAN),
        span[1],
        RECENT_OUTPUTS,
    )


async def _database(admin: asyncpg.Connection[Any], name: str, template: str | None) -> None:
    if await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
        return
    began = time.perf_counter()
    copy = f' TEMPLATE "{template}"' if template else ""
    await admin.execute(f'CREATE DATABASE "{name}"{copy}')
    if template:
        print(f"copied {template} in {time.perf_counter() - began:.1f} s", flush=True)


async def _upgrade(url: str, clock: ManualClock, timings: Timings, repeat: int) -> None:
    """Where the database misses migrations: time the reports as they were read before
    0006 (if it has 0005), then apply the migrations, timed."""
    conn = await asyncpg.connect(url)
    try:
        done = await applied_versions(conn)
        pending = [m for m in load_migrations() if m.version not in done]
        if not pending:
            return
        if 5 in done:
            await _time(timings, repeat, before=True)
        began = time.perf_counter()
        await apply_migrations(conn, pending, lambda: to_ms(NOW))
        rows = await conn.fetchval("SELECT count(*) FROM ledger_ids")
        versions = [m.version for m in pending]
        print(
            f"migrations {versions} on {rows:,} rows: {time.perf_counter() - began:.1f} s",
            flush=True,
        )
    finally:
        await conn.close()


Timings = dict[str, tuple[bool, Callable[[], Awaitable[Any]]]]


async def _time(timings: Timings, repeat: int, *, before: bool) -> None:
    print("  before 0006:" if before else "  with 0006:", flush=True)
    for label, (of_before, work) in timings.items():
        if of_before == before:
            median, worst = await timed(work, repeat)
            print(f"  {label:34s} median {median:9.1f} ms   slowest {worst:9.1f} ms", flush=True)


async def run(
    url: str,
    sizes: list[int],
    days: int,
    repeat: int,
    statement_timeout_s: float,
    kept: str | None = None,
    build_only: bool = False,
    template: str | None = None,
) -> None:
    name = kept or f"sg_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(url)
    await _database(admin, name, template)
    db_url = url.rsplit("/", 1)[0] + "/" + name
    # A report may take longer than the gateway's default statement timeout here.
    settings = PostgresSettings(statement_timeout_s=statement_timeout_s)
    clock = ManualClock(NOW)
    store = PostgresStorage(db_url, clock=clock, settings=settings)
    conn = await asyncpg.connect(db_url)
    try:
        since, until = NOW - timedelta(days=30), NOW
        low, high = to_ms(since), to_ms(until)
        span = reports.rolled_span(low, high)
        timings: Timings = {
            "usage by team, 30 days": (
                False,
                lambda: store.usage(UsageQuery(GroupBy.TEAM, since, until)),
            ),
            "usage by key, 30 days": (
                False,
                lambda: store.usage(UsageQuery(GroupBy.KEY, since, until)),
            ),
            "savings by team, 30 days": (
                False,
                lambda: store.savings(since, until, SavingsBy.TEAM),
            ),
            "blocks report, 30 days": (
                False,
                lambda: blocks_report(store, clock, period="30d"),
            ),
            "  of which storage.blocks": (False, lambda: store.blocks(since, until)),
            "  of which storage.refusals": (False, lambda: store.refusals(since, until)),
            "budgets view's rows (marked, <0006)": (False, lambda: store.marked(since, until)),
            "budgets view's rows (view_marks)": (
                False,
                lambda: store.view_marks(since, until - timedelta(seconds=60), until),
            ),
            "savings by team (0005 form)": (True, lambda: _savings_0005(conn, since, until)),
            "blocks reads (0005 form)": (True, lambda: _blocks_0005(conn, since, until)),
            "usage by team (0005 = now)": (
                True,
                lambda: conn.fetch(reports.USAGE[GroupBy.TEAM], low, high, *span),
            ),
        }
        loaded_before = await conn.fetchval("SELECT to_regclass('ledger_ids') IS NOT NULL")
        if loaded_before:
            await _upgrade(db_url, clock, timings, repeat)
        await store.open()
        first = month_of_ms(to_ms(NOW - timedelta(days=days)))
        months = [shift(first, i) for i in range(days // 28 + 2)]
        await store.database.ensure_months(months)
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
        loaded = int(await conn.fetchval("SELECT count(*) FROM ledger_ids"))
        for size in sizes:
            if size > loaded:
                await load(conn, loaded + 1, size, days)  # on top of the last size's rows
                loaded = size
                await conn.execute("VACUUM ANALYZE")
            began = time.perf_counter()
            taken = await store.ledger_store.roll_up()  # type: ignore[attr-defined]
            took = time.perf_counter() - began
            print(f"  roll-up job: {taken:,} pending refused rows in {took:.1f} s", flush=True)
            if build_only:
                continue
            in_window = await conn.fetchval(
                "SELECT count(*) FROM ledger WHERE ts >= $1 AND ts < $2", low, high
            )
            print(f"{size:,} rows ({in_window:,} in the 30 days):", flush=True)
            before = await conn.fetch(reports.SAVINGS["team"], low, high)
            after, _ = await store.savings(since, until, SavingsBy.TEAM)
            same = sorted(tuple(row) for row in before) == sorted(
                tuple(getattr(g, f.name) for f in dataclasses.fields(g))[:11] for g in after
            )
            print(f"  savings from the rollups equal the per-request form: {same}", flush=True)
            raw = await conn.fetch(rollup_sql.REFUSALS, low, high)
            found = await store.refusals(since, until)
            same = sorted(RefusalCombo(*row) for row in raw) == found
            print(f"  refusals from the rollups equal the raw form: {same}", flush=True)
            await _time(timings, repeat, before=False)
    finally:
        await conn.close()
        await store.close()
        if kept is None:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="postgresql://root@127.0.0.1:5432/postgres")
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--statement-timeout-s", type=float, default=900.0)
    parser.add_argument(
        "--db", help="use and keep this database (created and loaded up to the sizes if short)"
    )
    parser.add_argument("--build-only", action="store_true", help="load, time nothing")
    parser.add_argument("--template", help="create --db as a copy of this database")
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))
    asyncio.run(
        run(
            args.url,
            sizes,
            args.days,
            args.repeat,
            args.statement_timeout_s,
            args.db,
            args.build_only,
            args.template,
        )
    )


if __name__ == "__main__":
    main()
