"""Rows charged first, written to the ledger a few at a time (`Shipper`).

A row whose counters were charged before its answer (`Storage.charge_first`, counters on
Redis) is already kept with them, due to a sweeper if its gateway never writes it: nothing
is lost if its ledger write comes later, and only `Gateway.settled` waits for it (admin
reads, the drain at shutdown). Written alone right after its answer, as it was, each row
put one ledger statement beside the client's next request at concurrency 1: the gateway
built and sent it as that request arrived, the server ran its insert and rollups and
flushed its commit on the same cores, and the gateway woke again when it committed,
wherever the next request then was (a slow commit woke it late, in the middle of that
request; docs/benchmarks.md, "The ledger's commit beside the next request"). So rows wait
here up to `LINGER_S` after the first of them, or until `BATCH` wait, or until someone
hurries them (`hurried`: `Gateway.settled`; `close`), then go in one `Ledger.append`: one
statement and one commit for every request of the span, and the wait for it on most
requests' paths gone.

What each row's caller gets is what `Storage.ship` promised one row: it returns once its
row is in the ledger (or the row in force there corrected the counters) and the counter
store is told to forget it; a StorageError (the ledger down) reaches each caller of the
batch, who spools the row (`spendgate.pipeline.outcome.record`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from spendgate.domain.ledger import LedgerRow
from spendgate.domain.settlement import row_amounts
from spendgate.errors import StorageError
from spendgate.storage.base import Ledger, RowKeeper, StoredCounter

LINGER_S = 0.05  # how long the first row of a batch waits for others
BATCH = 256  # rows that go at once without waiting longer


@dataclass(slots=True)
class _Waiting:
    reservation_id: str
    held: Sequence[StoredCounter]
    amounts: tuple[int, ...]
    row: LedgerRow
    done: asyncio.Future[None] = field(repr=False)


class Shipper:
    """The rows of one process's `Storage.ship` calls, written in batches."""

    def __init__(self, ledger: Ledger, keeper: RowKeeper, linger_s: float = LINGER_S) -> None:
        self._ledger = ledger
        self._keeper = keeper
        self._linger_s = linger_s
        self._waiting: list[_Waiting] = []
        self._timer: asyncio.TimerHandle | None = None
        self._writing: set[asyncio.Task[None]] = set()
        self._hurried = 0  # callers waiting for every row: none lingers meanwhile
        self._closed = False

    async def ship(
        self,
        reservation_id: str,
        held: Sequence[StoredCounter],
        amounts: tuple[int, ...],
        row: LedgerRow,
    ) -> None:
        """Returns once ``row`` is in the ledger (see the module docstring)."""
        loop = asyncio.get_running_loop()
        item = _Waiting(reservation_id, held, amounts, row, loop.create_future())
        self._waiting.append(item)
        if self._hurried or self._closed or len(self._waiting) >= BATCH:
            self.write_now()
        elif self._timer is None:
            self._timer = loop.call_later(self._linger_s, self.write_now)
        await asyncio.shield(item.done)  # a cancelled caller's row is still written

    def write_now(self) -> None:
        """Send what waits, without waiting longer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._waiting:
            return
        batch, self._waiting = self._waiting, []
        task = asyncio.get_running_loop().create_task(self._write(batch))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    @contextlib.contextmanager
    def hurried(self) -> Iterator[None]:
        """Within: no row waits for others (`Gateway.settled` waits for rows of requests
        answered, some of which may not have reached `ship` yet)."""
        self._hurried += 1
        self.write_now()
        try:
            yield
        finally:
            self._hurried -= 1

    async def close(self) -> None:
        """Write what waits and wait for every write; rows shipped later go at once."""
        self._closed = True
        self.write_now()
        while self._writing:
            await asyncio.wait(list(self._writing))

    async def _write(self, batch: list[_Waiting]) -> None:
        try:
            added = await self._ledger.append([item.row for item in batch])
        except asyncio.CancelledError:
            for item in batch:
                item.done.cancel()
            raise
        except Exception as exc:  # each caller spools its row (StorageError) or logs it
            for item in batch:
                _fail(item.done, exc)
            return
        written = []
        for item, fresh in zip(batch, added, strict=True):
            try:
                if not fresh:
                    await self._correct(item)
            except Exception as exc:
                _fail(item.done, exc)
                continue
            written.append(item.reservation_id)
        self._keeper.forget_soon(written)  # with the next charge: no round trip of its own
        for item in batch:
            if not item.done.done():
                item.done.set_result(None)

    async def _correct(self, item: _Waiting) -> None:
        """Another row for the request is in force (a sweeper wrote the lapsed lease's
        while this gateway stalled): the counters are corrected to it."""
        in_force = await amounts_in_force(self._ledger, item.held, item.row)
        deltas = [now - before for now, before in zip(in_force, item.amounts, strict=True)]
        if any(deltas):
            await self._keeper.correct(item.held, deltas)


async def amounts_in_force(
    ledger: Ledger, held: Sequence[StoredCounter], row: LedgerRow
) -> tuple[int, ...]:
    """What the counters of ``held`` are charged for the row the ledger holds for ``row``'s
    request, which it did not take (another was there first)."""
    existing = await ledger.row(row.request_id)
    if existing is None:  # pragma: no cover - a ledger that loses rows it reported
        raise StorageError(f"the ledger reports a row for {row.request_id!r} but has none")
    return row_amounts([c[3] for c in held], existing)


def _fail(done: asyncio.Future[None], exc: BaseException) -> None:
    if not done.done():
        done.set_exception(exc)
