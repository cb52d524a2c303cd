"""Both settlement halves in one SQLite transaction: the ledger row and the counters live
in the same file, so a request's row and its reservation's end commit together (one writer
job). The results are those of the two halves (`spendgate.storage.stores.Storage`): a row
already there for the request stays, and the counters are charged what it says."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from functools import partial

from spendgate.clock import to_ms
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.settlement import lapsed_row, row_amounts
from spendgate.storage.base import EXPIRE_BATCH, StoredCounter
from spendgate.storage.sqlite import counters_sql as work
from spendgate.storage.sqlite.file import Held, SqliteFile
from spendgate.storage.sqlite.ledger import insert_row, row_of


def _in_force(
    conn: sqlite3.Connection, counters: Sequence[StoredCounter], row: LedgerRow
) -> tuple[LedgerRow, tuple[int, ...] | None]:
    """Write ``row`` unless its request has one; the row in force, and the amounts it
    charges when it is not ``row`` (None: charge what the caller computed)."""
    if insert_row(conn, row):
        return row, None
    existing = row_of(conn, row.request_id)
    assert existing is not None
    return existing, row_amounts([c[3] for c in counters], existing)


def settle_work(
    reservation_id: str,
    amounts: Sequence[int],
    row: LedgerRow,
    held: Held,
    conn: sqlite3.Connection,
) -> bool:
    counters = work.claim(conn, reservation_id, held, amounts)
    if counters is None:
        return False
    _, charged = _in_force(conn, counters, row)
    if counters:
        work.charge(conn, counters, charged or amounts)
    return True


def sweep_work(now_ms: int, held: Held, conn: sqlite3.Connection) -> tuple[int, list[LedgerRow]]:
    """Settle one batch of lapsed reservations: how many were found, the rows in force."""
    found = work.lapsed(conn, now_ms, EXPIRE_BATCH)
    done = []
    for item in found:
        counters = work.claim(conn, item.reservation_id, held, None)
        if counters is None:
            continue
        row = lapsed_row(item.template, item.worst, item.ceiling)
        in_force, charged = _in_force(conn, counters, row)
        if counters:
            work.charge(conn, counters, charged or row_amounts([c[3] for c in counters], row))
        done.append(in_force)
    return len(found), done


class SqliteJoint:
    def __init__(self, file: SqliteFile) -> None:
        self._file = file

    async def settle(self, reservation_id: str, amounts: Sequence[int], row: LedgerRow) -> bool:
        """A caller cancelled while waiting does not take the settlement back."""
        job = partial(settle_work, reservation_id, tuple(amounts), row, self._file.held)
        others = len(self._file.held) > 1  # live reservations besides this one
        return await self._file.submit(job, f"settlement of {reservation_id!r}", others)

    async def sweep(self, now: datetime) -> list[LedgerRow]:
        now_ms = to_ms(now)
        done: list[LedgerRow] = []
        while True:
            job = partial(sweep_work, now_ms, self._file.held)
            found, settled = await self._file.submit(job, "lapse")
            done.extend(settled)
            if found < EXPIRE_BATCH:
                return done
