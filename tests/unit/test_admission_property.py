"""Property tests of the reservation arithmetic.

1. Pure: `WorstCase.affordable` is the largest ceiling that fits, and `decide` admits
   only what every hard budget and request cap can afford, at the largest such ceiling.
2. Against every storage backend (memory, and SQLite with a fresh file per example; a
   `ManualClock`), through its public interface only: for any
   interleaving of reserve (alone or in concurrent bursts), settle (any actual amount up
   to the reservation), cancel (settle with 0), lease expiry and renewal over a few
   budgets with random limits, units, periods and worst cases,
   * spent + reserved never exceeds the limit of a hard budget, in the current window;
   * every decision equals `decide` over a model of the counters (so nothing is cached
     or double counted), and the stored counters equal the model's bucket for bucket;
   * every reservation ends in exactly one ledger row, and with nothing in flight
     ``reserved`` is 0 on every counter: nothing leaks.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spendgate.clock import ManualClock
from spendgate.config.schema import BudgetScope
from spendgate.domain.admission import Admitted, CounterState, Refused, WorstCase, decide
from spendgate.domain.budgets import Budget, CounterRef, RequestCap, Scoped, Unit
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.periods import Calendar, Period, Window, window
from spendgate.storage import ReservationPlan, Storage, open_storage

CALENDAR = Calendar.of("Europe/Berlin")
# Two minutes before midnight on 31 March, Berlin time: months, days and rolling buckets
# all turn over during a run.
START = datetime(2026, 3, 31, 21, 58, tzinfo=UTC)
LEASE = timedelta(seconds=60)
MEMBERS = ("m1", "m2")

# ---------------------------------------------------------------------------- pure

units = st.sampled_from(list(Unit))
worst_cases = st.builds(
    WorstCase,
    input_tokens=st.integers(0, 5_000),
    input_exact=st.booleans(),
    requested_ceiling=st.integers(0, 4_000),
    choices=st.integers(1, 4),
    input_cost=st.integers(0, 500_000),
    output_rate=st.one_of(st.just(0), st.integers(1, 10**11)),
)


@given(worst=worst_cases, unit=units, room=st.integers(-1_000, 10**7))
def test_affordable_is_the_largest_ceiling_that_fits(
    worst: WorstCase, unit: Unit, room: int
) -> None:
    k = worst.affordable(unit, room)
    if k < 0:
        assert k == -1
        assert worst.amount(unit, 0) > room
        return
    assert worst.amount(unit, k) <= room
    if k < worst.requested_ceiling:
        assert worst.amount(unit, k + 1) > room


def _budget(name: str, unit: Unit, limit: int, hard: bool) -> Budget:
    return Budget(
        name=name,
        target=Scoped(BudgetScope.TEAM, "*", ()),
        unit=unit,
        limit=limit,
        period=Period("lifetime"),
        hard=hard,
        soft_bp=(8_000,),
    )


@st.composite
def counter_states(draw: st.DrawFn) -> list[CounterState]:
    states = []
    for i in range(draw(st.integers(0, 4))):
        unit = draw(units)
        limit = draw(st.integers(0, 10**7))
        budget = _budget(f"b{i}", unit, limit, draw(st.booleans()) or i == 0)
        ref = CounterRef(budget, "m", window(budget.period, START, CALENDAR))
        spent = draw(st.integers(0, limit + 1_000))
        reserved = draw(st.integers(0, limit))
        states.append(CounterState(ref, limit, spent, reserved))
    return states


caps = st.lists(
    st.builds(
        RequestCap,
        target=st.just(Scoped(BudgetScope.TEAM, "*", ())),
        max_input_tokens=st.none(),
        max_request_nanos=st.one_of(st.none(), st.integers(1, 10**7)),
    ),
    max_size=2,
)


@given(worst=worst_cases, states=counter_states(), caps=caps, min_output=st.integers(0, 512))
def test_decide_admits_the_largest_affordable_ceiling(
    worst: WorstCase, states: list[CounterState], caps: list[RequestCap], min_output: int
) -> None:
    decision = decide(worst, states, caps, min_output)
    floor = min(min_output, worst.requested_ceiling)
    hard = [s for s in states if s.ref.budget.hard]

    def fits(ceiling: int) -> bool:
        budgets_ok = all(worst.amount(s.ref.budget.unit, ceiling) <= s.room for s in hard)
        caps_ok = all(
            worst.amount(Unit.NANOS, ceiling) <= c.max_request_nanos
            for c in caps
            if c.max_request_nanos is not None
        )
        return budgets_ok and caps_ok

    if isinstance(decision, Refused):
        assert not fits(floor)
        if decision.counter is not None:
            blocker = decision.counter
            assert blocker in hard
            assert worst.amount(blocker.ref.budget.unit, floor) > blocker.room
            assert decision.needed == worst.amount(blocker.ref.budget.unit, floor)
        else:
            assert decision.cap is not None
        return
    assert floor <= decision.ceiling <= worst.requested_ceiling
    assert fits(decision.ceiling)
    assert decision.clamped == (decision.ceiling < worst.requested_ceiling)
    if decision.clamped:
        assert not fits(decision.ceiling + 1)
    assert decision.amounts == tuple(
        worst.amount(s.ref.budget.unit, decision.ceiling) for s in states
    )
    if hard:
        assert decision.tightest in hard


# ---------------------------------------------------------------------------- storage

budget_specs = st.lists(
    st.tuples(
        units,
        st.integers(0, 60_000),  # tokens, or nano-dollars x 10 (below)
        st.booleans().map(lambda soft: not soft) | st.just(True),  # mostly hard
        st.sampled_from(["lifetime", "monthly", "daily", "rolling:10m", "hourly"]),
    ),
    min_size=1,
    max_size=3,
)
request_specs = st.tuples(
    st.builds(
        WorstCase,
        input_tokens=st.integers(0, 3_000),
        input_exact=st.booleans(),
        requested_ceiling=st.integers(0, 8_000),
        choices=st.integers(1, 3),
        input_cost=st.integers(0, 100_000),
        output_rate=st.one_of(st.just(0), st.integers(1, 10**8)),
    ),
    st.lists(st.booleans(), min_size=3, max_size=3),  # which budgets apply
    st.sampled_from(MEMBERS),
    st.integers(0, 300),  # min_output
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), request_specs),
        st.tuples(st.just("burst"), st.lists(request_specs, min_size=2, max_size=6)),
        st.tuples(st.just("settle"), st.integers(0, 99), st.integers(0, 100)),
        st.tuples(st.just("cancel"), st.integers(0, 99)),
        st.tuples(st.just("expire"), st.integers(0, 90)),
        st.tuples(st.just("renew"), st.sampled_from(["gw-a", "gw-b"])),
    ),
    max_size=25,
)

Row = tuple[str, str, str, int]  # budget, member, unit, bucket_ms


@dataclass
class Live:
    plan: ReservationPlan
    amounts: tuple[int, ...]
    expires: datetime


@dataclass
class Model:
    """What the database must hold, computed independently of the storage code."""

    rows: dict[Row, list[int]] = field(default_factory=dict)  # [spent, reserved]
    live: dict[str, Live] = field(default_factory=dict)
    finished: int = 0

    def state(self, ref: CounterRef) -> CounterState:
        budget = ref.budget
        spent = reserved = 0
        for (name, member, unit, bucket), (s, r) in self.rows.items():
            same = (name, member, unit) == (budget.name, ref.member, budget.unit.value)
            if same and bucket >= ref.window.since_ms:
                spent, reserved = spent + s, reserved + r
        return CounterState(ref, budget.limit, spent, reserved)

    def add(self, ref: CounterRef, spent: int, reserved: int) -> None:
        key = (ref.budget.name, ref.member, ref.budget.unit.value, ref.window.bucket_ms)
        row = self.rows.setdefault(key, [0, 0])
        row[0] += spent
        row[1] += reserved


def _row(request_id: str, now: datetime) -> LedgerRow:
    return LedgerRow(
        request_id=request_id,
        ts=now,
        surface="openai.chat",
        key_id="key_1",
        user="ada",
        service=None,
        team="ml",
        org=None,
        tags=(),
        requested_model="m",
        served_model="m",
        provider="sim",
        input_tokens=0,
        cached_input_tokens=0,
        cache_write_tokens=0,
        output_tokens=0,
        reasoning_tokens=0,
        cost_nanos=0,
        status=200,
        latency_ms=1.0,
        ttfb_ms=None,
        streamed=False,
        client_disconnected=False,
        usage_estimated=False,
    )


class Run:
    def __init__(self, storage: Storage, clock: ManualClock, budgets: list[Budget]):
        self.storage, self.clock, self.budgets = storage, clock, budgets
        self.model = Model()
        self.serial = 0

    def plan(self, spec: tuple[WorstCase, list[bool], str, int]) -> ReservationPlan:
        worst, applies, member, min_output = spec
        now = self.clock.now()
        refs = tuple(
            CounterRef(budget, member, window(budget.period, now, CALENDAR))
            for budget, on in zip(self.budgets, applies, strict=False)
            if on
        )
        self.serial += 1
        request_id = f"req_{self.serial}"
        return ReservationPlan(
            reservation_id=request_id,
            owner="gw-a" if self.serial % 2 else "gw-b",
            expires_at=now + LEASE,
            counters=refs,
            worst=worst,
            caps=(),
            min_output=min_output,
            template=_row(request_id, now),
        )

    def expect(self, plan: ReservationPlan, decision: Admitted | Refused) -> None:
        states = [self.model.state(ref) for ref in plan.counters]
        assert decision == decide(plan.worst, states, plan.caps, plan.min_output)
        if isinstance(decision, Admitted):
            for ref, amount in zip(plan.counters, decision.amounts, strict=True):
                self.model.add(ref, 0, amount)
            self.model.live[plan.reservation_id] = Live(plan, decision.amounts, plan.expires_at)

    async def reserve(self, specs: list[tuple[WorstCase, list[bool], str, int]]) -> None:
        plans = [self.plan(spec) for spec in specs]
        decisions = await asyncio.gather(*(self.storage.reserve(plan) for plan in plans))
        for plan, decision in zip(plans, decisions, strict=True):  # the writer's order
            self.expect(plan, decision)

    async def settle(self, pick: int, percent: int) -> None:
        if not self.model.live:
            return
        request_id = sorted(self.model.live)[pick % len(self.model.live)]
        live = self.model.live.pop(request_id)
        actual = tuple(amount * percent // 100 for amount in live.amounts)
        row = _row(request_id, self.clock.now())
        assert await self.storage.settle(request_id, actual, row) is True
        assert await self.storage.settle(request_id, actual, row) is False  # idempotent
        for ref, reserved, spent in zip(live.plan.counters, live.amounts, actual, strict=True):
            self.model.add(ref, spent, -reserved)
        self.model.finished += 1

    async def expire(self, seconds: int) -> None:
        self.clock.advance(seconds)
        now = self.clock.now()
        lapsed = [rid for rid, live in self.model.live.items() if live.expires < now]
        assert await self.storage.expire_leases(now) == len(lapsed)
        for request_id in lapsed:
            live = self.model.live.pop(request_id)
            for ref, amount in zip(live.plan.counters, live.amounts, strict=True):
                # A lapse charges what was reserved, but a concurrency slot is only freed.
                charged = 0 if ref.budget.unit is Unit.CONCURRENT else amount
                self.model.add(ref, charged, -amount)
            self.model.finished += 1

    async def renew(self, owner: str) -> None:
        expires = self.clock.now() + LEASE
        held = [live for live in self.model.live.values() if live.plan.owner == owner]
        assert await self.storage.renew_leases(owner, expires) == len(held)
        for live in held:
            live.expires = max(live.expires, expires)

    async def check(self) -> None:
        now = self.clock.now()
        for budget in self.budgets:
            if not budget.hard:
                continue
            span = window(budget.period, now, CALENDAR)
            refs = tuple(CounterRef(budget, member, span) for member in MEMBERS)
            for state in await self.storage.counter_states(refs, now):
                assert state.spent + state.reserved <= budget.limit, state
        await self._same_counters(now)
        made = [f"req_{serial}" for serial in range(1, self.serial + 1)]
        live = [rid for rid in made if await self.storage.counter_store.holding(rid) is not None]
        assert sorted(live) == sorted(self.model.live)
        ledger = await self.storage.ledger(EPOCH_START, FAR_FUTURE)
        assert len(ledger) == self.model.finished

    async def _same_counters(self, now: datetime) -> None:
        """Every stored counter equals the model's, bucket for bucket: the sums from each
        bucket the model knows onwards (and from the first bucket ever) agree."""
        by_counter: dict[tuple[str, str, str], list[int]] = {}
        for name, member, unit, bucket in self.model.rows:
            by_counter.setdefault((name, member, unit), []).append(bucket)
        budgets = {(b.name, b.unit.value): b for b in self.budgets}
        for (name, member, unit), buckets in by_counter.items():
            budget = budgets[(name, unit)]
            for since in [0, *sorted(buckets)]:
                start = datetime.fromtimestamp(since / 1000, UTC)
                ref = CounterRef(budget, member, Window(start, start, None))
                [state] = await self.storage.counter_states((ref,), now)
                model = self.model.state(ref)
                assert (state.spent, state.reserved) == (model.spent, model.reserved), ref


EPOCH_START = datetime(2000, 1, 1, tzinfo=UTC)
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)


async def _scenario(
    url: str, budgets: list[Budget], steps: list[tuple[object, ...]], counters: str | None
) -> None:
    clock = ManualClock(START)
    storage = open_storage(url, clock=clock, counters_url=counters)
    await storage.open()
    try:
        run = Run(storage, clock, budgets)
        for step in steps:
            kind = step[0]
            if kind == "reserve":
                await run.reserve([step[1]])
            elif kind == "burst":
                await run.reserve(step[1])
            elif kind == "settle":
                await run.settle(step[1], step[2])
            elif kind == "cancel":
                await run.settle(step[1], 0)
            elif kind == "expire":
                await run.expire(step[1])
            else:
                await run.renew(step[1])
            await run.check()
        while run.model.live:  # wind down: nothing in flight...
            await run.settle(0, 50)
        await run.check()
        for row in run.model.rows.values():  # ...so nothing is reserved anywhere
            assert row[1] == 0
    finally:
        await storage.close()


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@pytest.mark.parametrize("backend", ["memory", "sqlite", "split"])
@given(specs=budget_specs, steps=ops)
def test_storage_never_overshoots_and_never_leaks(
    backend: str, specs: list[tuple[Unit, int, bool, str]], steps: list[tuple[object, ...]]
) -> None:
    budgets = [
        Budget(
            name=f"b{i}",
            target=Scoped(BudgetScope.TEAM, "*", ()),
            unit=unit,
            limit=limit if unit is Unit.TOKENS else limit * 10,
            period=Period.parse(period),
            hard=hard,
            soft_bp=(8_000,),
        )
        for i, (unit, limit, hard, period) in enumerate(specs)
    ]
    if backend == "memory":
        asyncio.run(_scenario("memory://", budgets, steps, None))
        return
    counters = "memory://" if backend == "split" else None  # settled in two halves
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'spend.db'}"
        asyncio.run(_scenario(url, budgets, steps, counters))
