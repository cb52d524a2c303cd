"""One SQLite file and its three connections, shared by the key store, the ledger and the
counter store of one `SqliteStorage` (see the package docstring for who runs where)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from spendgate.clock import Clock
from spendgate.errors import StorageError
from spendgate.storage.base import StoredCounter
from spendgate.storage.sqlite.connection import connect
from spendgate.storage.sqlite.writer import _Writer

T = TypeVar("T")

# What this process's live reservations hold, by id, as stored: settlement deletes the row
# and, if it was there, charges these instead of reading them back first. Only a hint: an
# id missing here is read from the row; the row, not this, says whether it is still live.
Held = dict[str, tuple[StoredCounter, ...]]
HELD_MAX = 100_000  # a process that reserves without ever settling: forget, read rows back


class ReportReader:
    """Long range scans on one worker thread, with a connection that lives on it."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="spendgate-sqlite-reports"
        )

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, work)

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = connect(self._path)
        try:
            return work(self._conn)
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite read failed on {self._path!r}: {exc}") from exc

    async def shrink_memory(self) -> None:
        """Drop the connection's unused cache pages, if it has one (none is opened)."""
        if self._conn is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._pool, self._shrink)

    def _shrink(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA shrink_memory")

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._close_connection)
        self._pool.shutdown(wait=True)

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclasses.dataclass(frozen=True, slots=True)
class Connections:
    writer: _Writer
    reader: sqlite3.Connection  # event-loop thread only
    reports: ReportReader


class SqliteFile:
    """The file's connections, opened once and closed once; and what this process holds."""

    def __init__(self, path: str, clock: Clock) -> None:
        self.path = path
        self.clock = clock
        self.held: Held = {}
        self._conns: Connections | None = None
        self._closed = False

    async def open(self) -> None:
        """Start the writer (which applies pending migrations), then the readers."""
        if self._conns is not None or self._closed:
            raise StorageError(f"SQLite storage {self.path!r} can be opened only once")
        writer = _Writer(self.path, self.clock)
        await writer.start()
        try:
            reader = connect(self.path)
            reader.execute("PRAGMA query_only = ON")
        except BaseException:
            await writer.stop()
            raise
        self._conns = Connections(writer, reader, ReportReader(self.path))

    async def close(self) -> None:
        """Commit every queued write, stop the writer, close the connections."""
        conns, self._conns, self._closed = self._conns, None, True
        if conns is None:
            return
        await conns.writer.stop()
        await conns.reports.close()
        conns.reader.close()

    async def release_memory(self) -> None:
        """Drop the unused pages of every connection's cache (``PRAGMA shrink_memory``): the
        rows a burst of traffic read stay in the OS page cache, not in this process
        (`spendgate.services.idle`). A connection in a transaction keeps its cache."""
        conns = self._conns
        if conns is None:
            return
        with contextlib.suppress(sqlite3.Error):
            conns.reader.execute("PRAGMA shrink_memory")
        conns.writer.shrink_memory()
        await conns.reports.shrink_memory()

    def require(self) -> Connections:
        if self._conns is None:
            state = "closed" if self._closed else "not open"
            raise StorageError(f"SQLite storage {self.path!r} is {state}")
        return self._conns

    async def check(self) -> None:
        """The file answers a read, its writer thread is alive, it is still the file that
        was opened, and its writes succeed (the last one, or the writer's last probe)."""
        conns = self.require()
        writer = conns.writer
        if not writer.alive:
            raise StorageError(f"the SQLite writer of {self.path!r} has stopped")
        problem = writer.file_problem()
        if problem is not None:
            raise StorageError(f"the SQLite database {self.path!r} {problem}")
        if writer.failing is not None:
            raise StorageError(f"writes to {self.path!r} fail: {writer.failing}")
        self.read("SELECT 1", ())

    # -- the four ways in -------------------------------------------------------------

    async def write(
        self, sql: str, params: Sequence[Any], what: str, must_change: bool = False
    ) -> None:
        """One statement through the writer; returns after its COMMIT."""
        await self.require().writer.submit(sql, params, what, must_change, bool(self.held))

    def submit(
        self, work: Callable[[sqlite3.Connection], T], what: str, others: bool = False
    ) -> asyncio.Future[T]:
        """Queue a job on the writer; resolves with its result after COMMIT. ``others``:
        other requests are in flight, so the job may share a commit with theirs."""
        return self.require().writer.submit_job(work, what, others)

    def read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """A short indexed read on the event-loop thread (no thread hop)."""
        try:
            rows: list[tuple[Any, ...]] = self.require().reader.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite read failed on {self.path!r}: {exc}") from exc
        return rows

    def on_reader(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return work(self.require().reader)
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite read failed on {self.path!r}: {exc}") from exc

    async def report(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """A long read on the report thread."""
        return await self.require().reports.run(work)

    def remember(self, reservation_id: str, counters: tuple[StoredCounter, ...]) -> None:
        if len(self.held) >= HELD_MAX:
            self.held.clear()
        self.held[reservation_id] = counters
