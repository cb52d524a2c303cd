"""Reserving a request's worst case: now, or in line behind requests in flight that hold
the room (`AdmissionQueue`), and beside the reading again of a remembered key
(`reserve_confirmed`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from spendgate.domain.admission import Admitted, Refused
from spendgate.domain.budgets import Kind
from spendgate.errors import SpendgateError
from spendgate.pipeline.exchange import Exchange, confirm_key
from spendgate.services.admission_queue import AdmissionQueue
from spendgate.storage import ReservationPlan, Storage


def counter_keys(plan: ReservationPlan) -> list[str]:
    return [ref.id for ref in plan.counters]


async def reserve_in_line(
    storage: Storage,
    plan: ReservationPlan,
    queue: AdmissionQueue | None,
    keys: list[str] | None = None,
    first: Awaitable[Admitted | Refused] | None = None,
) -> Admitted | Refused:
    """Reserve now; or, when requests in flight hold the room a budget would otherwise
    have, wait in line for them to settle (`AdmissionQueue`). A newcomer to a budget
    member that has a line joins it, so room is given first come, first served.
    ``first``: the first attempt, already started when no line waited."""
    if queue is None:
        return await (first or storage.reserve(plan))
    keys = counter_keys(plan) if keys is None else keys

    async def attempt() -> Admitted | Refused:
        return await storage.reserve(plan)

    line = queue.busy(keys) if first is None else None
    decision = await (first or attempt()) if line is None else None
    if isinstance(decision, Refused) and room_is_held(decision) and decision.counter:
        line = decision.counter.ref.id
    if line is not None and not isinstance(decision, Admitted):
        decision = (await queue.wait_for_room(line, attempt, room_is_held)).decision
    assert decision is not None
    if isinstance(decision, Admitted):
        queue.held(keys)
    return decision


async def reserve_confirmed(
    storage: Storage,
    plan: ReservationPlan,
    queue: AdmissionQueue | None,
    keys: list[str],
    exchange: Exchange,
) -> Admitted | Refused:
    """`reserve_in_line` for a key confirmed by storage (`confirm_key`). A request started
    on a remembered key still being read again makes its first attempt beside that read
    when no line waits (two servers at once): the reservation is held, nothing charged,
    written or sent upstream, until the read confirms the key; if it does not (revoked,
    expired, rotated, changed: `KeyChanged`), the reservation is given back before the
    read's error goes on. A refused key is forgotten: this happens once per change."""
    check = exchange.key_check
    if check is None or check.done or (queue is not None and queue.busy(keys) is not None):
        await confirm_key(exchange)
        return await reserve_in_line(storage, plan, queue, keys)
    reserving = asyncio.ensure_future(storage.reserve(plan))
    try:
        await confirm_key(exchange)
    except BaseException:
        await _give_back(storage, reserving, plan.reservation_id)
        raise
    return await reserve_in_line(storage, plan, queue, keys, reserving)


async def _give_back(
    storage: Storage, reserving: asyncio.Future[Admitted | Refused], reservation_id: str
) -> None:
    """Release what ``reserving`` reserved, once it ends (shielded: a client hanging up
    meanwhile does not leave it held until its lease lapses)."""

    async def back() -> None:
        try:
            decision = await reserving
        except SpendgateError:
            return  # nothing held: a store that failed gives back what it may have kept
        if isinstance(decision, Admitted):
            await storage.release(reservation_id)

    await asyncio.shield(back())


def room_is_held(refused: Refused) -> bool:
    """A budget refused, but its spent amount alone leaves room for the request: what
    fills it is reserved by requests in flight, which give back all but their cost."""
    counter = refused.counter
    if counter is None or counter.ref.budget.kind is not Kind.BUDGET:
        return False
    return counter.reserved > 0 and counter.spent + refused.needed <= counter.limit
