"""Budgets on the request path: reserve the worst case before the call, settle after.

`admit` prices the request's worst case, reserves it on every applicable budget in one
atomic storage step (or refuses, naming the budget), and returns a `Ticket`. Whatever
happens next, the request path ends in `finish`, which settles the ticket with the real
usage and writes the ledger row in the same transaction. If the process dies first, the
ticket's lease lapses and the sweeper charges it at its reservation (`unreconciled`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta

from spendgate.clock import Clock
from spendgate.domain.admission import Admitted, CounterState, Refused, WorstCase, worst_case
from spendgate.domain.budgets import BudgetBook, RequestCap, Unit
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.settlement import actual_amounts
from spendgate.domain.usage import Usage
from spendgate.errors import BudgetExceeded, RequestCapExceeded
from spendgate.pipeline.exchange import Exchange
from spendgate.storage.base import ReservationPlan, Storage

log = logging.getLogger("spendgate.budgets")

# Chat formatting overhead and tokenizer revisions make even an "exact" local count drift a
# little from the provider's; the reservation adds this margin so settlement stays below it.
INPUT_MARGIN_TOKENS = 32
INPUT_MARGIN_PERCENT = 10


def input_upper_bound(counted: int, context_window: int | None) -> int:
    padded = counted + INPUT_MARGIN_TOKENS + -(-counted * INPUT_MARGIN_PERCENT // 100)
    return min(padded, context_window) if context_window else padded


@dataclass(frozen=True, slots=True)
class Ticket:
    plan: ReservationPlan
    admitted: Admitted
    requested_ceiling: int | None  # what the request itself asked for

    @property
    def ceiling(self) -> int:
        return self.admitted.ceiling

    def headers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        tightest = self.admitted.tightest
        if tightest is not None:
            index = self.plan.counters.index(tightest.ref)
            left = tightest.room - self.admitted.amounts[index]
            budget = tightest.ref.budget
            out["x-spendgate-budget"] = budget.name
            out["x-spendgate-budget-remaining"] = _plain(budget.unit, left)
            resets = tightest.ref.window.resets_at
            if resets is not None:
                out["x-spendgate-budget-reset"] = resets.isoformat()
        if self.admitted.clamped:
            out["x-spendgate-output-clamped"] = (
                f"{self.ceiling} (requested {self.plan.worst.requested_ceiling})"
            )
        return out


def _plain(unit: Unit, amount: int) -> str:
    if unit is Unit.TOKENS:
        return f"{amount} tokens"
    return f"{amount / 1e9:.6f} USD"


async def admit(
    storage: Storage,
    book: BudgetBook,
    exchange: Exchange,
    *,
    owner: str,
    lease: timedelta,
    min_output: int,
    default_ceiling: int,
) -> Ticket | None:
    """Reserve the request's worst case on every applicable budget, or refuse it."""
    now = exchange.arrived
    model = exchange.route.name
    counters = book.counters(exchange.key, exchange.org, model, now)
    caps = book.caps_for(exchange.key, exchange.org, model)
    if not counters and not caps:
        return None
    spec = exchange.spec
    count = spec.input_counter(model, exchange.body)
    _check_input_caps(caps, count.tokens, count.exact)
    input_tokens = input_upper_bound(count.tokens, exchange.price.max_input_tokens)
    requested, choices = spec.requested_output(exchange.body)
    ceiling = (
        requested
        if requested is not None
        else (exchange.route.max_output_tokens or default_ceiling)
    )
    worst = worst_case(
        exchange.price,
        input_tokens=input_tokens,
        input_exact=count.exact,
        ceiling=ceiling,
        choices=choices,
    )
    plan = ReservationPlan(
        reservation_id=exchange.request_id,
        owner=owner,
        expires_at=now + lease,
        counters=tuple(counters),
        worst=worst,
        caps=tuple(caps),
        min_output=max(min_output, spec.min_ceiling(exchange.body)),
        template=exchange.template_row(),
    )
    decision = await storage.reserve(plan)
    if isinstance(decision, Refused):
        raise _refusal(decision, worst, book)
    return Ticket(plan=plan, admitted=decision, requested_ceiling=requested)


def _check_input_caps(caps: list[RequestCap], input_tokens: int, exact: bool) -> None:
    for cap in caps:
        if cap.max_input_tokens is not None and input_tokens > cap.max_input_tokens:
            how = "" if exact else " (an upper-bound estimate)"
            raise RequestCapExceeded(
                f"This request has {input_tokens:,} input tokens{how}, over the limit of "
                f"{cap.max_input_tokens:,} per request for {cap.target.scope.value} "
                f"'{cap.target.match}'. Shorten the prompt or split the work."
            )


def _refusal(refused: Refused, worst: WorstCase, book: BudgetBook) -> Exception:
    if refused.counter is None:
        cap = refused.cap
        assert cap is not None
        assert cap.max_request_nanos is not None
        return RequestCapExceeded(
            f"Even with the smallest output ceiling this request would cost up to "
            f"{Unit.NANOS.render(refused.needed)}, over the per-request limit of "
            f"{Unit.NANOS.render(cap.max_request_nanos)} for {cap.target.scope.value} "
            f"'{cap.target.match}'."
        )
    return BudgetExceeded(_budget_message(refused.counter, refused.needed, worst, book))


def _budget_message(counter: CounterState, needed: int, worst: WorstCase, book: BudgetBook) -> str:
    ref = counter.ref
    unit = ref.budget.unit
    resets = ref.window.resets_at
    when = (
        f"It resets at {resets.astimezone(book.calendar.zone).isoformat()}."
        if resets is not None
        else "It never resets (lifetime budget); ask an operator to raise it."
    )
    return (
        f"Budget exhausted for {ref.budget.describe(ref.member)}: "
        f"{unit.render(counter.spent)} spent and {unit.render(counter.reserved)} reserved "
        f"of {unit.render(counter.limit)}; this request needs at least {unit.render(needed)}. "
        f"{when}"
    )


async def finish(storage: Storage, exchange: Exchange, row: LedgerRow) -> None:
    """Write the request's ledger row, settling its reservation in the same transaction."""
    ticket = exchange.ticket
    if ticket is None:
        await storage.record(row)
        return
    usage = Usage(input_tokens=row.input_tokens, output_tokens=row.output_tokens)
    amounts = actual_amounts(ticket.plan.counters, usage, row.cost_nanos)
    await storage.settle(ticket.plan.reservation_id, amounts, row)


class LeaseKeeper:
    """Renews this process's leases and settles lapsed ones (from any process)."""

    def __init__(self, storage: Storage, owner: str, lease: timedelta, clock: Clock) -> None:
        self._storage = storage
        self._owner = owner
        self._lease = lease
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="lease-keeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def tick(self) -> int:
        now = self._clock.now()
        await self._storage.renew_leases(self._owner, now + self._lease)
        return await self._storage.expire_leases(now)

    async def _run(self) -> None:
        interval = max(0.2, self._lease.total_seconds() / 4)
        while True:
            try:
                lapsed = await self.tick()
                if lapsed:
                    log.warning("settled lapsed reservations", extra={"count": lapsed})
            except Exception:
                log.exception("lease keeper tick failed; retrying")
            await asyncio.sleep(interval)
