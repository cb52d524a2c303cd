"""What PostgreSQL migration 0006 costs the ledger's insert: the backend's insert statement
(rows, request ids and every rollup in one statement) on a database migrated to 0005 with
the statement of 0005, against one migrated to 0006 with today's, side by side in
interleaved rounds on one server.

    python -m benchmarks.postgres_write_cost [--url postgresql://root@127.0.0.1:5432/postgres]
        [--rows 20000] [--rounds 3]

Rows as a gateway writes them (one in 33 refused, one in 50 a fallback attempt after a
failed first try, one in 20 under a shadow rule), a batch of 100 per statement and one
per statement (a gateway at concurrency 1: its group commit carries one row), without
waiting for the commit's fsync; and the roll-up job over the refused rows they left
pending. Prints the median µs per row written of each. Two throwaway databases
(``pgreports_<hex>_w5`` and ``_w6``) are created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from benchmarks.metrics_events import ROW
from spendgate.domain.ledger import LedgerRow
from spendgate.storage.postgres import partitions, rollup_sql
from spendgate.storage.postgres.database import _column_types
from spendgate.storage.postgres.ledger import _insert_sql
from spendgate.storage.postgres.migrate import apply_migrations, load_migrations
from spendgate.storage.postgres.report_rollups import ROLL_BATCH, _roll_step
from spendgate.storage.sqlite.rows import LEDGER

NOW = datetime(2026, 11, 15, tzinfo=UTC)
BASE = replace(ROW, requested_model="gpt-4o", input_tokens=1000, output_tokens=300)


def rows(count: int, tag: str) -> list[LedgerRow]:
    found: list[LedgerRow] = []
    for i in range(count):
        ts = NOW + timedelta(milliseconds=i * 37)
        row = replace(BASE, request_id=f"{tag}_{i}", ts=ts, key_id=f"key_{i % 50}")
        if i % 33 == 7:
            row = replace(
                row,
                status=402,
                blocked_by="team-daily",
                cost_nanos=0,
                output_tokens=0,
                would_cost_nanos=3_000_000,
                fingerprint=f"fp{i % 50}",
            )
        elif i % 50 == 1 and found:  # the fallback of the row before (which failed)
            first = found[-1] = replace(found[-1], status=503, ts=ts)
            row = replace(row, request_id=f"{first.request_id}-1", attempt=1)
        if i % 20 == 3:
            row = replace(row, shadow_rule="try-mini", shadow_cost_nanos=40_000)
        found.append(row)
    return found


async def _open(url: str, versions: int) -> tuple[asyncpg.Connection[Any], str]:
    conn = await asyncpg.connect(url)
    # The commit's fsync is the same for both schemas and would hide the statement's own
    # cost (6.7 ms a commit on this machine): measured without waiting for it.
    await conn.execute("SET synchronous_commit = off")
    await apply_migrations(conn, load_migrations()[:versions], lambda: 0)
    await conn.execute(partitions.create_sql(partitions.month_of(NOW)))
    types = await _column_types(conn, "ledger")
    sql = _insert_sql(types)
    if versions == 5:  # the statement of 0005: no fallback rows, block sums or pending
        sql = sql.replace(rollup_sql.ROLLUPS_INSERTED, rollup_sql._SAVINGS_INSERTED)
    return conn, sql


async def _insert(conn: asyncpg.Connection[Any], sql: str, batch: list[LedgerRow]) -> float:
    columns = list(zip(*(LEDGER.params(row) for row in batch), strict=True))
    began = time.perf_counter()
    await conn.fetch(sql, *columns)
    return time.perf_counter() - began


async def _roll_up(conn: asyncpg.Connection[Any]) -> float:
    """The roll-up job over what is pending, as `report_rollups.roll_up` runs it."""
    began = time.perf_counter()
    while True:
        async with conn.transaction():
            if await _roll_step(conn, ROLL_BATCH) < ROLL_BATCH:
                return time.perf_counter() - began


async def run(url: str, count: int, rounds: int) -> None:
    prefix = f"pgreports_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(url)
    names = {5: f"{prefix}_w5", 6: f"{prefix}_w6"}
    try:
        for name in names.values():
            await admin.execute(f'CREATE DATABASE "{name}"')
        opened = {
            v: await _open(url.rsplit("/", 1)[0] + "/" + name, v) for v, name in names.items()
        }
        times: dict[tuple[int, int], list[float]] = {}
        for n in range(rounds):
            for size in (100, 1):
                for version, (conn, sql) in opened.items():
                    batch = rows(count if size == 100 else count // 10, f"r{n}s{size}v{version}")
                    spent = 0.0
                    for start in range(0, len(batch), size):
                        spent += await _insert(conn, sql, batch[start : start + size])
                    times.setdefault((version, size), []).append(spent / len(batch) * 1e6)
                    if version == 6:
                        job = await _roll_up(conn)
                        times.setdefault((6, 0), []).append(job / len(batch) * 1e6)
        for (version, size), values in sorted(times.items()):
            median = statistics.median(values)
            what = f"{size:3d} rows a statement" if size else "the roll-up job     "
            print(f"schema 0{version:03d}, {what}: {median:7.1f} µs a row written")
        for conn, _sql in opened.values():
            await conn.close()
    finally:
        for name in names.values():
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="postgresql://root@127.0.0.1:5432/postgres")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.url, args.rows, args.rounds))


if __name__ == "__main__":
    main()
