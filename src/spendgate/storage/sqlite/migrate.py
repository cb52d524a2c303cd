"""Ordered, recorded schema migrations for the SQLite backend.

Migrations are package data files ``NNNN_name.sql`` in ``storage/sqlite/migrations/``, numbered
from 0001 without gaps. Each is applied in its own ``BEGIN IMMEDIATE`` transaction together
with its row in ``schema_migrations`` (version, name, applied_at), so a migration is either
fully there and recorded, or absent.

The immediate (write) lock also makes concurrent opens safe: when two processes open the
same fresh file at once, the second waits on ``busy_timeout``, then finds the version
already recorded inside its own transaction and skips it. A restart with nothing pending
takes no write lock at all.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Protocol

from spendgate.errors import SchemaTooNew, StorageError

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at INTEGER NOT NULL
)
"""


class Versioned(Protocol):
    @property
    def version(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """The migrations shipped with this package, in version order."""
    folder = resources.files("spendgate.storage.sqlite").joinpath("migrations")
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        sql = entry.read_text(encoding="utf-8")
        found.append(Migration(int(match.group(1)), match.group(2), sql))
    found.sort(key=lambda migration: migration.version)
    _check_sequence(found)
    return found


def _check_sequence(migrations: list[Migration]) -> None:
    """A gap or a duplicate number is a packaging bug: refuse before touching a database."""
    versions = [migration.version for migration in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise StorageError(f"migrations must be numbered 1..n without gaps, found {versions}")


def refuse_newer(done: set[int], migrations: Sequence[Versioned], backend: str) -> None:
    """Refuse a database migrated past what this gateway knows: a gateway of an older
    version must not write to it (its inserts would not feed the newer rollups)."""
    known = max((migration.version for migration in migrations), default=0)
    found = max(done, default=0)
    if found > known:
        raise SchemaTooNew(
            f"the {backend} database's schema is at migration {found:04d}, newer than this "
            f"gateway knows (up to {known:04d}): upgrade the gateway to the version that "
            "migrated it"
        )


def split_statements(sql: str) -> list[str]:
    """Split a script into statements without `executescript`, which would COMMIT first.

    `sqlite3.complete_statement` knows about string literals and trigger bodies, so a
    ``;`` inside either does not end a statement.
    """
    statements: list[str] = []
    pending = ""
    for line in sql.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statement = pending.strip()
            if _has_code(statement):
                statements.append(statement)
            pending = ""
    if _has_code(pending):
        raise StorageError(f"migration ends with an incomplete statement: {pending.strip()!r}")
    return statements


def _has_code(text: str) -> bool:
    lines = (line.strip() for line in text.splitlines())
    return any(line and not line.startswith("--") and line != ";" for line in lines)


def applied_versions(conn: sqlite3.Connection) -> set[int]:
    """Versions recorded in ``schema_migrations``; empty for a database never migrated."""
    try:
        rows = conn.execute("SELECT version FROM schema_migrations").fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return set()
        raise
    return {int(row[0]) for row in rows}


def apply_migrations(
    conn: sqlite3.Connection,
    migrations: list[Migration],
    now_ms: Callable[[], int],
) -> list[int]:
    """Apply the pending migrations; returns the versions this call applied.

    ``conn`` must be in autocommit mode (``isolation_level=None``): transactions here are
    explicit.
    """
    done = applied_versions(conn)
    refuse_newer(done, migrations, "SQLite")
    applied: list[int] = []
    for migration in migrations:
        if migration.version not in done and _apply_one(conn, migration, now_ms):
            applied.append(migration.version)
    return applied


def _apply_one(conn: sqlite3.Connection, migration: Migration, now_ms: Callable[[], int]) -> bool:
    """Apply one migration under the write lock, unless another process just did."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_CREATE_TABLE)
        if migration.version in applied_versions(conn):
            conn.execute("ROLLBACK")
            return False
        for statement in split_statements(migration.sql):
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.name, now_ms()),
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return True
