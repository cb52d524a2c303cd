"""The SQLite backend: the embedded default, one file, no other service.

Three connections, each owned by one thread, so that no connection is ever shared:

* **Writer thread** (``spendgate-sqlite-writer``): the only connection that writes. It
  applies migrations at `SqliteStorage.open`, then serves a queue of writes with *group
  commit*: it drains everything queued into one ``BEGIN IMMEDIATE`` transaction,
  commits, and only then resolves each caller's future (one
  ``loop.call_soon_threadsafe`` per batch). Under load one commit carries many rows;
  idle, a row commits alone. Budget work (`counters`, `joint`) runs there too, as
  *jobs*: a failing job rolls back only itself (the batch runs in one savepoint, and
  again with a savepoint per job if one fails), and its result is delivered after
  COMMIT. When the writer is idle and the process is alone on the file, a write or job
  commits *inline* instead, on the calling (event-loop) thread, in a transaction of its
  own (`_Writer._place`); while other requests are in flight, the writes of one turn of
  the event loop are gathered into one such transaction. The writer connection's busy
  timeout is 0, so that an inline ``BEGIN IMMEDIATE`` never waits (it queues instead);
  the writer thread waits for another process's lock itself (`_begin`).
* **Key reader** on the event-loop thread: `key_by_hash` runs on every request, so it is
  one indexed SELECT on a cached prepared statement, with no thread hop.
* **Report thread** (``spendgate-sqlite-reports``): `usage` and `ledger` scan time ranges
  that can span millions of rows; they run off the event loop so that a dashboard refresh
  never stalls the streams being proxied.

Durability: the database is in WAL mode with ``synchronous=NORMAL``. A commit appends to
the WAL file through the OS without an fsync, so `record` returning means the row survives
``kill -9`` of the gateway (the bytes are in the kernel's page cache and the WAL is
replayed on the next open); it may be lost to a power cut or a kernel crash, which is the
trade the `Storage` contract allows. fsyncs happen only at checkpoints, on the writer.

Values: times are integer epoch milliseconds UTC (sub-millisecond digits are dropped,
rounding toward the past); naive datetimes are refused with ValueError. Tags, allowed
models and metadata are JSON text; booleans are 0/1.

A duplicate ``request_id`` given to `record` is refused with `StorageError`: the gateway
makes one id per request, so a second row with the same id is a bug (or a double charge)
to surface, never to drop silently. Settlement's ledger half (`append`, and the joint
settlement) is idempotent by request id instead: a row already there stays as it was.

Modules: `connection` (pragmas, the write lock), `writer` (the writer thread and its group
commit), `file` (the connections of one file), `keys`, `ledger`, `counters` (with
`counters_sql`), `joint` (both settlement halves in one transaction), `rows` (codecs and
report statements), `migrate` and `migrations/`.
"""

from __future__ import annotations

from spendgate.clock import Clock, SystemClock
from spendgate.storage.admin import AdminStores
from spendgate.storage.sqlite.admin import SqliteAdmin
from spendgate.storage.sqlite.alerts import SqliteAlerts
from spendgate.storage.sqlite.counters import SqliteCounters
from spendgate.storage.sqlite.file import Connections, SqliteFile
from spendgate.storage.sqlite.joint import SqliteJoint
from spendgate.storage.sqlite.keys import SqliteKeys
from spendgate.storage.sqlite.ledger import SqliteLedger, rolling_up
from spendgate.storage.stores import Storage

__all__ = ["SqliteCounters", "SqliteKeys", "SqliteLedger", "SqliteStorage"]


class SqliteStorage(Storage):
    """Every role on one SQLite file. Build it unopened; `open` connects and migrates."""

    def __init__(self, path: str, *, clock: Clock | None = None) -> None:
        self.path = path
        self._file = SqliteFile(path, clock or SystemClock())
        admin = SqliteAdmin(self._file)
        ledger = SqliteLedger(self._file)
        super().__init__(
            SqliteKeys(self._file),
            ledger,
            SqliteCounters(self._file),
            parts=[self._file, rolling_up(ledger)],
            joint=SqliteJoint(self._file),
            admin=AdminStores(admin, admin),
            alerts=SqliteAlerts(self._file),
        )

    def __repr__(self) -> str:
        return f"SqliteStorage({self.path!r})"

    def _require(self) -> Connections:
        """The file's connections (for tests that look inside the backend)."""
        return self._file.require()
