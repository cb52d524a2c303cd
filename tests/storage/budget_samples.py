"""Budgets, reservations and their helpers for the storage suite (shared by the behaviour
tests and the SQLite ones)."""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime, timedelta

from storage_samples import build_row

from spendgate.config.schema import BudgetScope
from spendgate.domain.admission import CounterState, WorstCase
from spendgate.domain.budgets import Budget, CounterRef, RequestCap, Scoped, Unit
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.periods import Calendar, Period, window
from spendgate.storage import ReservationPlan, Storage

UTC_CALENDAR = Calendar.of("UTC")
LEASE = timedelta(seconds=30)
# 1_000 input tokens at $1/M (1_000_000 nanos) plus up to 1_000 output tokens at $4/M.
WORST = WorstCase(
    input_tokens=1_000,
    input_exact=True,
    requested_ceiling=1_000,
    choices=1,
    input_cost=1_000_000,
    output_rate=4_000_000_000,
)
FULL = 5_000_000  # WORST.amount(Unit.NANOS, 1_000)
FULL_TOKENS = 2_000  # WORST.amount(Unit.TOKENS, 1_000)

_ids = itertools.count()


def budget(
    name: str = "team-ml",
    limit: int = 100 * FULL,
    *,
    unit: Unit = Unit.NANOS,
    period: str = "monthly",
    hard: bool = True,
    scope: BudgetScope = BudgetScope.TEAM,
) -> Budget:
    return Budget(
        name=name,
        target=Scoped(scope, "*", ()),
        unit=unit,
        limit=limit,
        period=Period.parse(period),
        hard=hard,
        soft_bp=(8_000,),
    )


def ref(
    spec: Budget, now: datetime, member: str = "ml", calendar: Calendar = UTC_CALENDAR
) -> CounterRef:
    return CounterRef(spec, member, window(spec.period, now, calendar))


def plan(
    refs: tuple[CounterRef, ...] | list[CounterRef],
    now: datetime,
    *,
    worst: WorstCase = WORST,
    min_output: int = 256,
    owner: str = "gw-1",
    lease: timedelta = LEASE,
    caps: tuple[RequestCap, ...] = (),
    request_id: str | None = None,
) -> ReservationPlan:
    rid = request_id or f"res_{os.getpid()}_{next(_ids):06d}"
    return ReservationPlan(
        reservation_id=rid,
        owner=owner,
        expires_at=now + lease,
        counters=tuple(refs),
        worst=worst,
        caps=caps,
        min_output=min_output,
        template=build_row(
            request_id=rid,
            ts=now,
            input_tokens=0,
            output_tokens=0,
            cost_nanos=0,
            status=0,
            tags=("batch", "eu"),
        ),
    )


def settled(reservation: ReservationPlan, cost: int, **fields: object) -> LedgerRow:
    return build_row(
        request_id=reservation.reservation_id, ts=reservation.template.ts, cost_nanos=cost, **fields
    )


async def one(storage: Storage, counter: CounterRef, now: datetime) -> CounterState:
    (state,) = await storage.counter_states((counter,), now)
    return state


async def ledger(storage: Storage) -> list[LedgerRow]:
    return await storage.ledger(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
