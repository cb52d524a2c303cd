"""Counters on Redis charged before the ledger row is written (`RowKeeper`,
`Storage.charge_first` / `Storage.ship`): the gateway's answer waits for one script, the
ledger's commit comes after it. Whatever happens between the two, each request has one
row and the counters equal the ledger: the row shipped by its gateway, or (its gateway
gone) written by a sweeper from the copy kept in Redis, with its real amounts, never
twice. Keys and the ledger on SQLite here (the ledger half behaves the same on
PostgreSQL: `tests/e2e/test_multinode_keys.py`), counters on the shared Redis under a
prefix of the test's own; a manual clock drives every lease and due time."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from budget_samples import budget, plan, ref

from conftest import REDIS
from spendgate.clock import ManualClock
from spendgate.domain.admission import Admitted
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.settlement import lapsed_row
from spendgate.storage import Storage
from spendgate.storage.open import open_storage
from spendgate.storage.redis import RedisCounters

DUE = timedelta(seconds=60)


@pytest.fixture
async def split(tmp_path: Path) -> AsyncIterator[tuple[Storage, ManualClock]]:
    clock = ManualClock()
    storage = open_storage(
        f"sqlite:///{tmp_path / 'ledger.db'}",
        clock=clock,
        counters_url=f"{REDIS}?prefix=sgtest-{uuid4().hex[:12]}",
    )
    await storage.open()
    yield storage, clock
    counters = storage.counter_store
    assert isinstance(counters, RedisCounters)
    await counters.drop_all()
    await storage.close()


async def _admitted(storage: Storage, clock: ManualClock) -> tuple[str, LedgerRow, int]:
    """A reservation on one budget; its final row (cost 1234 nanos) and the budget's
    reserved amount."""
    counter = ref(budget("team"), clock.now())
    reservation = plan([counter], clock.now())
    decision = await storage.reserve(reservation)
    assert isinstance(decision, Admitted)
    row = dataclasses.replace(
        reservation.template, input_tokens=10, output_tokens=20, cost_nanos=1234
    )
    return reservation.reservation_id, row, decision.amounts[0]


async def _spent_reserved(storage: Storage, clock: ManualClock) -> tuple[int, int]:
    (state,) = await storage.counter_states((ref(budget("team"), clock.now()),), clock.now())
    return state.spent, state.reserved


async def test_charged_before_the_row_then_shipped_once(
    split: tuple[Storage, ManualClock],
) -> None:
    storage, clock = split
    rid, row, _ = await _admitted(storage, clock)
    held = await storage.charge_first(rid, (1234,), row, DUE)
    assert held is not None
    assert await _spent_reserved(storage, clock) == (1234, 0)  # settled before the row
    assert await storage.ledger_store.row(rid) is None
    assert await storage.charge_first(rid, (1234,), row, DUE) is None  # ended: once
    assert not await storage.settle(rid, (1234,), row)  # nor settled again
    await storage.ship(rid, held, (1234,), row)
    assert await storage.ledger_store.row(rid) == row
    clock.advance(2 * DUE.total_seconds())
    assert await storage.sweep(clock.now()) == []  # forgotten: nothing left to write
    assert [r.request_id for r in await storage.ledger(clock.now() - DUE * 3, clock.now())] == [rid]
    assert await _spent_reserved(storage, clock) == (1234, 0)


async def test_a_gateway_gone_after_charging_leaves_its_row_to_a_sweeper(
    split: tuple[Storage, ManualClock],
) -> None:
    """Charged, answered, then the process dies before its row reaches the ledger: once
    due, a sweeper writes the kept row (real amounts, not the worst case), once; a late
    ship (a spool replay) finds it there and changes nothing."""
    storage, clock = split
    rid, row, _ = await _admitted(storage, clock)
    held = await storage.charge_first(rid, (1234,), row, DUE)
    assert held is not None
    assert await storage.sweep(clock.now()) == []  # not due yet: its gateway writes it
    assert await storage.ledger_store.row(rid) is None
    clock.advance(DUE.total_seconds() + 1)
    assert await storage.sweep(clock.now()) == []  # no lease lapsed: nothing charged
    assert await storage.ledger_store.row(rid) == row
    await storage.ship(rid, held, (1234,), row)  # idempotent
    await storage.sweep(clock.now())
    rows = await storage.ledger(clock.now() - DUE * 3, clock.now())
    assert [(r.request_id, r.cost_nanos, r.unreconciled) for r in rows] == [(rid, 1234, False)]
    assert await _spent_reserved(storage, clock) == (1234, 0)


async def test_a_lapsed_row_in_force_corrects_the_counters(
    split: tuple[Storage, ManualClock],
) -> None:
    """The one race: a sweeper read the reservation as lapsed (its gateway stalled a whole
    lease) and wrote the worst-case row just before the gateway charged it. The ledger's
    row is in force; shipping corrects the counters to it."""
    storage, clock = split
    rid, row, reserved = await _admitted(storage, clock)
    clock.advance(300)
    [lapsed] = await storage.counter_store.lapsed(clock.now(), 10)
    worst = lapsed_row(lapsed.template, lapsed.worst, lapsed.ceiling)
    assert await storage.ledger_store.append([worst]) == [True]  # the sweeper's first step
    held = await storage.charge_first(rid, (1234,), row, DUE)  # the gateway charges
    assert held is not None
    assert await storage.counter_store.settle(rid, (worst.cost_nanos,)) is False  # too late
    await storage.ship(rid, held, (1234,), row)
    assert await storage.ledger_store.row(rid) == worst
    assert await _spent_reserved(storage, clock) == (worst.cost_nanos, 0)
    assert worst.cost_nanos == reserved


async def _kept(storage: Storage, clock: ManualClock) -> list[str]:
    """The request ids of the rows kept in Redis, due or not."""
    counters = storage.counter_store
    assert isinstance(counters, RedisCounters)
    return sorted(r.request_id for r in await counters.unwritten(clock.now() + DUE * 2, 100))


async def test_a_shipped_row_is_forgotten_with_the_next_charge_or_the_lease_tick(
    split: tuple[Storage, ManualClock],
) -> None:
    """A row the ledger has is not forgotten in a round trip of its own: the next charge's
    script forgets it in passing, or the next lease tick (`renew_leases`) does; until then
    a sweeper writing it again changes nothing (idempotent by request id)."""
    storage, clock = split
    first, first_row, _ = await _admitted(storage, clock)
    second, second_row, _ = await _admitted(storage, clock)
    held = await storage.charge_first(first, (1234,), first_row, DUE)
    assert held is not None
    await storage.ship(first, held, (1234,), first_row)
    assert await _kept(storage, clock) == [first]  # written, not forgotten yet
    held = await storage.charge_first(second, (1234,), second_row, DUE)
    assert held is not None
    assert await _kept(storage, clock) == [second]  # the first went with this charge
    await storage.ship(second, held, (1234,), second_row)
    assert await _kept(storage, clock) == [second]
    clock.advance(DUE.total_seconds() + 1)
    await storage.sweep(clock.now())  # due, kept: written again, and nothing changes
    assert await storage.renew_leases("nobody", clock.now() + DUE) == 0
    assert await _kept(storage, clock) == []
    rows = await storage.ledger(clock.now() - DUE * 3, clock.now())
    assert sorted(r.request_id for r in rows) == sorted([first, second])
    assert await _spent_reserved(storage, clock) == (2 * 1234, 0)


async def test_rows_left_to_forget_are_forgotten_on_close(tmp_path: Path) -> None:
    clock = ManualClock()
    url = f"{REDIS}?prefix=sgtest-{uuid4().hex[:12]}"
    storage = open_storage(f"sqlite:///{tmp_path / 'ledger.db'}", clock=clock, counters_url=url)
    await storage.open()
    rid, row, _ = await _admitted(storage, clock)
    held = await storage.charge_first(rid, (1234,), row, DUE)
    assert held is not None
    await storage.ship(rid, held, (1234,), row)
    await storage.close()
    again = RedisCounters(url, clock)
    await again.open()
    try:
        assert await again.unwritten(clock.now() + DUE * 2, 100) == []
    finally:
        await again.drop_all()
        await again.close()
