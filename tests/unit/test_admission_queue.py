"""The admission queue, as a property: for any arrivals, worst cases, real costs and
durations of requests on one hard budget (the in-memory counter store, and the pipeline's
`reserve_in_line`),

* no request waits in line longer than its bound;
* first come, first served: a request admitted after waiting was not overtaken by one
  that started waiting after it (a newcomer that finds the line full gets one try and no
  wait, so it is not a waiter);
* no overshoot: spent + reserved never exceeds the limit;
* a request refused after waiting was refused because the bound ran out or because the
  budget's spent amount alone left no room (never while it still had its turn to come).

Time is the event loop's, fast-forwarded (`looptime`): the test waits for nothing real.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import looptime
from hypothesis import given, settings
from hypothesis import strategies as st

from spendgate.clock import ManualClock
from spendgate.config.schema import BudgetScope
from spendgate.domain.admission import Admitted, WorstCase
from spendgate.domain.budgets import Budget, CounterRef, Scoped, Unit
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.periods import Calendar, Period, window
from spendgate.pipeline.in_line import reserve_in_line, room_is_held
from spendgate.services.admission_queue import AdmissionQueue
from spendgate.storage import ReservationPlan, Storage, open_storage

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
LIMIT = 1_000
MAX_WAIT_S = 5.0
BUDGET = Budget(
    "team", Scoped(BudgetScope.TEAM, "*", ()), Unit.NANOS, LIMIT, Period.parse("daily"), True, ()
)
REF = CounterRef(BUDGET, "ml", window(BUDGET.period, NOW, Calendar.of("UTC")))


@dataclass(frozen=True)
class Spec:
    arrive_s: float
    worst: int  # nano-dollars reserved
    actual_percent: int  # of the worst case, charged at settlement
    hold_s: float  # from admission to settlement


@dataclass
class Seen:
    joined: dict[int, float] = field(default_factory=dict)  # request -> loop time it waited from
    admitted: dict[int, float] = field(default_factory=dict)
    left: dict[int, float] = field(default_factory=dict)  # refused: when
    overflowed: set[int] = field(default_factory=set)  # found the line full
    worst_overshoot: int = 0


def _row(request_id: str) -> LedgerRow:
    return LedgerRow(
        request_id, NOW, "openai.chat", "key", None, None, "ml", None, (), "m", "m", "p",
        0, 0, 0, 0, 0, 0, 0, 0.0, None, False, False, False,
    )  # fmt: skip


def _plan(index: int, spec: Spec) -> ReservationPlan:
    worst = WorstCase(0, True, 0, 1, spec.worst, 0)  # a fixed amount, nothing to clamp
    rid = f"req_{index}"
    return ReservationPlan(rid, "gw", NOW + timedelta(hours=1), (REF,), worst, (), 0, _row(rid))


async def _request(
    index: int, spec: Spec, storage: Storage, queue: AdmissionQueue, seen: Seen
) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(spec.arrive_s)
    plan = _plan(index, spec)
    started = loop.time()
    if queue.waiting(REF.id) >= queue.max_waiting:
        seen.overflowed.add(index)
    elif queue.busy([REF.id]) is not None:
        seen.joined[index] = started
    decision = await reserve_in_line(storage, plan, queue)
    if not isinstance(decision, Admitted):
        if room_is_held(decision) and index not in seen.overflowed:  # the bound ran out
            seen.joined.setdefault(index, started)
        seen.left[index] = loop.time()
        return
    if loop.time() > started:
        assert index not in seen.overflowed
        seen.joined.setdefault(index, started)
    seen.admitted[index] = loop.time()
    [state] = await storage.counter_states((REF,), NOW)
    seen.worst_overshoot = max(seen.worst_overshoot, state.spent + state.reserved - LIMIT)
    await asyncio.sleep(spec.hold_s)
    charge = spec.worst * spec.actual_percent // 100
    assert await storage.settle(plan.reservation_id, (charge,), _row(plan.reservation_id))
    queue.freed([REF.id])


async def _run(specs: list[Spec], max_waiting: int) -> tuple[Seen, int]:
    storage = open_storage("memory://", clock=ManualClock(NOW))
    await storage.open()
    queue = AdmissionQueue(max_wait_s=MAX_WAIT_S, max_waiting=max_waiting)
    seen = Seen()
    await asyncio.gather(*(_request(i, s, storage, queue, seen) for i, s in enumerate(specs)))
    [state] = await storage.counter_states((REF,), NOW)
    await storage.close()
    return seen, state.spent


specs = st.builds(
    Spec,
    arrive_s=st.floats(0, 10, allow_nan=False).map(lambda t: round(t, 2)),
    worst=st.integers(50, 600),
    actual_percent=st.integers(0, 100),
    hold_s=st.floats(0.01, 8, allow_nan=False).map(lambda t: round(t, 2)),
)


@settings(max_examples=200, deadline=None)
@given(requests=st.lists(specs, min_size=1, max_size=30), max_waiting=st.integers(1, 8))
def test_waits_are_bounded_first_come_first_served_and_never_overshoot(
    requests: list[Spec], max_waiting: int
) -> None:
    loop = looptime.new_event_loop(start=0)
    try:
        seen, spent = loop.run_until_complete(_run(requests, max_waiting))
    finally:
        loop.close()
    assert seen.worst_overshoot <= 0
    assert spent <= LIMIT
    assert set(seen.admitted) | set(seen.left) == set(range(len(requests)))
    for index, joined in seen.joined.items():
        ended = seen.admitted.get(index, seen.left.get(index))
        assert ended is not None
        assert ended - joined <= MAX_WAIT_S + 1e-6, (index, joined, ended)
    waiters = sorted(seen.joined, key=lambda i: (seen.joined[i], i))
    for position, earlier in enumerate(waiters):
        for later in waiters[position + 1 :]:
            if seen.joined[later] == seen.joined[earlier] or later not in seen.admitted:
                continue
            # the later waiter got in: the earlier one had got in or given up by then
            ended = seen.admitted.get(earlier, seen.left.get(earlier))
            assert ended is not None
            assert ended <= seen.admitted[later], (earlier, later, seen)


def test_a_settlement_lets_the_first_waiter_in_at_once() -> None:
    """Counts, not timing: two requests fill the budget, a third waits; when one settles
    below its worst case the third gets in at that instant, not at its next poll."""
    specs = [
        Spec(0, 500, 10, 3.0),
        Spec(0, 500, 100, 9.0),
        Spec(1, 400, 100, 1.0),
    ]
    loop = looptime.new_event_loop(start=0)
    try:
        seen, spent = loop.run_until_complete(_run(specs, 8))
    finally:
        loop.close()
    assert seen.joined[2] == 1.0
    assert seen.admitted[2] == 3.0  # when the first settled at 50 of its 500
    assert not seen.left
    assert spent == 50 + 500 + 400
