"""The PostgreSQL backend: keys, the ledger and the live counters in one database, shared
by every gateway process and replica that points at it.

* `database`: the asyncpg pool, migrations at open (under an advisory lock), the monthly
  ledger partitions, and the mapping of driver errors to `StorageError` (an unreachable
  server is an outage: the outage policy of `spendgate.pipeline.outage` applies).
* `keys`, `ledger` (group commit of rows; reports as single statements), `counters`
  (reservations under per-counter advisory locks), `joint` (a request's row and its
  reservation's end in one transaction), `admin` (admin tokens and the audit log),
  `alerts` (alerts raised once, their leased outbox), `migrate` and `migrations/`,
  `partitions`.

Values are stored as on SQLite (epoch milliseconds, JSON text), through the same row
codecs (`spendgate.storage.sqlite.rows`). Durability: a write returns after COMMIT, which
the server makes durable as its ``synchronous_commit`` says (on by default: fsynced).
"""

from __future__ import annotations

from spendgate.clock import Clock, SystemClock
from spendgate.storage.admin import AdminStores
from spendgate.storage.postgres.admin import PgAdmin
from spendgate.storage.postgres.alerts import PgAlerts
from spendgate.storage.postgres.counters import PgCounters
from spendgate.storage.postgres.database import PgDatabase
from spendgate.storage.postgres.joint import PgJoint
from spendgate.storage.postgres.keys import PgKeys
from spendgate.storage.postgres.ledger import PgLedger
from spendgate.storage.postgres.report_rollups import rolling_up
from spendgate.storage.postgres.settings import PostgresSettings
from spendgate.storage.stores import Storage

__all__ = ["PgCounters", "PgKeys", "PgLedger", "PostgresSettings", "PostgresStorage"]


class PostgresStorage(Storage):
    """Every role on one PostgreSQL database. Build it unopened; `open` connects and
    migrates."""

    def __init__(
        self, url: str, *, clock: Clock | None = None, settings: PostgresSettings | None = None
    ) -> None:
        self.database = PgDatabase(url, clock or SystemClock(), settings or PostgresSettings())
        ledger = PgLedger(self.database)
        admin = PgAdmin(self.database)
        super().__init__(
            PgKeys(self.database),
            ledger,
            PgCounters(self.database),
            # closed in reverse: the job stops, then queued rows commit
            parts=[self.database, ledger, rolling_up(self.database)],
            joint=PgJoint(self.database),
            admin=AdminStores(admin, admin),
            alerts=PgAlerts(self.database),
        )

    def __repr__(self) -> str:
        return "PostgresStorage()"  # the URL may carry a password
