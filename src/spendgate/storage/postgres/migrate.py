"""Ordered, recorded schema migrations for the PostgreSQL backend.

Migrations are package data files ``NNNN_name.sql`` in ``storage/postgres/migrations/``,
numbered from 0001 without gaps. Each is applied in one transaction together with its row
in ``schema_migrations`` (version, name, applied_at), so a migration is either fully there
and recorded, or absent (PostgreSQL's DDL is transactional).

Gateways starting at once against one database take turns: the whole pass runs under a
session advisory lock (`MIGRATION_LOCK`), and each reads the recorded versions only once it
holds the lock, so the second finds the first's work recorded and applies nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from spendgate.errors import StorageError
from spendgate.storage.sqlite.migrate import refuse_newer

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

# pg_advisory_lock key of the migration pass (an arbitrary constant: "spendgate" in ASCII).
MIGRATION_LOCK = 0x7370656E64676174

Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """The migrations shipped with this package, in version order."""
    folder = resources.files("spendgate.storage.postgres").joinpath("migrations")
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is not None:
            sql = entry.read_text(encoding="utf-8")
            found.append(Migration(int(match.group(1)), match.group(2), sql))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if versions != list(range(1, len(versions) + 1)):
        raise StorageError(f"migrations must be numbered 1..n without gaps, found {versions}")
    return found


async def applied_versions(conn: Conn) -> set[int]:
    """Versions recorded in ``schema_migrations``; empty for a database never migrated."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return set()
    return {row[0] for row in await conn.fetch("SELECT version FROM schema_migrations")}


async def apply_migrations(
    conn: Conn, migrations: list[Migration], now_ms: Callable[[], int]
) -> list[int]:
    """Apply the pending migrations under the migration lock; the versions applied here."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(_CREATE_TABLE)
        done = await applied_versions(conn)
        refuse_newer(done, migrations, "PostgreSQL")
        applied: list[int] = []
        for migration in migrations:
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)  # simple protocol: many statements
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    now_ms(),
                )
            applied.append(migration.version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
