"""asyncpg against psycopg 3 (async, psycopg_pool): one-row round trips, a two-statement
transaction and a 500-row batch insert, in interleaved rounds on one server (the choice of
the PostgreSQL driver, docs/storage.md).

    .venv/bin/pip install 'psycopg[binary]' psycopg_pool   # not a dependency of spendgate
    python -m benchmarks.postgres_drivers [ROUNDS]
"""

import asyncio
import statistics
import sys
import time
import uuid

import asyncpg
from psycopg_pool import AsyncConnectionPool

DB = "sg_drv_" + uuid.uuid4().hex[:8]
UPSERT = "INSERT INTO t VALUES ({}, 1, 1, 'x') ON CONFLICT (id) DO UPDATE SET a = t.a + 1"
UPSERT_A, UPSERT_P = UPSERT.format("$1"), UPSERT.format("%s")
BATCH = (
    "INSERT INTO t SELECT * FROM unnest({0}::text[], {0}::bigint[], {0}::bigint[], {0}::text[]) "
    "ON CONFLICT DO NOTHING RETURNING id"
)
BATCH_A = BATCH.replace("{0}", "${}").format(1, 2, 3, 4)
BATCH_P = BATCH.format("%s")


async def main():
    admin = await asyncpg.connect(host="127.0.0.1", user="root", database="postgres")
    await admin.execute(f"CREATE DATABASE {DB}")
    try:
        await run()
    finally:
        await admin.execute(f"DROP DATABASE {DB} WITH (FORCE)")
        await admin.close()


async def run():
    apool = await asyncpg.create_pool(
        host="127.0.0.1", user="root", database=DB, min_size=4, max_size=4
    )
    ppool = AsyncConnectionPool(
        f"host=127.0.0.1 user=root dbname={DB}", min_size=4, max_size=4, open=False
    )
    await ppool.open()
    async with apool.acquire() as c:
        await c.execute("CREATE TABLE t (id text primary key, ts bigint, a bigint, b text)")
    results = {
        k: []
        for k in [
            "asyncpg select",
            "psycopg select",
            "asyncpg txn-upsert",
            "psycopg txn-upsert",
            "asyncpg 500-batch",
            "psycopg 500-batch",
        ]
    }

    async def a_sel():
        async with apool.acquire() as c:
            await c.fetchrow("SELECT id, a FROM t WHERE id = $1", "x")

    async def p_sel():
        async with ppool.connection() as c:
            await (
                await c.execute("SELECT id, a FROM t WHERE id = %s", ("x",), prepare=True)
            ).fetchone()

    async def a_up():
        async with apool.acquire() as c, c.transaction():
            await c.execute(
                UPSERT_A,
                "k",
            )
            await c.fetchrow("SELECT a FROM t WHERE id = $1", "k")

    async def p_up():
        async with ppool.connection() as c, c.transaction():
            await c.execute(
                UPSERT_P,
                ("k",),
                prepare=True,
            )
            await (
                await c.execute("SELECT a FROM t WHERE id = %s", ("k",), prepare=True)
            ).fetchone()

    async def a_batch():
        ids = [uuid.uuid4().hex for _ in range(500)]
        async with apool.acquire() as c:
            await c.fetch(
                BATCH_A,
                ids,
                [1] * 500,
                [2] * 500,
                ["x"] * 500,
            )

    async def p_batch():
        ids = [uuid.uuid4().hex for _ in range(500)]
        async with ppool.connection() as c:
            await (
                await c.execute(
                    BATCH_P,
                    (ids, [1] * 500, [2] * 500, ["x"] * 500),
                    prepare=True,
                )
            ).fetchall()

    fns = {
        "asyncpg select": a_sel,
        "psycopg select": p_sel,
        "asyncpg txn-upsert": a_up,
        "psycopg txn-upsert": p_up,
        "asyncpg 500-batch": a_batch,
        "psycopg 500-batch": p_batch,
    }
    for fn in fns.values():
        for _ in range(50):
            await fn()
    for _rnd in range(int(sys.argv[1]) if len(sys.argv) > 1 else 20):
        for name, fn in fns.items():
            n = 20 if "batch" in name else 100
            for _ in range(n):
                t = time.perf_counter_ns()
                await fn()
                results[name].append(time.perf_counter_ns() - t)
    for name, xs in results.items():
        p50, p99 = statistics.median(xs) / 1000, sorted(xs)[int(len(xs) * 0.99)] / 1000
        print(f"{name:22s} p50 {p50:8.1f} us  p99 {p99:8.1f} us  n={len(xs)}")
    await apool.close()
    await ppool.close()


if __name__ == "__main__":
    asyncio.run(main())
