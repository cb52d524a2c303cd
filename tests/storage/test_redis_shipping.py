"""Rows charged first, shipped to the ledger a few at a time (`spendgate.storage.shipping`):
a row waits for others up to the linger, unless the batch is full, someone hurries
(`Storage.shipping_now`: `Gateway.settled`) or the storage closes; every caller returns
once its own row is in the ledger, or gets the ledger's error to spool its row. The
production shape: keys and the ledger in a throwaway PostgreSQL database, counters on the
shared Redis under a prefix of the test's own; the linger here is a minute, so that nothing
is written by the timer while a test looks."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from budget_samples import budget, plan, ref
from pg_databases import throwaway_database
from storage_samples import NOW

from conftest import redis_url
from spendgate.clock import ManualClock
from spendgate.domain.admission import Admitted
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.settlement import lapsed_row
from spendgate.errors import StorageError
from spendgate.storage import Storage
from spendgate.storage.base import StoredCounter
from spendgate.storage.open import open_storage
from spendgate.storage.postgres.ledger import PgLedger
from spendgate.storage.redis import RedisCounters
from spendgate.storage.shipping import BATCH, Shipper

DUE = timedelta(seconds=60)
LONG = 60.0  # a linger no test waits out
SOON = 5.0  # what a write that does not linger takes at most here


@pytest.fixture
async def split() -> AsyncIterator[tuple[Storage, ManualClock, Shipper]]:
    with throwaway_database() as url:
        clock = ManualClock(NOW)
        storage = open_storage(url, clock=clock, counters_url=redis_url())
        await storage.open()
        counters = storage.counter_store
        assert isinstance(counters, RedisCounters)
        shipper = Shipper(storage.ledger_store, counters, linger_s=LONG)
        try:
            yield storage, clock, shipper
        finally:
            await shipper.close()
            await counters.drop_all()
            await storage.close()


Charged = tuple[str, tuple[StoredCounter, ...], LedgerRow]


async def _charged(storage: Storage, clock: ManualClock, cost: int = 1234) -> Charged:
    """A reservation on one budget, charged first with its final row (``cost`` nanos)."""
    reservation = plan([ref(budget("team"), clock.now())], clock.now())
    assert isinstance(await storage.reserve(reservation), Admitted)
    row = dataclasses.replace(reservation.template, output_tokens=20, cost_nanos=cost)
    held = await storage.charge_first(reservation.reservation_id, (cost,), row, DUE)
    assert held is not None
    return reservation.reservation_id, held, row


def _ship(shipper: Shipper, charged: Charged) -> asyncio.Task[None]:
    rid, held, row = charged
    return asyncio.ensure_future(shipper.ship(rid, held, (row.cost_nanos,), row))


async def _in_ledger(storage: Storage, clock: ManualClock) -> list[str]:
    rows = await storage.ledger(clock.now() - DUE * 3, clock.now() + DUE)
    return sorted(r.request_id for r in rows)


async def _spent(storage: Storage, clock: ManualClock) -> int:
    (state,) = await storage.counter_states((ref(budget("team"), clock.now()),), clock.now())
    assert state.reserved == 0
    return state.spent


async def _kept(storage: Storage, clock: ManualClock) -> list[str]:
    counters = storage.counter_store
    assert isinstance(counters, RedisCounters)
    return sorted(r.request_id for r in await counters.unwritten(clock.now() + DUE * 2, 1000))


async def test_rows_wait_for_the_linger_then_go_together_once_hurried(
    split: tuple[Storage, ManualClock, Shipper],
) -> None:
    storage, clock, shipper = split
    charged = [await _charged(storage, clock) for _ in range(3)]
    shipping = [_ship(shipper, c) for c in charged]
    await asyncio.sleep(0.2)
    assert not any(task.done() for task in shipping)  # lingering: nothing written yet
    assert await _in_ledger(storage, clock) == []
    assert await _kept(storage, clock) == sorted(c[0] for c in charged)  # kept meanwhile
    with shipper.hurried():
        await asyncio.wait_for(asyncio.gather(*shipping), SOON)
        late = await _charged(storage, clock)
        await asyncio.wait_for(_ship(shipper, late), SOON)  # hurried: it does not linger
    assert await _in_ledger(storage, clock) == sorted(c[0] for c in [*charged, late])
    assert await _spent(storage, clock) == 4 * 1234
    await _charged(storage, clock)  # its script forgets the four shipped in passing
    assert len(await _kept(storage, clock)) == 1


async def test_a_full_batch_goes_without_waiting(
    split: tuple[Storage, ManualClock, Shipper],
) -> None:
    storage, clock, shipper = split
    charged = [await _charged(storage, clock, cost=1) for _ in range(BATCH)]
    await asyncio.wait_for(asyncio.gather(*(_ship(shipper, c) for c in charged)), SOON)
    assert len(await _in_ledger(storage, clock)) == BATCH
    assert await _spent(storage, clock) == BATCH


async def test_close_writes_what_waits_and_later_rows_go_at_once(
    split: tuple[Storage, ManualClock, Shipper],
) -> None:
    storage, clock, shipper = split
    first = await _charged(storage, clock)
    shipping = _ship(shipper, first)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(shipper.close(), SOON)
    assert shipping.done()
    assert shipping.exception() is None
    second = await _charged(storage, clock)
    await asyncio.wait_for(_ship(shipper, second), SOON)
    assert await _in_ledger(storage, clock) == sorted([first[0], second[0]])


async def test_a_row_in_force_corrects_its_counters_and_the_batch_goes_on(
    split: tuple[Storage, ManualClock, Shipper],
) -> None:
    """One row of the batch meets the worst-case row a sweeper wrote first (its gateway
    stalled a whole lease): that row stays and its counters are corrected to it; the other
    rows of the batch are written as they are."""
    storage, clock, shipper = split
    reservation = plan([ref(budget("team"), clock.now())], clock.now())
    decision = await storage.reserve(reservation)
    assert isinstance(decision, Admitted)
    clock.advance(300)
    [lapsed] = await storage.counter_store.lapsed(clock.now(), 10)
    worst = lapsed_row(lapsed.template, lapsed.worst, lapsed.ceiling)
    assert await storage.ledger_store.append([worst]) == [True]
    row = dataclasses.replace(reservation.template, output_tokens=20, cost_nanos=1234)
    held = await storage.charge_first(reservation.reservation_id, (1234,), row, DUE)
    assert held is not None
    other = await _charged(storage, clock)
    shipping = [_ship(shipper, (reservation.reservation_id, held, row)), _ship(shipper, other)]
    with shipper.hurried():
        await asyncio.wait_for(asyncio.gather(*shipping), SOON)
    assert await storage.ledger_store.row(reservation.reservation_id) == worst
    assert await storage.ledger_store.row(other[0]) == other[2]
    assert await _spent(storage, clock) == decision.amounts[0] + 1234


async def test_the_ledgers_error_reaches_every_row_of_the_batch(
    split: tuple[Storage, ManualClock, Shipper],
) -> None:
    """The ledger refuses the batch (here: closed): each caller gets the StorageError and
    spools its row (`spendgate.pipeline.outcome.record`); the rows stay kept in Redis,
    charged once, for a sweeper if the spool never writes them."""
    storage, clock, shipper = split
    charged = [await _charged(storage, clock) for _ in range(2)]
    ledger = storage.ledger_store
    assert isinstance(ledger, PgLedger)
    await ledger.close()
    shipping = [_ship(shipper, c) for c in charged]
    with shipper.hurried():
        done = await asyncio.wait_for(asyncio.gather(*shipping, return_exceptions=True), SOON)
    assert all(isinstance(error, StorageError) for error in done)
    assert await _kept(storage, clock) == sorted(c[0] for c in charged)
    assert await _spent(storage, clock) == 2 * 1234
