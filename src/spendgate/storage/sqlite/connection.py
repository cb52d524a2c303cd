"""Connections to a SQLite file: pragmas (WAL, ``synchronous=NORMAL``), and taking the
write lock while another process may hold it."""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import time

from spendgate.errors import StorageError

BUSY_TIMEOUT_MS = 5_000
# Longest sleep between two tries for another process's write lock: short, so that a
# process waiting for its turn is not left out while the other commits again and again.
BUSY_MAX_SLEEP_S = 0.004


def connect(path: str, *, shared: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) with our pragmas.
    ``shared``: used from more than one thread, one at a time (the writer's)."""
    _create_private(path)
    try:
        conn = sqlite3.connect(
            path,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=not shared,
        )
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open SQLite database {path!r}: {exc}") from exc
    try:
        _configure(conn, path)
    except sqlite3.Error as exc:
        conn.close()
        raise StorageError(f"cannot configure SQLite database {path!r}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _create_private(path: str) -> None:
    """Create a new database file readable by its owner only (0600: it holds key hashes,
    users and costs); SQLite gives its -wal and -shm files the database's mode. A file
    that exists already keeps the mode its operator gave it."""
    if path == ":memory:" or path.startswith("file:") or not path:
        return
    with contextlib.suppress(OSError):  # it exists (its mode stays), or sqlite3 says why
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _configure(conn: sqlite3.Connection, path: str) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = _enable_wal(conn)
    if mode.lower() != "wal":
        raise StorageError(f"SQLite database {path!r} cannot use WAL mode (got {mode!r})")
    conn.execute("PRAGMA synchronous = NORMAL")


def _enable_wal(conn: sqlite3.Connection) -> str:
    """Switch to WAL, retrying while another process holds the lock.

    Changing the journal mode needs an exclusive lock and SQLite does not call the busy
    handler for it, so two processes opening a fresh file at once would otherwise see
    "database is locked" straight away.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.005 + random.random() * 0.01)  # jitter: racers stop colliding


def no_transaction_left(conn: sqlite3.Connection) -> None:
    """Before the write lock is released: a transaction left open by a failure (a ROLLBACK
    that itself failed) would keep SQLite's lock on the file from every other process."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_BUSY


def begin(conn: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE`` on the writer connection, from the writer thread: waits up to
    ``BUSY_TIMEOUT_MS`` while another process holds the write lock, as SQLite's busy
    handler would. The connection's own busy timeout is 0, so that the inline fast path
    (`_Writer._commit_here`), which must never wait, needs no pragma to switch it off and on
    (two statements per write)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.001
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            left = deadline - time.monotonic()
            if not _is_busy(exc) or left <= 0:
                raise
        time.sleep(min(left, delay * (0.5 + random.random())))  # jitter: racers stop colliding
        delay = min(delay * 2, BUSY_MAX_SLEEP_S)


def as_storage_error(exc: BaseException, context: str) -> StorageError:
    if isinstance(exc, StorageError):
        return exc
    error = StorageError(f"{context}: {exc}")
    error.__cause__ = exc
    return error
