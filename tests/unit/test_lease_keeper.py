"""The lease keeper on the in-memory backend: it renews this process's leases, settles
lapsed ones from any process at their worst case, and tells the event bus about each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from spendgate.clock import ManualClock
from spendgate.config.schema import BudgetScope
from spendgate.domain.admission import Admitted, WorstCase
from spendgate.domain.budgets import Budget, CounterRef, Scoped, Unit
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.periods import Calendar, Period, window
from spendgate.events import Event, Events, LeaseLapsed
from spendgate.services.leases import LeaseKeeper
from spendgate.storage import ReservationPlan, open_storage

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
LEASE = timedelta(seconds=30)
WORST = WorstCase(1_000, True, 100, 1, 1_000_000, 4_000_000_000)  # 1.4 million nanos at most
BUDGET = Budget(
    "team", Scoped(BudgetScope.TEAM, "*", ()), Unit.NANOS, 10**9, Period.parse("daily"), True, ()
)


def _row(request_id: str) -> LedgerRow:
    return LedgerRow(
        request_id, NOW, "openai.chat", "key_1", None, None, "ml", None, (), "m", "m", "p",
        0, 0, 0, 0, 0, 0, 0, 0.0, None, False, False, False,
    )  # fmt: skip


def _plan(request_id: str, owner: str) -> ReservationPlan:
    ref = CounterRef(BUDGET, "ml", window(BUDGET.period, NOW, Calendar.of("UTC")))
    return ReservationPlan(request_id, owner, NOW + LEASE, (ref,), WORST, (), 1, _row(request_id))


async def test_lapsed_leases_are_settled_and_reported_mine_are_renewed() -> None:
    clock = ManualClock(NOW)
    storage = open_storage("memory://", clock=clock)
    await storage.open()
    heard: list[Event] = []
    events = Events()
    events.subscribe(heard.append)
    keeper = LeaseKeeper(storage, "gw-me", LEASE, clock, events=events)
    try:
        mine = await storage.reserve(_plan("req_mine", "gw-me"))
        theirs = await storage.reserve(_plan("req_theirs", "gw-dead"))
        assert isinstance(mine, Admitted)
        assert isinstance(theirs, Admitted)
        clock.advance(20)
        assert await keeper.tick() == 0  # nothing lapsed yet; mine renewed to now + 30 s
        clock.advance(20)  # theirs expired 10 s ago, mine has 10 s left
        assert await keeper.tick() == 1
        [event] = heard
        assert isinstance(event, LeaseLapsed)
        assert event.row.request_id == "req_theirs"
        assert event.row.unreconciled
        assert event.row.cost_nanos == WORST.amount(Unit.NANOS, theirs.ceiling)
        assert await storage.counter_store.holding("req_mine") is not None
        assert await storage.counter_store.holding("req_theirs") is None
    finally:
        await storage.close()
