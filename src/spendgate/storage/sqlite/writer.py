"""The one thread that writes to a SQLite file, with group commit (see the package doc)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future as ThreadFuture
from typing import Any, TypeVar

from spendgate.clock import Clock, to_ms
from spendgate.errors import StorageError
from spendgate.storage.sqlite.connection import (
    as_storage_error,
    begin,
    connect,
    no_transaction_left,
)
from spendgate.storage.sqlite.migrate import apply_migrations, load_migrations

log = logging.getLogger("spendgate.storage.sqlite")
_OPENING = "but whatever writes (requests served, admin changes) is refused until writes succeed"
_SERVING = "SQLite writes fail; requests are refused until they succeed again"

T = TypeVar("T")

MAX_BATCH = 1_000  # rows per commit: bounds the latency of the first row in a burst
IDLE_CHECKPOINT_S = 0.25  # the writer checkpoints and heartbeats after this long idle
WRITER_STALE_MS = 2_000  # a writer not seen for this long is gone
CHECKPOINT_EVERY_BATCHES = 256  # ...and after this many batches when it is never idle

# ---------------------------------------------------------------------------- writer


@dataclasses.dataclass(slots=True)
class _Write:
    """One queued statement and the caller waiting for its commit."""

    sql: str
    params: Sequence[Any]
    what: str  # names the write in error messages
    must_change_a_row: bool
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop


@dataclasses.dataclass(slots=True)
class _Job:
    """Work on the writer's connection inside the batch's transaction, in a savepoint of
    its own: if it raises, only its own changes are rolled back. Its result reaches the
    caller only after COMMIT (`spendgate.storage.sqlite_budgets`)."""

    work: Callable[[sqlite3.Connection], Any]
    what: str
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


@dataclasses.dataclass(slots=True)
class _Stop:
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop


_Outcome = tuple[asyncio.Future[Any], Any, BaseException | None]


def _settle(outcomes: list[_Outcome]) -> None:
    """Runs on the event loop: wake each caller. A cancelled caller has stopped waiting."""
    for future, result, error in outcomes:
        if future.done():
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


def _post(loop: asyncio.AbstractEventLoop, outcomes: list[_Outcome]) -> None:
    try:
        loop.call_soon_threadsafe(_settle, outcomes)
    except RuntimeError:  # that loop is closed: nobody is waiting any more
        log.warning("dropping %d write results for a closed event loop", len(outcomes))


class _Writer:
    """The one thread that writes, with group commit (see the module docstring)."""

    def __init__(self, path: str, clock: Clock) -> None:
        self._path = path
        self._clock = clock
        self._queue: queue.SimpleQueue[_Write | _Job | _Stop] = queue.SimpleQueue()
        # Held while a transaction runs on the writer connection, by whichever thread.
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._stopping = False
        self._batches = 0  # committed by the writer thread
        self.commits = 0  # transactions run, by either thread, under the lock (a statistic)
        self._alone = False  # no other process writes to this file (see _heartbeat)
        # `PRAGMA data_version` when this process last found itself alone: it changes when
        # another connection commits, so an inline write can see a newcomer at once.
        self._seen_version = -1
        # Writes gathered on the event loop for one inline commit (see `_gather`).
        self._gathered: list[_Write | _Job] = []
        # Items handed to the writer thread and not yet committed (see `_can_inline`).
        self._handed = 0
        self._handed_lock = threading.Lock()
        self._last_heartbeat = 0.0
        self._owner = f"{os.getpid()}-{os.urandom(4).hex()}"
        # Why writes fail now (the file is locked by another process, full, gone...), or
        # None: while set, writes fail at once, and the heartbeat probes until one commits.
        self.failing: str | None = None
        # (device, inode) of the file opened, and whether its mode let anyone write then
        self._identity: tuple[int, int, bool] | None = None
        self._ready: ThreadFuture[None] = ThreadFuture()
        self._thread = threading.Thread(
            target=self._main, name="spendgate-sqlite-writer", daemon=True
        )

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    # -- health --------------------------------------------------------------------------

    def file_problem(self) -> str | None:
        """Whether the file this writer opened is still the one at its path, and writable:
        a file deleted, replaced or made read-only while spendgate serves must not take
        writes (a deleted file's would vanish at the next restart), nor one read-only then."""
        if self._identity is None:
            return None
        try:
            found = os.stat(self._path)
        except FileNotFoundError:
            return "was deleted while spendgate ran"
        except OSError as exc:
            return f"cannot be examined ({exc.strerror})"
        if (found.st_dev, found.st_ino) != self._identity[:2]:
            return "was replaced by another file while spendgate ran"
        if found.st_mode & 0o222:
            return None
        return "was made read-only while spendgate ran" if self._identity[2] else "is read-only"

    def _fail(self, why: str) -> None:
        if self.failing is None:
            opening = not self._ready.done()  # a report, maybe: it serves no request
            log.log(
                logging.WARNING if opening else logging.CRITICAL,
                f"SQLite writes fail ({why}); reads work, {_OPENING}" if opening else _SERVING,
                extra={"path": self._path, "error": why},
            )
        self.failing = why

    def _recovered(self) -> None:
        if self.failing is not None:
            log.warning("SQLite writes succeed again", extra={"path": self._path})
        self.failing = None

    def _note(self, results: Sequence[tuple[Any, StorageError | None]]) -> None:
        """Learn from a batch's results whether the file takes writes: an operational
        error (locked past the busy timeout, full, read-only, I/O) says it does not."""
        for _, error in results:
            cause = error.__cause__ if error is not None else None
            if isinstance(cause, sqlite3.OperationalError):
                self._fail(str(cause))
                return
        if any(error is None for _, error in results):
            self._recovered()

    def _refusal(self) -> StorageError | None:
        """Why writes must fail at once: they are failing, or the file is not the one
        opened (None: go ahead)."""
        problem = self.file_problem()
        if problem is not None:
            self._fail(f"the database file {self._path!r} {problem}")
        if self.failing is None:
            return None
        return StorageError(f"SQLite storage {self._path!r} is failing: {self.failing}")

    async def start(self) -> None:
        """Start the thread; it connects and migrates before accepting writes."""
        self._thread.start()
        await asyncio.wrap_future(self._ready)

    async def submit(
        self, sql: str, params: Sequence[Any], what: str, must_change: bool, others: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._place(_Write(sql, params, what, must_change, future, loop), others)
        await future

    def submit_job(
        self, work: Callable[[sqlite3.Connection], T], what: str, others: bool
    ) -> asyncio.Future[T]:
        """Run or queue ``work``; the future resolves with its result once it has committed.
        ``others``: other requests of this process are in flight and likely to write in
        the same turn of the event loop (see `_gather`). ``work`` may run twice, its first
        run rolled back, when another job of its batch fails (`_run_together`): what it
        changes must be on the connection (in memory, only hints the rows overrule)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._place(_Job(work, what, future, loop), others)
        return future

    def _place(self, item: _Write | _Job, others: bool) -> None:
        """Commit ``item`` now on the calling thread, gather it for one commit on the
        event loop's next pass, or queue it for the writer thread.

        Idle (nothing queued, no batch committing, no other process writing) a hand-off to
        the writer thread and back costs more than the transaction itself, so the write
        commits inline. With other requests in flight (``others``), each inline write would
        pay a COMMIT of its own (the largest part of its cost): it is gathered instead, and
        everything placed while writes are gathered commits with them in one transaction
        (`_flush_gathered`). The commit is the same either way, so the durability contract
        does not change.
        """
        if self.failing is not None:
            refusal = self._refusal()
            if refusal is not None:  # on the loop's thread: tell the caller at once
                _settle([(item.future, None, refusal)])
                return
        if self._gathered:  # keep the order: behind what is already gathered
            self._gather(item)
        elif not self._can_inline():
            self._enqueue([item])
        elif others:
            self._gather(item)
        elif not self._commit_here([item]):
            self._enqueue([item])

    def _can_inline(self) -> bool:
        """Alone on the file, and nothing handed to the writer thread is still uncommitted
        (an inline write must not overtake one the thread has dequeued but not begun)."""
        return self._conn is not None and not self._stopping and self._alone and not self._handed

    def _enqueue(self, items: list[_Write | _Job]) -> None:
        with self._handed_lock:
            self._handed += len(items)
        for item in items:
            self._queue.put(item)

    def _done_with(self, count: int) -> None:
        """The writer thread has committed ``count`` queued items and posted their results."""
        with self._handed_lock:
            self._handed -= count

    def _gather(self, item: _Write | _Job) -> None:
        self._gathered.append(item)
        if len(self._gathered) == 1:
            item.loop.call_soon(self._flush_gathered)

    def _flush_gathered(self) -> None:
        """On the loop's next pass: commit what was gathered in one transaction, here, or
        hand it to the writer thread if it is busy (or this process is not alone)."""
        batch, self._gathered = self._gathered, []
        if not batch:  # `stop` handed it to the writer already
            return
        try:
            if not self._can_inline() or not self._commit_here(batch):
                self._enqueue(batch)
        except BaseException as exc:  # a callback's error would reach no caller: fail them
            error = as_storage_error(exc, f"cannot commit {len(batch)} writes")
            _settle([(item.future, None, error) for item in batch])
            raise

    def shrink_memory(self) -> bool:
        """Drop the writer connection's unused cache pages (``PRAGMA shrink_memory``), on the
        calling thread; False, having done nothing, if a transaction holds the connection."""
        conn = self._conn
        if conn is None or not self._lock.acquire(blocking=False):
            return False
        try:
            conn.execute("PRAGMA shrink_memory")
        except sqlite3.Error:
            return False
        finally:
            self._lock.release()
        return True

    def _commit_here(self, batch: list[_Write | _Job]) -> bool:
        """Commit ``batch`` on the calling (event-loop) thread; False, having done nothing,
        if the writer thread or another process holds the write lock."""
        conn = self._conn
        if conn is None or self.file_problem() is not None:
            return False  # the writer thread fails them, saying why
        if not self._lock.acquire(blocking=False):
            return False
        try:
            try:  # the busy timeout is 0 on this connection (see `begin`): this never waits
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error:  # another process holds the lock (or worse): let it queue,
                return False  # the writer thread waits for the lock and reports failures
            if conn.execute("PRAGMA data_version").fetchone()[0] != self._seen_version:
                # Another process has written since this one last looked (it has just
                # started, before a heartbeat could tell): take turns through the queue
                # until a heartbeat finds this process alone again. Inline, it would take
                # the lock back after every commit and could starve the other one.
                conn.execute("ROLLBACK")
                self._alone = False
                return False
            results = self._run_batch(conn, batch)
            self.commits += 1
            self._note(results)
        finally:
            no_transaction_left(conn)
            self._lock.release()
        # On the loop thread already; a cancelled caller has stopped waiting.
        _settle([(item.future, *result) for item, result in zip(batch, results, strict=True)])
        return True

    async def stop(self) -> None:
        """Commit everything queued before this call, then end the thread."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        batch, self._gathered = self._gathered, []
        self._enqueue(batch)  # gathered writes commit before the stop, on the writer
        self._queue.put(_Stop(future, loop))
        await future
        self._thread.join()

    def _main(self) -> None:
        try:
            conn = self._connect_and_migrate()
        except Exception as exc:
            self._ready.set_exception(as_storage_error(exc, f"cannot migrate {self._path!r}"))
            return
        self._conn = conn
        self._heartbeat(conn)
        self._ready.set_result(None)
        self._serve(conn)

    def _connect_and_migrate(self) -> sqlite3.Connection:
        conn = connect(self._path, shared=True)
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # see _checkpoint
        if self._path != ":memory:" and not self._path.startswith("file:"):
            found = os.stat(self._path)
            self._identity = (found.st_dev, found.st_ino, bool(found.st_mode & 0o222))
        try:
            apply_migrations(conn, load_migrations(), lambda: to_ms(self._clock.now()))
            conn.execute("PRAGMA busy_timeout = 0")  # see begin
            # A gathered commit runs in a savepoint (`_run_together`), so every page it
            # changes is first copied into a sub-journal, which SQLite spills to a temporary
            # file past 64 KiB: opened, written page by page and unlinked on the event
            # loop's thread, about once a dozen requests at concurrency 32. In memory it is
            # a copy. Set after the migrations, whose large transactions may keep spilling.
            conn.execute("PRAGMA temp_store = MEMORY")
        except BaseException:
            conn.close()
            raise
        return conn

    def _serve(self, conn: sqlite3.Connection) -> None:
        stop: _Stop | None = None
        while stop is None:
            batch, stop = self._next_batch()
            if batch:
                try:
                    self._commit(conn, batch)
                finally:
                    self._done_with(len(batch))
                self._batches += 1
                if self._batches % CHECKPOINT_EVERY_BATCHES == 0:
                    self._checkpoint(conn)
                if time.monotonic() - self._last_heartbeat > IDLE_CHECKPOINT_S:
                    self._heartbeat(conn)
            elif stop is None:
                self._heartbeat(conn)
                self._checkpoint(conn)
        self._stopping = True
        with self._lock:
            self._checkpoint(conn, locked=True)
            with contextlib.suppress(sqlite3.Error):
                begin(conn)
                conn.execute("DELETE FROM writers WHERE owner = ?", (self._owner,))
                conn.execute("COMMIT")
            conn.close()
            self._conn = None
        _post(stop.loop, [(stop.future, None, None)])

    def _heartbeat(self, conn: sqlite3.Connection) -> None:
        """Say this process is here, and learn whether any other is (inline writes are
        only for a process alone: two processes both writing inline would not take turns)."""
        now = int(time.time() * 1000)  # liveness is real time, whatever clock tests inject
        self._last_heartbeat = time.monotonic()
        problem = self.file_problem()
        if problem is not None:
            self._fail(f"the database file {self._path!r} {problem}")
            self._alone = False
            return
        with self._lock:
            try:
                begin(conn)
                try:
                    conn.execute(
                        "INSERT INTO writers (owner, seen_ms) VALUES (?, ?) "
                        "ON CONFLICT (owner) DO UPDATE SET seen_ms = excluded.seen_ms",
                        (self._owner, now),
                    )
                    (other_writers,) = conn.execute(
                        "SELECT COUNT(*) FROM writers WHERE owner != ? AND seen_ms > ?",
                        (self._owner, now - WRITER_STALE_MS),
                    ).fetchone()
                    (self._seen_version,) = conn.execute("PRAGMA data_version").fetchone()
                    conn.execute("COMMIT")
                finally:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
            except sqlite3.Error as exc:
                if isinstance(exc, sqlite3.OperationalError):
                    self._fail(str(exc))
                self._alone = False
                return
            self._recovered()
            self._alone = other_writers == 0

    def _checkpoint(self, conn: sqlite3.Connection, *, locked: bool = False) -> None:
        """Copy the WAL into the database while idle, off the event loop (automatic
        checkpoints are off on this connection: they would fsync in whichever thread
        committed, the event loop's included)."""
        if not locked and not self._lock.acquire(blocking=False):
            return
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            log.warning("WAL checkpoint failed; it will be retried", exc_info=True)
        finally:
            if not locked:
                self._lock.release()

    def _next_batch(self) -> tuple[list[_Write | _Job], _Stop | None]:
        """Block for one write (checkpointing every idle second), then take whatever else
        is already queued."""
        batch: list[_Write | _Job] = []
        try:
            item = self._queue.get(timeout=IDLE_CHECKPOINT_S)
        except queue.Empty:
            return batch, None
        while True:
            if isinstance(item, _Stop):
                return batch, item
            batch.append(item)
            if len(batch) >= MAX_BATCH:
                return batch, None
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, None

    def _commit(self, conn: sqlite3.Connection, batch: list[_Write | _Job]) -> None:
        """One transaction for the whole batch; callers hear back only after COMMIT."""
        results: list[tuple[Any, StorageError | None]]
        with self._lock:
            refusal = self._refusal()
            if refusal is not None:
                self._finish(batch, [(None, refusal)] * len(batch))
                return
            try:
                begin(conn)
            except sqlite3.Error as exc:
                error = as_storage_error(exc, f"cannot commit {len(batch)} writes")
                results = [(None, error)] * len(batch)
                self._note(results)
                self._finish(batch, results)
                return
            try:
                results = self._run_batch(conn, batch)
                self.commits += 1
                self._note(results)
            finally:
                no_transaction_left(conn)
        self._finish(batch, results)

    @staticmethod
    def _run_batch(
        conn: sqlite3.Connection, batch: list[_Write | _Job]
    ) -> list[tuple[Any, StorageError | None]]:
        """Inside an open ``BEGIN IMMEDIATE``: run every item, then COMMIT."""
        if len(batch) == 1:
            item = batch[0]
            if isinstance(item, _Job):
                return [_run_alone(conn, item)]
            return [(None, _run_write_alone(conn, item))]
        try:
            results = _run_together(conn, batch)
            conn.execute("COMMIT")
        except Exception as exc:  # fail every caller loudly rather than leave them hanging
            if not isinstance(exc, sqlite3.Error):
                log.exception("SQLite writer failed on a batch of %d writes", len(batch))
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = as_storage_error(exc, f"cannot commit {len(batch)} writes")
            results = [(None, error)] * len(batch)
        return results

    @staticmethod
    def _finish(batch: list[_Write | _Job], results: list[tuple[Any, StorageError | None]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for write, (result, write_error) in zip(batch, results, strict=True):
            by_loop.setdefault(write.loop, []).append((write.future, result, write_error))
        for loop, outcomes in by_loop.items():  # one wake-up per loop per batch
            _post(loop, outcomes)


def _run_write_alone(conn: sqlite3.Connection, write: _Write) -> StorageError | None:
    """A write with the transaction to itself (inline): its statement, then COMMIT."""
    try:
        error = _execute(conn, write)
        if error is None:
            conn.execute("COMMIT")
            return None
    except Exception as exc:
        if not isinstance(exc, sqlite3.Error):
            log.exception("SQLite writer failed on a write: %s", write.what)
        error = as_storage_error(exc, f"cannot store {write.what}")
    if conn.in_transaction:
        conn.execute("ROLLBACK")
    return error


def _execute(conn: sqlite3.Connection, write: _Write) -> StorageError | None:
    """Run one statement inside the batch. A constraint failure rolls back only it."""
    try:
        cursor = conn.execute(write.sql, write.params)
    except sqlite3.IntegrityError as exc:
        return StorageError(f"cannot store {write.what}: {exc}")
    if write.must_change_a_row and cursor.rowcount == 0:
        return StorageError(f"cannot store {write.what}: it does not exist")
    return None


def _run_alone(conn: sqlite3.Connection, job: _Job) -> tuple[Any, StorageError | None]:
    """A job that has the transaction to itself needs no savepoint: on failure the whole
    transaction is its own, and rolls back; the caller hears the same error as in a batch."""
    try:
        result = job.work(conn)
        conn.execute("COMMIT")
    except Exception as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if not isinstance(exc, sqlite3.Error | StorageError):
            log.exception("SQLite writer job failed: %s", job.what)
        return None, as_storage_error(exc, f"cannot store {job.what}")
    return result, None


def _run_together(
    conn: sqlite3.Connection, batch: list[_Write | _Job]
) -> list[tuple[Any, StorageError | None]]:
    """Run a batch's items inside its transaction, each one's failure rolling back only its
    own changes. Optimistically first, in one savepoint for the whole batch: jobs almost
    never fail, and a savepoint of its own per job costs two statements (``SAVEPOINT``,
    ``RELEASE``) for every request of a gathered commit. If a job raises, the whole batch
    is rolled back to that savepoint and run again carefully, each job in its own savepoint
    (`_run_job`); its jobs then run a second time, which they allow: each does its work on
    the connection alone, and what it keeps in memory (`SqliteFile.held`) is a hint that
    the rows overrule. A statement (`_Write`) that fails fails alone (SQLite rolls back a
    failed statement), so it needs no savepoint either way."""
    conn.execute("SAVEPOINT batch")
    results: list[tuple[Any, StorageError | None]] = []
    for item in batch:
        if isinstance(item, _Write):
            results.append((None, _execute(conn, item)))
            continue
        try:
            results.append((item.work(conn), None))
        except Exception:
            conn.execute("ROLLBACK TO batch")
            conn.execute("RELEASE batch")
            return [_run_one(conn, w) for w in batch]
    conn.execute("RELEASE batch")
    return results


def _run_one(conn: sqlite3.Connection, item: _Write | _Job) -> tuple[Any, StorageError | None]:
    return _run_job(conn, item) if isinstance(item, _Job) else (None, _execute(conn, item))


def _run_job(conn: sqlite3.Connection, job: _Job) -> tuple[Any, StorageError | None]:
    """Run one job inside the batch, in a savepoint: a failure rolls back only its work.
    A failure that leaves the savepoint unusable (I/O error) fails the whole batch."""
    conn.execute("SAVEPOINT job")
    try:
        result = job.work(conn)
    except Exception as exc:
        conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")
        if not isinstance(exc, sqlite3.Error | StorageError):
            log.exception("SQLite writer job failed: %s", job.what)
        return None, as_storage_error(exc, f"cannot store {job.what}")
    conn.execute("RELEASE job")
    return result, None
