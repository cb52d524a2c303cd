"""The ledger in PostgreSQL: rows inserted in batches, idempotent by request id, into
monthly partitions; reports as single statements on pooled connections.

Group commit: `record` and `append` queue their rows and one flusher task per process
inserts everything queued in one statement (`insert_rows`, its own transaction), then wakes
each caller. Idle, a row goes alone; under load one commit (one fsync on the server)
carries hundreds. The batch keeps the callers' order, so rows of one batch are numbered in
the order they were given (the ``id`` that breaks ties of ``ts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from spendgate.clock import from_ms, to_ms
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.marks import Overruns
from spendgate.domain.refusals import CallerModel, RefusalCombo
from spendgate.domain.savings import SavingsBy, SavingsGroup, ShadowSavings
from spendgate.domain.totals import (
    BlockGroup,
    Bucket,
    GroupBy,
    UsageGroup,
    UsagePoint,
    UsageQuery,
    series_order,
)
from spendgate.errors import StorageError
from spendgate.storage.postgres import marks_sql, partitions, report_rollups, reports, rollup_sql
from spendgate.storage.postgres.database import Conn, PgDatabase, storage_error
from spendgate.storage.sqlite.rows import LEDGER

log = logging.getLogger("spendgate.storage.postgres")

MAX_BATCH = 1_000  # rows per statement and commit
REPORT_WORK_MEM = "64MB"  # a savings report's sort and hash memory (the session's own)


# The hourly usage rollup (migration 0002): adds the rows of a CTE named ``inserted``.
_ROLLUP_KEYS = 'hour_ms, key_id, "user", service, team, org, served_model, provider'
_ROLLUP_SUMS = (
    "answered, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, "
    "reasoning_tokens, cost_nanos, errors, estimated, blocked, would_cost_nanos, retries, "
    "retry_cost_nanos"
)
ROLLUP_INSERTED = (
    f"INSERT INTO ledger_hourly ({_ROLLUP_KEYS}, {_ROLLUP_SUMS}) "  # noqa: S608
    'SELECT ts - ts % 3600000, key_id, "user", service, team, org, served_model, provider, '
    "COUNT(*) FILTER (WHERE blocked_by IS NULL), SUM(input_tokens), SUM(cached_input_tokens), "
    "SUM(cache_write_tokens), SUM(output_tokens), SUM(reasoning_tokens), SUM(cost_nanos), "
    "COUNT(*) FILTER (WHERE status >= 400 AND blocked_by IS NULL), "
    "COUNT(*) FILTER (WHERE usage_estimated), COUNT(*) FILTER (WHERE blocked_by IS NOT NULL), "
    "SUM(would_cost_nanos), COUNT(*) FILTER (WHERE retry_count > 0 AND blocked_by IS NULL), "
    "COALESCE(SUM(cost_nanos) FILTER (WHERE retry_count > 0), 0) "
    "FROM inserted GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 "
    # One order for the rollup rows' locks in every transaction (no deadlock cycles).
    'ORDER BY 1, key_id COLLATE "C", "user" COLLATE "C", service COLLATE "C", '
    'team COLLATE "C", org COLLATE "C", served_model COLLATE "C", provider COLLATE "C" '
    f"ON CONFLICT ({_ROLLUP_KEYS}) DO UPDATE SET "
    + ", ".join(
        f"{name} = ledger_hourly.{name} + excluded.{name}" for name in _ROLLUP_SUMS.split(", ")
    )
)


def _insert_sql(types: dict[str, str]) -> str:
    """One statement for a batch: request ids new to ``ledger_ids`` are recorded there,
    their rows inserted in the order given and added to the hourly rollup; returns the
    request ids inserted. Parameters: one array per ledger column, in `LEDGER.fields` order."""
    fields = LEDGER.fields
    arrays = ", ".join(f"${i}::{types[name]}[]" for i, name in enumerate(fields, start=1))
    names = ", ".join(f'"{name}"' for name in fields)
    values = ", ".join(f'r."{name}"' for name in fields)
    return (
        "WITH fresh AS (INSERT INTO ledger_ids (request_id, ts) "  # noqa: S608
        "SELECT * FROM unnest($1::text[], $2::bigint[]) "
        "ON CONFLICT (request_id) DO NOTHING RETURNING request_id), "
        f"inserted AS (INSERT INTO ledger ({names}) SELECT {values} "
        f"FROM unnest({arrays}) WITH ORDINALITY AS r({names}, n) "
        "WHERE r.request_id IN (SELECT request_id FROM fresh) ORDER BY r.n "
        "RETURNING *), "
        f"rolled AS ({ROLLUP_INSERTED}), {rollup_sql.ROLLUPS_INSERTED} "
        "SELECT request_id FROM inserted"
    )


# The ledger's text fields, read at once (`_storable`): a NUL in any of them is rare.
_TEXTS = operator.attrgetter(
    *(f.name for f in dataclasses.fields(LedgerRow) if f.type in ("str", "str | None"))
)


def _storable(row: LedgerRow) -> list[Any]:
    """A row's parameters, with every NUL character written ``\\x00`` (as
    `spendgate.text.escape` writes it): PostgreSQL's text cannot hold one, where SQLite's
    can, and a provider's error message may echo a client's value holding one (a role of
    ``"user\\u0000"``): the row, refused for ever, blocked the spool behind it."""
    params = LEDGER.params(row)
    if "\x00" in "\x01".join(filter(None, _TEXTS(row))):
        for index, value in enumerate(params):
            if isinstance(value, str):
                params[index] = value.replace("\x00", "\\x00")
    return params


async def insert_rows(db: PgDatabase, conn: Conn, rows: Sequence[LedgerRow]) -> list[bool]:
    """Insert ``rows`` on ``conn`` (in one statement, inside the caller's transaction if
    it has one) unless their request id has a row; for each, whether it was inserted. A
    request id twice in ``rows``: the first is the one inserted. The partitions the rows
    need must exist (`ensure_for`)."""
    seen: set[str] = set()
    first = []  # whether each row is the first of its request id in ``rows``
    for row in rows:
        first.append(row.request_id not in seen)
        seen.add(row.request_id)
    candidates = [row for row, is_first in zip(rows, first, strict=True) if is_first]
    columns = list(zip(*(_storable(row) for row in candidates), strict=True))
    sql = _insert_sql(db.ledger_types)
    inserted = {record[0] for record in await conn.fetch(sql, *columns)}
    return [
        is_first and row.request_id in inserted for row, is_first in zip(rows, first, strict=True)
    ]


async def ensure_for(db: PgDatabase, rows: Sequence[LedgerRow]) -> None:
    """The partitions of the rows' months exist (naive times refused before any IO)."""
    await db.ensure_months({partitions.month_of_ms(to_ms(row.ts)) for row in rows})


def is_missing_partition(exc: BaseException) -> bool:
    return isinstance(exc, asyncpg.CheckViolationError) and "no partition" in str(exc)


@dataclass(slots=True)
class _Queued:
    rows: Sequence[LedgerRow]
    future: asyncio.Future[list[bool]] = field(repr=False)


class PgLedger:
    def __init__(self, db: PgDatabase) -> None:
        self._db = db
        self._queue: list[_Queued] = []
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    # -- writes ------------------------------------------------------------------------

    async def record(self, row: LedgerRow) -> None:
        """Returns once the row's batch has committed. A row with a known request id is
        refused with StorageError (a double charge), never merged."""
        [added] = await self._submit([row])
        if not added:
            raise StorageError(
                f"cannot store ledger row {row.request_id!r}: its request id has a row"
            )

    async def append(self, rows: Sequence[LedgerRow]) -> list[bool]:
        return await self._submit(rows) if rows else []

    async def _submit(self, rows: Sequence[LedgerRow]) -> list[bool]:
        for row in rows:
            to_ms(row.ts)  # a naive time is refused before anything is queued
        if self._closed:
            raise StorageError("PostgreSQL storage is closed")
        self._db.require()
        future: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(rows, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return await asyncio.shield(future)  # a cancelled caller's row still commits

    async def _flush(self) -> None:
        while self._queue:
            batch: list[_Queued] = []
            size = 0
            while self._queue and (not batch or size + len(self._queue[0].rows) <= MAX_BATCH):
                item = self._queue.pop(0)
                batch.append(item)
                size += len(item.rows)
            await self._commit(batch)

    async def _commit(self, batch: list[_Queued]) -> None:
        rows = [row for item in batch for row in item.rows]
        try:
            added = await self._insert(rows)
        except Exception as exc:
            error = storage_error(exc, f"{len(rows)} ledger rows")
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        start = 0
        for item in batch:
            if not item.future.done():
                item.future.set_result(added[start : start + len(item.rows)])
            start += len(item.rows)

    async def _insert(self, rows: list[LedgerRow]) -> list[bool]:
        for attempt in range(2):
            await ensure_for(self._db, rows)
            try:
                # One statement (its CTEs record the ids, insert the rows and add them
                # to the rollup), atomic as its own transaction: one round trip.
                return await self._db.statement(
                    lambda conn: insert_rows(self._db, conn, rows), f"{len(rows)} ledger rows"
                )
            except StorageError as exc:
                if attempt or not is_missing_partition(exc.__cause__ or exc):
                    raise
                self._db.forget_months()  # dropped by another process's retention
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        """Commit everything queued, then refuse more."""
        self._closed = True
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher

    async def open(self) -> None:
        return None

    # -- reads -------------------------------------------------------------------------

    async def _fetch(self, sql: str, *params: object) -> list[asyncpg.Record]:
        result: list[asyncpg.Record] = await self._db.run(
            lambda conn: conn.fetch(sql, *params), "a ledger read"
        )
        return result

    async def _walk(self, sql: str, *params: object) -> list[asyncpg.Record]:
        """A statement of per-pair index walks (`rollup_sql.RECENT_OUTPUTS`, `MEDIANS`),
        planned without sorts: each walk reads its newest ``LIMIT`` rows in index order,
        partition by partition (an ordered Append), where the planner, underestimating a
        pair's rows, would read and sort all of its 30 days (7 s against 0.1 s for 400
        pairs at 10 M rows: docs/benchmarks.md)."""

        async def walk(conn: Conn) -> list[asyncpg.Record]:
            async with conn.transaction(readonly=True):
                await conn.execute("SET LOCAL enable_sort = off")
                return await conn.fetch(sql, *params)

        return await self._db.run(walk, "a ledger read")

    async def row(self, request_id: str) -> LedgerRow | None:
        found = await self._fetch(reports.ONE_ROW, request_id)
        return LEDGER.load(tuple(found[0])) if found else None

    async def usage(self, query: UsageQuery) -> list[UsageGroup]:
        since_ms, until_ms = to_ms(query.since), to_ms(query.until)
        first, last = reports.rolled_span(since_ms, until_ms)
        found = await self._fetch(reports.USAGE[query.group_by], since_ms, until_ms, first, last)
        return [UsageGroup(*row) for row in found]

    async def usage_series(
        self, since: datetime, until: datetime, bucket: Bucket, group_by: GroupBy
    ) -> list[UsagePoint]:
        since_ms, until_ms = to_ms(since), to_ms(until)
        first, last = reports.rolled_span(since_ms, until_ms)
        found = await self._fetch(
            reports.SERIES[group_by], since_ms, until_ms, first, last, bucket.ms
        )
        return series_order(UsagePoint(from_ms(row[0]), row[1], *row[2:]) for row in found)

    async def savings(
        self, since: datetime, until: datetime, by: SavingsBy
    ) -> tuple[list[SavingsGroup], list[ShadowSavings]]:
        since_ms, until_ms = to_ms(since), to_ms(until)
        span = (since_ms, until_ms, *reports.rolled_span(since_ms, until_ms))

        async def read(conn: Conn) -> tuple[list[SavingsGroup], list[ShadowSavings]]:
            # One snapshot for both; memory enough to aggregate the period's fallback
            # rows per request without spilling to disk (4 MB, the server's default, spilt
            # 7 MB at 10 M rows: docs/benchmarks.md).
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                await conn.execute(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'")
                groups = await conn.fetch(rollup_sql.SAVINGS[by.value], *span)
                shadows = await conn.fetch(rollup_sql.SHADOW_SAVINGS, *span)
            return [SavingsGroup(*r) for r in groups], [ShadowSavings(*r) for r in shadows]

        return await self._db.run(read, "a savings report")

    async def ledger(
        self, since: datetime, until: datetime, *, limit: int | None = None
    ) -> list[LedgerRow]:
        found = await self._fetch(reports.RANGE, to_ms(since), to_ms(until), limit)
        return [LEDGER.load(tuple(row)) for row in found]

    async def latest_of_key(self, key_id: str, limit: int) -> list[LedgerRow]:
        found = await self._fetch(reports.KEY_LATEST, key_id, limit)
        return [LEDGER.load(tuple(row)) for row in found]

    async def blocks(self, since: datetime, until: datetime) -> list[BlockGroup]:
        return await report_rollups.blocks(self._db, to_ms(since), to_ms(until))

    async def recent_outputs(
        self, pairs: Sequence[tuple[str, str]], since: datetime, until: datetime, limit: int
    ) -> dict[CallerModel, list[int]]:
        if not pairs:
            return {}
        ordered = sorted(set(pairs))
        keys, models = [key for key, _ in ordered], [model for _, model in ordered]
        found: dict[CallerModel, list[int]] = {}
        for key, model, output, _, _ in await self._walk(
            rollup_sql.RECENT_OUTPUTS,
            keys,
            models,
            sorted(set(models)),
            to_ms(since),
            to_ms(until),
            limit,
        ):
            found.setdefault((key, model), []).append(output)
        return found

    async def marked(self, since: datetime, until: datetime) -> list[LedgerRow]:
        found = await self._fetch(reports.MARKED, to_ms(since), to_ms(until))
        return [LEDGER.load(tuple(row)) for row in found]

    async def view_marks(
        self, since: datetime, recent: datetime, until: datetime
    ) -> list[LedgerRow]:
        span = (to_ms(since), to_ms(recent), to_ms(until))
        found = await self._fetch(marks_sql.VIEW_MARKS, *span)
        return [LEDGER.load(tuple(row)[:-1]) for row in found]

    async def overruns(self, since: datetime, until: datetime) -> Overruns:
        found = await self._fetch(marks_sql.OVERRUNS, to_ms(since), to_ms(until))
        return {(name, scope, member): int(count) for name, scope, member, count in found}

    async def output_medians(
        self, pairs: Sequence[tuple[str, str]], since: datetime, until: datetime, limit: int
    ) -> dict[CallerModel, int]:
        if not pairs:
            return {}
        ordered = sorted(set(pairs))
        models = [model for _, model in ordered]
        span = (to_ms(since), to_ms(until), limit)
        found = await self._walk(
            rollup_sql.MEDIANS, [key for key, _ in ordered], models, sorted(set(models)), *span
        )
        return {(key, model): value for key, model, value in found if value is not None}

    async def refusals(self, since: datetime, until: datetime) -> list[RefusalCombo]:
        return await report_rollups.refusals(self._db, to_ms(since), to_ms(until))

    async def roll_up(self) -> int:
        """Bring the refusal rollups up to date (`report_rollups.roll_up`); reports are
        exact whether or not it ran."""
        return await report_rollups.roll_up(self._db)

    async def check(self) -> None:
        await self._db.check()
