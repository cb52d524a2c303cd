"""Waiting for a pooled PostgreSQL connection is bounded (by
``storage.postgres.connect_timeout_s``): when every connection is held (a stalled server
holds them all), a request's storage call fails as an outage, so the outage policy
answers it (503 in its dialect). Before, ``acquire()`` waited without end."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from pg_databases import throwaway_database

from spendgate.clock import SystemClock
from spendgate.errors import StorageError
from spendgate.storage.postgres.database import PgDatabase, is_outage
from spendgate.storage.postgres.settings import PostgresSettings


@pytest.fixture
def pg_url() -> Iterator[str]:
    with throwaway_database() as url:
        yield url


async def test_a_full_pool_fails_as_an_outage_instead_of_waiting_for_ever(pg_url: str) -> None:
    settings = PostgresSettings(pool_min=1, pool_max=1, connect_timeout_s=0.2)
    db = PgDatabase(pg_url, SystemClock(), settings)
    await db.open()
    held, release = asyncio.Event(), asyncio.Event()

    async def hold(conn: object) -> None:
        held.set()
        await release.wait()

    holder = asyncio.create_task(db.run(hold, "a held connection"))
    try:
        await held.wait()
        with pytest.raises(StorageError) as raised:
            # a guard against the old endless wait, far past the bound under test
            await asyncio.wait_for(db.run(lambda conn: conn.fetchval("SELECT 1"), "x"), 10)
        assert is_outage(raised.value)
    finally:
        release.set()
        await holder
        await db.close()
