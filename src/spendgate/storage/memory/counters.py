"""Counters, reservations and overrides in memory, for tests and for replaying a ledger
under a candidate policy. Every method runs to completion without awaiting, so each is
atomic on the event loop (one process, one loop: nothing here is shared further).

Same model as the SQLite backend: a counter is (budget, member, unit) with one bucket per
window step; a window sums the buckets at or after its start; a reservation adds to
``reserved`` in the bucket it was made in and settlement takes exactly that off again.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from spendgate.clock import Clock, from_ms, to_ms
from spendgate.domain.admission import Admitted, CounterState, Refused, WorstCase, decide
from spendgate.domain.breaker import BreakerDecision, BreakerState
from spendgate.domain.budgets import MAX_LIMIT, CounterRef
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.loops import LoopBlock, LoopPolicy, loop_id
from spendgate.errors import StorageError
from spendgate.storage.base import BudgetOverride, Lapsed, ReservationPlan, StoredCounter
from spendgate.storage.memory.state import State
from spendgate.storage.plans import check_amounts, check_plan, stored_counters

R = TypeVar("R")

_Counter = tuple[str, str, str]  # budget, member, unit


@dataclass(slots=True)
class _Reservation:
    owner: str
    expires_ms: int
    counters: tuple[StoredCounter, ...]
    ceiling: int
    worst: WorstCase
    template: LedgerRow


@dataclass(frozen=True, slots=True)
class _Override:
    sequence: int
    value: BudgetOverride
    expires_ms: int | None


class MemoryCounters:
    max_limit = MAX_LIMIT  # as the databases keep it (64-bit integers)

    def __init__(self, state: State, clock: Clock) -> None:
        self._state = state
        self._clock = clock
        self._buckets: dict[_Counter, dict[int, list[int]]] = {}  # -> bucket -> [spent, reserved]
        self._reservations: dict[str, _Reservation] = {}
        self._overrides: list[_Override] = []
        self._sequence = itertools.count()
        self._loops: dict[str, LoopBlock] = {}  # by `loop_id`
        self._breakers: dict[tuple[str, str], BreakerState] = {}

    # -- reads ------------------------------------------------------------------------

    def _limit(self, budget: str, now_ms: int) -> int | None:
        found = [
            o
            for o in self._overrides
            if o.value.budget == budget and (o.expires_ms is None or o.expires_ms > now_ms)
        ]
        if not found:
            return None
        latest = max(found, key=lambda o: (to_ms(o.value.created_at), o.sequence))
        return latest.value.limit

    def _state_of(self, ref: CounterRef, now_ms: int) -> CounterState:
        budget = ref.budget
        buckets = self._buckets.get((budget.name, ref.member, budget.unit.value), {})
        spent = reserved = 0
        oldest: int | None = None
        for bucket, (bucket_spent, bucket_reserved) in buckets.items():
            if bucket < ref.window.since_ms:
                continue
            spent += bucket_spent
            reserved += bucket_reserved
            if (bucket_spent or bucket_reserved) and (oldest is None or bucket < oldest):
                oldest = bucket
        override = self._limit(budget.name, now_ms)
        limit = budget.limit if override is None else override
        return CounterState(ref, limit, spent, reserved, oldest)

    def states(self, refs: Sequence[CounterRef], now_ms: int) -> list[CounterState]:
        return [self._state_of(ref, now_ms) for ref in refs]

    async def counter_states(
        self, refs: tuple[CounterRef, ...], now: datetime
    ) -> list[CounterState]:
        self._state.require()
        return self.states(refs, to_ms(now))

    async def active_members(self, budget: str, since_ms: int) -> list[str]:
        self._state.require()
        return sorted(
            {
                member
                for (name, member, _), buckets in self._buckets.items()
                if name == budget and any(bucket >= since_ms for bucket in buckets)
            }
        )

    def held(self, reservation_id: str) -> tuple[StoredCounter, ...] | None:
        reservation = self._reservations.get(reservation_id)
        return None if reservation is None else reservation.counters

    async def holding(self, reservation_id: str) -> tuple[StoredCounter, ...] | None:
        self._state.require()
        return self.held(reservation_id)

    # -- the request path -------------------------------------------------------------

    async def reserve(self, plan: ReservationPlan) -> Admitted | Refused:
        self._state.require()
        check_plan(plan)
        if plan.reservation_id in self._reservations:
            raise StorageError(f"cannot store reservation {plan.reservation_id!r}: it exists")
        now_ms = to_ms(self._clock.now())
        decision = decide(
            plan.worst, self.states(plan.counters, now_ms), plan.caps, plan.min_output
        )
        if isinstance(decision, Refused):
            return decision
        counters = stored_counters(plan, decision.amounts)
        for name, member, bucket, unit, amount in counters:
            self._bucket((name, member, unit), bucket)[1] += amount
        self._reservations[plan.reservation_id] = _Reservation(
            plan.owner,
            to_ms(plan.expires_at),
            counters,
            decision.ceiling,
            plan.worst,
            plan.template,
        )
        return decision

    def _bucket(self, counter: _Counter, bucket: int) -> list[int]:
        return self._buckets.setdefault(counter, {}).setdefault(bucket, [0, 0])

    def take(self, reservation_id: str, amounts: Sequence[int] | None) -> bool:
        """End a reservation, charging ``amounts`` (None: nothing); False if it is gone."""
        held = self._reservations.get(reservation_id)
        if held is None:
            return False
        charges = amounts if amounts is not None else [0] * len(held.counters)
        check_amounts(reservation_id, held.counters, charges)
        del self._reservations[reservation_id]
        for (name, member, bucket, unit, reserved), charge in zip(
            held.counters, charges, strict=True
        ):
            row = self._bucket((name, member, unit), bucket)
            row[0] += charge
            row[1] -= reserved
        return True

    async def settle(self, reservation_id: str, amounts: Sequence[int]) -> bool:
        self._state.require()
        return self.take(reservation_id, amounts)

    async def release(self, reservation_id: str) -> bool:
        self._state.require()
        return self.take(reservation_id, None)

    # -- leases -----------------------------------------------------------------------

    async def renew_leases(
        self, owner: str, expires_at: datetime, keep_lapsing: frozenset[str] = frozenset()
    ) -> int:
        self._state.require()
        expires_ms = to_ms(expires_at)
        renewed = 0
        for reservation_id, held in self._reservations.items():
            if held.owner == owner and reservation_id not in keep_lapsing:
                held.expires_ms = max(held.expires_ms, expires_ms)
                renewed += 1
        return renewed

    def expired(self, now_ms: int, limit: int) -> list[Lapsed]:
        found = sorted(
            (held.expires_ms, reservation_id)
            for reservation_id, held in self._reservations.items()
            if held.expires_ms < now_ms
        )
        out = []
        for _, reservation_id in found[:limit]:
            held = self._reservations[reservation_id]
            out.append(
                Lapsed(reservation_id, held.counters, held.ceiling, held.worst, held.template)
            )
        return out

    async def lapsed(self, now: datetime, limit: int) -> list[Lapsed]:
        self._state.require()
        return self.expired(to_ms(now), limit)

    async def prune_counters(self, keep_from_ms: dict[str, int]) -> int:
        self._state.require()
        pruned = 0
        for (name, _, _), buckets in self._buckets.items():
            since = keep_from_ms.get(name)
            if since is None:
                continue
            old = [b for b, (_, reserved) in buckets.items() if b < since and reserved == 0]
            for bucket in old:
                del buckets[bucket]
            pruned += len(old)
        return pruned

    # -- operator changes -------------------------------------------------------------

    async def set_override(self, override: BudgetOverride) -> None:
        self._state.require()
        created_ms = to_ms(override.created_at)
        expires_ms = None if override.expires_at is None else to_ms(override.expires_at)
        self._overrides = [
            o
            for o in self._overrides
            if o.value.budget != override.budget
            or not (expires_ms is None or (o.expires_ms is not None and o.expires_ms <= created_ms))
        ]
        stored = BudgetOverride(
            override.budget,
            override.limit,
            None if expires_ms is None else from_ms(expires_ms),
            from_ms(created_ms),
        )
        self._overrides.append(_Override(next(self._sequence), stored, expires_ms))

    async def clear_overrides(self, budget: str) -> int:
        self._state.require()
        kept = [o for o in self._overrides if o.value.budget != budget]
        cleared = len(self._overrides) - len(kept)
        self._overrides = kept
        return cleared

    async def overrides(self, now: datetime) -> list[BudgetOverride]:
        self._state.require()
        now_ms = to_ms(now)
        latest: dict[str, _Override] = {}
        for o in self._overrides:
            if o.expires_ms is not None and o.expires_ms <= now_ms:
                continue
            best = latest.get(o.value.budget)
            rank = (to_ms(o.value.created_at), o.sequence)
            if best is None or rank > (to_ms(best.value.created_at), best.sequence):
                latest[o.value.budget] = o
        return [latest[name].value for name in sorted(latest)]

    async def reset_budget(self, budget: str, member: str | None, since_ms: int) -> int:
        self._state.require()
        reset = 0
        for (name, who, _), buckets in self._buckets.items():
            if name != budget or (member is not None and who != member):
                continue
            for bucket, values in buckets.items():
                if bucket >= since_ms:
                    values[0] = 0
                    reset += 1
        return reset

    # -- loop blocks ------------------------------------------------------------------

    async def loop_block(self, key_id: str, fingerprint: str) -> LoopBlock | None:
        self._state.require()
        return self._loops.get(loop_id(key_id, fingerprint))

    async def strike_loop(
        self, policy: LoopPolicy, *, key_id: str, fingerprint: str, model: str, now: datetime
    ) -> LoopBlock:
        self._state.require()
        block_id = loop_id(key_id, fingerprint)
        block = policy.strike(
            self._loops.get(block_id),
            key_id=key_id,
            fingerprint=fingerprint,
            model=model,
            now=from_ms(to_ms(now)),  # the millisecond resolution SQLite keeps
        )
        self._loops[block_id] = block
        return block

    async def loop_blocks(self) -> list[LoopBlock]:
        self._state.require()
        return sorted(self._loops.values(), key=lambda b: (b.detected_at, b.id), reverse=True)

    async def release_loop(self, block_id: str) -> LoopBlock | None:
        self._state.require()
        return self._loops.pop(block_id, None)

    async def prune_loops(self, ended_before: datetime) -> int:
        self._state.require()
        ended = [i for i, block in self._loops.items() if block.until < ended_before]
        for block_id in ended:
            del self._loops[block_id]
        return len(ended)

    async def update_breaker(self, key_id: str, model: str, decide: BreakerDecision[R]) -> R:
        self._state.require()
        state, result = decide(self._breakers.get((key_id, model)))
        if state is None:
            self._breakers.pop((key_id, model), None)
        else:
            self._breakers[(key_id, model)] = state
        return result

    async def breakers(self) -> list[BreakerState]:
        self._state.require()
        return list(self._breakers.values())

    async def prune_breakers(self, failed_before_ms: int) -> int:
        self._state.require()
        idle = [p for p, state in self._breakers.items() if state.failed_ms < failed_before_ms]
        for pair in idle:
            del self._breakers[pair]
        return len(idle)

    async def check(self) -> None:
        self._state.require()
