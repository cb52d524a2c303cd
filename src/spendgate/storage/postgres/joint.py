"""Both settlement halves in one PostgreSQL transaction, when the ledger and the counters
share the database: a request's row and its reservation's end commit together. Results
are those of the two halves (`spendgate.storage.stores.Storage`): a row already there for
the request stays, and the counters are charged what it says.

The sweep claims lapsed reservations with ``FOR UPDATE SKIP LOCKED``: gateways sweeping
at once take disjoint batches, and a reservation being settled right now is skipped (its
settler deletes it), so each lapsed reservation is settled exactly once."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from spendgate.clock import to_ms
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.settlement import lapsed_row, row_amounts
from spendgate.storage.base import EXPIRE_BATCH, Lapsed
from spendgate.storage.codec import load_counters
from spendgate.storage.plans import check_amounts
from spendgate.storage.postgres import counters_sql as work
from spendgate.storage.postgres import reports
from spendgate.storage.postgres.counters import lapsed_of
from spendgate.storage.postgres.database import Conn, PgDatabase
from spendgate.storage.postgres.ledger import ensure_for, insert_rows
from spendgate.storage.sqlite.rows import LEDGER


async def _row_in_force(conn: Conn, row: LedgerRow) -> LedgerRow:
    found = await conn.fetchrow(reports.ONE_ROW, row.request_id)
    return row if found is None else LEDGER.load(tuple(found))


class PgJoint:
    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def settle(self, reservation_id: str, amounts: Sequence[int], row: LedgerRow) -> bool:
        await ensure_for(self._db, [row])

        async def work_(conn: Conn) -> bool:
            found = await conn.fetchval(work.TAKE, reservation_id)
            if found is None:
                return False
            counters = load_counters(found)
            check_amounts(reservation_id, counters, amounts)
            await work.lock_counters(conn, counters)
            [added] = await insert_rows(self._db, conn, [row])
            charged = tuple(amounts)
            if not added:
                existing = await _row_in_force(conn, row)
                charged = row_amounts([c[3] for c in counters], existing)
            await work.charge(conn, counters, charged)
            return True

        return await self._db.transaction(work_, f"settlement of {reservation_id!r}")

    async def sweep(self, now: datetime) -> list[LedgerRow]:
        now_ms = to_ms(now)
        done: list[LedgerRow] = []
        while True:
            found, settled = await self._db.transaction(
                lambda conn: self._sweep_batch(conn, now_ms), "lapsed reservations"
            )
            done.extend(settled)
            if found < EXPIRE_BATCH:
                return done

    async def _sweep_batch(self, conn: Conn, now_ms: int) -> tuple[int, list[LedgerRow]]:
        batch = [lapsed_of(r) for r in await conn.fetch(work.LAPSED_LOCKED, now_ms, EXPIRE_BATCH)]
        if not batch:
            return 0, []
        rows = [lapsed_row(item.template, item.worst, item.ceiling) for item in batch]
        await ensure_for(self._db, rows)  # (another connection; usually known already)
        await conn.execute(
            "DELETE FROM reservations WHERE id = ANY($1::text[])",
            [item.reservation_id for item in batch],
        )
        await work.lock_counters(conn, [c for item in batch for c in item.counters])
        added = await insert_rows(self._db, conn, rows)
        done = []
        for item, row, fresh in zip(batch, rows, added, strict=True):
            in_force = row if fresh else await _row_in_force(conn, row)
            await work.charge(conn, item.counters, _amounts(item, in_force))
            done.append(in_force)
        return len(batch), done


def _amounts(item: Lapsed, row: LedgerRow) -> tuple[int, ...]:
    return row_amounts([c[3] for c in item.counters], row)
