"""One PostgreSQL database, shared by the key store, ledger and counter store of a gateway:
the connection pool, migrations at open, ledger partitions, and the one place where
driver errors become `StorageError` (so that an outage takes the outage policy's path).

Driver: asyncpg, chosen by measurement (`benchmarks/postgres_drivers.py`) against psycopg 3
(async, psycopg_pool) on the same server, side by side (docs/storage.md): a one-row SELECT
p50 228 us vs 278 us, a 500-row ``unnest`` INSERT p50 13.9 ms vs 19.9 ms; a two-statement
transaction cost the same (4.0 ms, dominated by the server's commit fsync).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Any, TypeAlias, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from spendgate.clock import Clock, to_ms
from spendgate.errors import StorageError
from spendgate.storage.postgres import partitions
from spendgate.storage.postgres.migrate import apply_migrations, load_migrations
from spendgate.storage.postgres.settings import PostgresSettings

log = logging.getLogger("spendgate.storage.postgres")

T = TypeVar("T")

# A connection of the pool (what `run` and `transaction` hand to their work).
Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

MAINTAIN_EVERY_S = 3600.0  # partitions ahead and retention, checked this often
RETENTION_CHUNK = 10_000  # rows one retention DELETE removes at most (one statement each)

# What retention deletes besides the partitions: each table with its time column (indexed).
_EXPIRING = (
    ("ledger_ids", "ts"),
    ("ledger_hourly", "hour_ms"),
    ("savings_hourly", "hour_ms"),
    ("shadow_hourly", "hour_ms"),
    ("blocks_hourly", "hour_ms"),
    ("refusals_hourly", "hour_ms"),
    ("fallback_rows", "ts"),
    ("refusals_latest", "ts"),
)
_RETRIES = 3  # a transaction chosen as a deadlock or serialization victim is rerun
_RETRYABLE = (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
# What says the server cannot be reached or the connection broke: an outage.
_UNREACHABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.QueryCanceledError,
)


# What a health check asks (one statement, as `SELECT 1` was): can this session write?
_WRITABLE = "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'"


def lock_key(*parts: str) -> int:
    """A stable signed 64-bit advisory-lock key for a name (a counter, a loop pair)."""
    digest = hashlib.blake2b("\0".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def is_outage(error: BaseException) -> bool:
    """Whether a StorageError says the server could not be reached or the connection broke
    (so whether a COMMIT sent then took effect is unknown)."""
    return isinstance(error.__cause__, _UNREACHABLE)


def storage_error(exc: BaseException, what: str) -> StorageError:
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, _UNREACHABLE):
        detail = str(exc) or type(exc).__name__
        return StorageError(f"PostgreSQL storage is unavailable ({what}): {detail}")
    return StorageError(f"cannot store {what}: {exc}")


class PgDatabase:
    """The pool of one gateway process, opened once and closed once."""

    def __init__(self, url: str, clock: Clock, settings: PostgresSettings) -> None:
        self._url = url
        self.clock = clock
        self.settings = settings
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._closed = False
        self._months: set[partitions.Month] = set()  # ledger partitions known to exist
        self._maintainer: asyncio.Task[None] | None = None
        self.ledger_types: dict[str, str] = {}  # ledger column -> its SQL type

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, migrate (under the migration lock), create the partitions ahead."""
        if self._pool is not None or self._closed:
            raise StorageError("PostgreSQL storage can be opened only once")
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=min(self.settings.pool_min, self.settings.pool_max),
                max_size=self.settings.pool_max,
                timeout=self.settings.connect_timeout_s,
                command_timeout=self.settings.statement_timeout_s,
                server_settings={
                    "application_name": "spendgate",
                    "synchronous_commit": "on" if self.settings.synchronous_commit else "off",
                },
                reset=_keep_session,
            )
        except Exception as exc:
            if isinstance(exc, _UNREACHABLE):
                raise storage_error(exc, "a connection") from exc
            # the server answered and refused: no such database, user or password
            raise StorageError(f"cannot connect to PostgreSQL: {exc}") from exc
        try:
            async with self._pool.acquire(timeout=self.settings.connect_timeout_s) as conn:
                await apply_migrations(conn, load_migrations(), lambda: to_ms(self.clock.now()))
                self.ledger_types = await _column_types(conn, "ledger")
            await self.maintain()
        except BaseException as exc:
            await self._pool.close()
            self._pool, self._closed = None, True
            if isinstance(exc, Exception):
                raise storage_error(exc, "the schema") from exc
            raise
        self._maintainer = asyncio.get_running_loop().create_task(self._maintain_forever())

    async def close(self) -> None:
        pool, self._pool, self._closed = self._pool, None, True
        if self._maintainer is not None:
            self._maintainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintainer
        if pool is not None:
            await pool.close()

    def require(self) -> asyncpg.Pool[asyncpg.Record]:
        if self._pool is None:
            state = "closed" if self._closed else "not open"
            raise StorageError(f"PostgreSQL storage is {state}")
        return self._pool

    async def check(self) -> None:
        """Whether the server takes writes, as every request needs: a standby (a URL left
        on a primary demoted by a failover) or a read-only database answers a SELECT."""
        writable = await self.run(lambda conn: conn.fetchval(_WRITABLE), "a health check")
        if not writable:
            raise StorageError(
                "PostgreSQL storage takes no writes (a standby, or a read-only database)"
            )

    # -- running work ------------------------------------------------------------------

    async def run(self, work: Callable[[Conn], Awaitable[T]], what: str) -> T:
        """``work`` on a pooled connection, outside a transaction (one statement)."""
        pool = self.require()
        try:
            async with pool.acquire(timeout=self.settings.connect_timeout_s) as conn:
                return await work(conn)
        except (StorageError, ValueError):
            raise
        except Exception as exc:
            raise storage_error(exc, what) from exc

    async def statement(self, work: Callable[[Conn], Awaitable[T]], what: str) -> T:
        """``work``, one statement, on a pooled connection outside a transaction: the
        statement is its own transaction (one round trip, where BEGIN and COMMIT around it
        are two more); rerun, as `transaction`, if the server picked it as a deadlock
        victim."""
        return await self._retried(work, what, in_transaction=False)

    async def transaction(self, work: Callable[[Conn], Awaitable[T]], what: str) -> T:
        """``work`` in one transaction (READ COMMITTED); rerun if the server picked it as a
        deadlock victim. An error inside rolls everything back."""
        return await self._retried(work, what, in_transaction=True)

    async def _retried(
        self, work: Callable[[Conn], Awaitable[T]], what: str, *, in_transaction: bool
    ) -> T:
        pool = self.require()
        for attempt in range(_RETRIES):
            try:
                async with pool.acquire(timeout=self.settings.connect_timeout_s) as conn:
                    if not in_transaction:
                        return await work(conn)
                    async with conn.transaction():
                        return await work(conn)
            except _RETRYABLE:
                if attempt == _RETRIES - 1:
                    raise StorageError(f"cannot store {what}: lock conflicts persisted") from None
            except (StorageError, ValueError):
                raise
            except Exception as exc:
                raise storage_error(exc, what) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    # -- ledger partitions -------------------------------------------------------------

    async def ensure_months(self, months: Iterable[partitions.Month]) -> None:
        """Create the ledger partitions of ``months`` that this process has not seen."""
        missing = sorted(set(months) - self._months)
        if not missing:
            return

        async def create(conn: Conn) -> None:
            # Two gateways creating one partition at once would collide in the catalog.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key("partitions"))
            for month in missing:
                await conn.execute(partitions.create_sql(month))

        await self.transaction(create, "ledger partitions")
        self._months.update(missing)

    def forget_months(self) -> None:
        """Another process dropped partitions: look again before the next insert."""
        self._months.clear()

    async def existing_months(self) -> list[partitions.Month]:
        rows = await self.run(
            lambda conn: conn.fetch(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'ledger'::regclass"
            ),
            "a partition listing",
        )
        return sorted(m for m in (partitions.parse(row[0]) for row in rows) if m is not None)

    async def maintain(self) -> list[partitions.Month]:
        """Create this month's partition and those ahead; drop those past retention (and
        their request ids and rollup hours). The months dropped."""
        now = self.clock.now()
        self.forget_months()
        await self.ensure_months(partitions.wanted(now, self.settings.partitions_ahead))
        retention = self.settings.retention_months
        dropped = partitions.expired(await self.existing_months(), now, retention)
        if not dropped or retention is None:
            return dropped
        cutoff = partitions.first_kept_ms(now, retention)
        await self._delete_expired(cutoff)

        async def drop(conn: Conn) -> None:
            # The rows first, the partitions last: dropping a partition takes an ACCESS
            # EXCLUSIVE lock on the whole ledger until COMMIT, so every gateway's ledger
            # writes and reports wait while it is held. Taken before the deletes (a
            # month of request ids), it held them for as long as those took. The rows
            # went in chunks just before (`_delete_expired`); these deletes take only
            # those written since (a row replayed into a dropped month).
            for table, column in _EXPIRING:
                await conn.execute(f"DELETE FROM {table} WHERE {column} < $1", cutoff)  # noqa: S608
            await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key("partitions"))
            for month in dropped:
                await conn.execute(f"DROP TABLE IF EXISTS {partitions.name(month)}")

        await self.transaction(drop, "ledger retention")
        self.forget_months()
        log.info("dropped ledger partitions past retention", extra={"months": dropped})
        return dropped

    async def _delete_expired(self, cutoff: int) -> None:
        """Delete the request ids and rollup rows before ``cutoff`` in chunks of at most
        `RETENTION_CHUNK` rows, each its own statement and transaction. One DELETE of a
        month of request ids (millions at scale) ran past the statement timeout
        (`storage.postgres.statement_timeout_s`), and retention failed every hour, for
        ever."""
        for table, column in _EXPIRING:
            sql = (  # oldest first, along the time index: a plain scan walks the dead rows again
                f"DELETE FROM {table} WHERE {column} < $1 AND ctid = ANY(ARRAY("  # noqa: S608
                f"SELECT ctid FROM {table} WHERE {column} < $1 ORDER BY {column} LIMIT $2))"
            )
            while await self.run(partial(_delete_chunk, sql, cutoff), "ledger retention"):
                pass

    async def _maintain_forever(self) -> None:
        while True:
            await asyncio.sleep(MAINTAIN_EVERY_S)
            try:
                await self.maintain()
            except StorageError as exc:
                log.warning("ledger partition upkeep failed; retried later: %s", exc)


async def _delete_chunk(sql: str, cutoff: int, conn: Conn) -> bool:
    """One chunk of `PgDatabase._delete_expired`; whether a full one went (more may wait)."""
    status = await conn.execute(sql, cutoff, RETENTION_CHUNK)
    return int(status.rsplit(" ", 1)[-1]) >= RETENTION_CHUNK


async def _keep_session(conn: Conn) -> None:
    """What a connection goes back to the pool with: as it is. asyncpg's default reset
    (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``) is one more round trip
    at the end of every statement and transaction, on the request path; spendgate leaves
    nothing in a session to reset: its advisory locks are transaction-scoped (the migration
    lock is released explicitly), and it opens no cursors, listens to nothing and sets no
    session settings. A transaction left open is still rolled back by asyncpg first."""


async def _column_types(conn: Conn, table: str) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
        table,
    )
    found: dict[str, Any] = {row[0]: row[1] for row in rows}
    return found
