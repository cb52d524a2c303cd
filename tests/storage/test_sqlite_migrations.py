"""Ordered, recorded migrations; the SQLite file's shape; backend selection by URL."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from storage_samples import NOW

from spendgate.clock import ManualClock, to_ms
from spendgate.errors import StorageError
from spendgate.storage import open_storage, supported_schemes
from spendgate.storage.sqlite import SqliteStorage, overrun_sql
from spendgate.storage.sqlite.connection import connect
from spendgate.storage.sqlite.ledger import _VIEW_MARKS
from spendgate.storage.sqlite.migrate import (
    Migration,
    apply_migrations,
    load_migrations,
    split_statements,
)

CHILD = Path(__file__).with_name("storage_child.py")
MIGRATIONS_DIR = Path(__file__).parents[2] / "src/spendgate/storage/sqlite/migrations"


def _query(db: Path, sql: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql).fetchall()


async def _open_and_close(db: Path, clock: ManualClock) -> None:
    storage = SqliteStorage(str(db), clock=clock)
    await storage.open()
    await storage.close()


async def test_migrations_are_recorded_once(tmp_path: Path, clock: ManualClock) -> None:
    db = tmp_path / "spend.db"
    await _open_and_close(db, clock)
    first = _query(db, "SELECT version, name, applied_at FROM schema_migrations")
    clock.advance(3600)
    await _open_and_close(db, clock)

    assert _query(db, "SELECT version, name, applied_at FROM schema_migrations") == first
    expected = [(m.version, m.name, to_ms(NOW)) for m in load_migrations()]
    assert first == expected


def test_every_shipped_file_is_a_migration() -> None:
    files = sorted(p.name for p in MIGRATIONS_DIR.glob("*.sql"))
    loaded = load_migrations()
    assert [f"{m.version:04d}_{m.name}.sql" for m in loaded] == files
    assert [m.version for m in loaded] == list(range(1, len(files) + 1))


async def test_schema_has_tables_indexes_and_wal(tmp_path: Path, clock: ManualClock) -> None:
    db = tmp_path / "spend.db"
    await _open_and_close(db, clock)

    names = {row[0] for row in _query(db, "SELECT name FROM sqlite_master")}
    assert {"api_keys", "ledger", "schema_migrations"} <= names
    assert {"ledger_ts", "ledger_key_ts", "ledger_answered", "ledger_answered_model"} <= names
    assert "ledger_team_ts" not in names  # dropped by 0015: no reader left
    assert _query(db, "PRAGMA journal_mode") == [("wal",)]


async def test_the_budgets_view_reads_by_its_own_indexes(
    tmp_path: Path, clock: ManualClock
) -> None:
    """0017's partial indexes: the view's exhausted refusals, and the overruns of the
    partial hours that 0018's rollups leave to the rows, are found without walking every
    refused row (its expression and the query's must stay the same text); the rows past
    the roll-up mark by id, as the other reports read them."""
    db = tmp_path / "spend.db"
    await _open_and_close(db, clock)
    with closing(sqlite3.connect(db)) as conn:
        plan = str(conn.execute("EXPLAIN QUERY PLAN " + _VIEW_MARKS, (0, 1, 2)).fetchall())
        edges = {"low": 0, "high": 1, "mark": 0}
        raw, past = (
            str(conn.execute("EXPLAIN QUERY PLAN " + sql, edges).fetchall())
            for sql in (overrun_sql._RAW, overrun_sql._PAST)
        )
    assert "USING INDEX ledger_exhausted" in plan
    assert "USING INDEX ledger_overrun" in raw
    assert "USING INTEGER PRIMARY KEY (rowid>?)" in past


async def test_key_lookup_uses_an_index(tmp_path: Path, clock: ManualClock) -> None:
    db = tmp_path / "spend.db"
    await _open_and_close(db, clock)
    plan = _query(db, "EXPLAIN QUERY PLAN SELECT * FROM api_keys WHERE key_hash = 'x'")
    assert "USING INDEX" in str(plan)


def test_rollups_count_again_the_refusals_told_to_retry(tmp_path: Path) -> None:
    """Migration 0020: hours rolled up before it counted every 429 refusal as told to
    retry, an exhausted budget's (OpenAI's insufficient_quota) and loop detection's too;
    they are counted again as `told_to_retry` counts them."""
    from storage_samples import build_row

    from spendgate.errors import BUDGET_EXHAUSTED
    from spendgate.storage.sqlite import rollups
    from spendgate.storage.sqlite.rows import INSERT_LEDGER, LEDGER

    migrations = load_migrations()
    [recount] = [m for m in migrations if m.name == "retryable_refusals"]
    refusals = [
        build_row(request_id="a", status=429, blocked_by="team", error="Rate limit reached"),
        build_row(request_id="b", status=429, blocked_by="team", error=f"{BUDGET_EXHAUSTED}x"),
        build_row(request_id="c", status=402, blocked_by="team", error=f"{BUDGET_EXHAUSTED}x"),
        build_row(request_id="d", status=429, blocked_by="loop-detection", error="loop"),
    ]
    with closing(connect(str(tmp_path / "spend.db"))) as conn:
        apply_migrations(conn, [m for m in migrations if m.version < recount.version], lambda: 1)
        for row in refusals:
            conn.execute(INSERT_LEDGER, LEDGER.params(row))
        conn.execute("BEGIN")
        rollups.roll_up(conn)
        # as the roll-up counted before: every 429
        conn.execute("UPDATE blocks_hourly SET retryable = (name = 'team') * 2 + (name != 'team')")
        conn.execute("COMMIT")
        apply_migrations(conn, migrations, lambda: 1)
        found = conn.execute("SELECT name, blocked, retryable FROM blocks_hourly ORDER BY name")
        assert found.fetchall() == [("loop-detection", 1, 0), ("team", 3, 1)]


def test_a_failing_migration_leaves_nothing_behind(tmp_path: Path) -> None:
    good = Migration(1, "good", "CREATE TABLE a (x INTEGER);")
    bad = Migration(2, "bad", "CREATE TABLE b (x INTEGER);\nSELEC nonsense;")
    with closing(connect(str(tmp_path / "spend.db"))) as conn:
        with pytest.raises(sqlite3.OperationalError):
            apply_migrations(conn, [good, bad], lambda: 1)
        versions = conn.execute("SELECT version FROM schema_migrations").fetchall()
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert versions == [(1,)]
    assert "a" in tables
    assert "b" not in tables


def test_statements_split_outside_strings_and_triggers() -> None:
    sql = """
    -- a comment; with a semicolon
    CREATE TABLE t (note TEXT DEFAULT 'a;b');
    CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN
        UPDATE t SET note = 'x;y';
    END;
    INSERT INTO t VALUES ('c;d');
    """
    statements = split_statements(sql)
    assert len(statements) == 3
    assert statements[1].endswith("END;")


def test_an_unterminated_migration_is_refused() -> None:
    with pytest.raises(StorageError, match="incomplete statement"):
        split_statements("CREATE TABLE t (x INTEGER);\nCREATE TABLE u (x INTEGER)")


def test_fresh_file_opened_by_several_processes_at_once(tmp_path: Path) -> None:
    db = tmp_path / "spend.db"
    start_at = time.time() + 1.0  # after every child has imported spendgate
    children = [
        subprocess.Popen(
            [sys.executable, str(CHILD), "open", f"sqlite:///{db}", str(start_at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [child.communicate(timeout=30) for child in children]

    for child, (out, err) in zip(children, results, strict=True):
        assert child.returncode == 0, err
        assert out.strip() == "opened"
    versions = _query(db, "SELECT version FROM schema_migrations ORDER BY version")
    assert versions == [(m.version,) for m in load_migrations()]


async def test_missing_directory_is_a_storage_error(tmp_path: Path) -> None:
    storage = SqliteStorage(str(tmp_path / "nowhere" / "spend.db"))
    with pytest.raises(StorageError, match="nowhere"):
        await storage.open()


async def test_opening_twice_is_refused(tmp_path: Path) -> None:
    storage = SqliteStorage(str(tmp_path / "spend.db"))
    await storage.open()
    try:
        with pytest.raises(StorageError, match="only once"):
            await storage.open()
    finally:
        await storage.close()


# -- open_storage -----------------------------------------------------------------------


def test_sqlite_urls_name_relative_and_absolute_paths() -> None:
    relative = open_storage("sqlite:///data/spend.db")
    absolute = open_storage("sqlite:////var/lib/spendgate/spend.db")
    assert isinstance(relative, SqliteStorage)
    assert isinstance(absolute, SqliteStorage)
    assert relative.path == "data/spend.db"
    assert absolute.path == "/var/lib/spendgate/spend.db"


def test_unknown_scheme_names_it_and_the_supported_ones() -> None:
    with pytest.raises(StorageError) as caught:
        open_storage("mongodb://admin:hunter2@db:27017/spend")
    message = str(caught.value)
    assert message == (
        "unsupported storage URL scheme 'mongodb'; supported: "
        "memory://, postgres://, postgresql://, sqlite://"
    )
    assert "hunter2" not in message
    assert supported_schemes() == ["memory", "postgres", "postgresql", "sqlite"]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("spend.db", "scheme '(none)'"),
        ("sqlite://:memory:", "in-memory SQLite is not supported"),
        ("sqlite://host/spend.db", "takes no host or query"),
        ("sqlite:///spend.db?mode=ro", "takes no host or query"),
    ],
)
def test_bad_sqlite_urls(url: str, problem: str) -> None:
    with pytest.raises(StorageError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        open_storage(url)
