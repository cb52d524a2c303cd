"""Ledgers for the SQLite rollup tests: rows written in parts with the roll-up job run
after some of them, and ledgers written before the rollups then migrated (a module, so
tests can import it)."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

from spendgate.domain.ledger import LedgerRow
from spendgate.storage.sqlite import SqliteStorage
from spendgate.storage.sqlite.connection import connect
from spendgate.storage.sqlite.migrate import apply_migrations, load_migrations
from spendgate.storage.sqlite.rows import INSERT_LEDGER, LEDGER


async def write_in_parts(storage: SqliteStorage, rows: list[LedgerRow], rolls: list[bool]) -> None:
    """``rows`` in ``len(rolls)`` parts, the job run after each part whose flag is set."""
    parts = len(rolls)
    for index, roll in enumerate(rolls):
        await storage.ledger_store.append(
            rows[index * len(rows) // parts : (index + 1) * len(rows) // parts]
        )
        if roll:
            await storage.ledger_store.roll_up()  # type: ignore[attr-defined]


def written_before_rollups(db: Path, rows: list[LedgerRow], upto: int) -> None:
    """A ledger at ``db`` whose ``rows`` were written under 0010 (before any rollup), then
    migrated up to migration ``upto`` (0011 on: its backfill moves the mark to the end)."""
    with closing(connect(str(db))) as conn:
        apply_migrations(conn, load_migrations()[:10], lambda: 0)
        conn.execute("BEGIN")
        conn.executemany(INSERT_LEDGER, [LEDGER.params(row) for row in rows])
        conn.execute("COMMIT")
        apply_migrations(conn, load_migrations()[:upto], lambda: 0)
