"""A gateway refuses to start on a database migrated past what it knows (a newer gateway
migrated it): its inserts would not feed the newer schema's rollups. Before, an older
gateway started silently on it, on PostgreSQL as on SQLite."""

from __future__ import annotations

import sqlite3

import asyncpg
import pytest

from spendgate.errors import StorageError
from spendgate.storage import open_storage
from spendgate.storage.sqlite.migrate import load_migrations


async def record_newer(url: str, version: int) -> None:
    """What a newer gateway's migration leaves behind: its row in schema_migrations."""
    insert = "INSERT INTO schema_migrations (version, name, applied_at) VALUES ({}, 'next', 0)"
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as lite:
            lite.execute(insert.format(version))
        return
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(insert.format(version))
    finally:
        await conn.close()


async def test_a_database_migrated_past_this_gateway_is_refused(persistent_url: str) -> None:
    store = open_storage(persistent_url)
    await store.open()
    await store.close()
    newer = 9000
    await record_newer(persistent_url, newer)
    again = open_storage(persistent_url)
    try:
        with pytest.raises(StorageError) as raised:
            await again.open()
    finally:
        await again.close()
    message = str(raised.value)
    assert f"{newer:04d}" in message
    assert "newer than this gateway knows" in message
    if persistent_url.startswith("sqlite"):
        assert f"{load_migrations()[-1].version:04d}" in message
