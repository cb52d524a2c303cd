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
import dataclasses
import functools
import logging
import math
from datetime import datetime, timedelta

from spendgate.domain.admission import (
    Admitted,
    CounterState,
    Refused,
    Thresholds,
    WorstCase,
)
from spendgate.domain.budget_state import Refusals, budget_state, minimal_request, model_prices
from spendgate.domain.budgets import Budget, BudgetBook, Caller, CounterRef, Kind, RequestCap, Unit
from spendgate.domain.fingerprint import fingerprint
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.loops import KEY_WIDE, LoopBlock, loop_message
from spendgate.domain.models import ModelTable
from spendgate.domain.settlement import actual_amounts
from spendgate.domain.usage import Usage
from spendgate.errors import (
    BUDGET_EXHAUSTED,
    MAX_RETRY_AFTER_S,
    BudgetBusy,
    BudgetExceeded,
    GatewayError,
    LoopDetected,
    RateLimited,
    RequestCapExceeded,
)
from spendgate.events import LoopStruck, SettledAbove, ThresholdCrossed
from spendgate.events import Refused as RefusedEvent
from spendgate.money import token_cost
from spendgate.pipeline.bodywork import BodyWork
from spendgate.pipeline.bound_first import reserve_by_bound
from spendgate.pipeline.exchange import Exchange, confirm_key
from spendgate.pipeline.in_line import counter_keys, reserve_confirmed, room_is_held
from spendgate.pipeline.limit_headers import refusal_window
from spendgate.pipeline.ticket import Ticket, budget_headers
from spendgate.pipeline.worst_case import Bounding, Priced, hidden_input_policy, price_worst_case
from spendgate.services.admission_queue import AdmissionQueue, FullLimits
from spendgate.storage import ReservationPlan, Storage
from spendgate.storage.spool import Unwritten

log = logging.getLogger("spendgate.budgets")

MINIMAL_CACHE = 1024  # (budget, member)s whose minimal request is remembered: ~180 bytes each


async def admit(
    storage: Storage,
    book: BudgetBook,
    exchange: Exchange,
    *,
    owner: str,
    lease: timedelta,
    min_output: int,
    default_ceiling: int,
    assumed_tool_calls: int,
    record_refusal: bool = True,
    thresholds: Thresholds | None = None,
    queue: AdmissionQueue | None = None,
    work: BodyWork | None = None,
    full: FullLimits | None = None,
) -> Ticket | None:
    """Reserve the request's worst case on every applicable budget and limit, or refuse it
    (and record the refusal in the ledger, uncharged, with what it would have cost, unless
    ``record_refusal`` is False: the caller has a cheaper model to try instead).

    The cheap checks come first: a full request-rate or concurrency limit refuses before
    any work on the body (with ``full``, only a limit this process has seen full is read
    for that: the others are left to the reservation); then the body is fingerprinted
    (loop detection) and its input counted, in a worker process when it is large
    (``work``)."""
    now = exchange.arrived
    caller = Caller(
        key=exchange.key, org=exchange.org, model=exchange.route.name, session=exchange.session_id
    )
    counters = book.counters(caller, now)  # all but loop detection's (it needs the fingerprint)
    caps = book.caps_for(caller)
    # A fallback attempt is the same request again: the loop detector counted it once.
    loops = book.loop is not None and exchange.attempt == 0
    if not counters and not caps and not loops:
        return None
    hidden = exchange.hidden_input()
    worst: WorstCase | None = None
    counted: int | None = None  # the body's input tokens, once counted
    found: str | None = None
    try:
        await _refuse_on_full_rate_limits(storage, counters, now, full)
        if loops:
            if book.loops is not None and book.loops.escalate_after:
                await _refuse_blocked_loop(storage, book, exchange.key.id, KEY_WIDE, now)
            found = await work.fingerprint(exchange) if work else fingerprint(exchange.body)
            await _refuse_blocked_loop(storage, book, exchange.key.id, found, now)
            counters = book.counters(dataclasses.replace(caller, fingerprint=found), now)
        bounding = hidden_input_policy(counters, hidden)
        # With a cheaper model to try instead (record_refusal off), a request does not
        # wait in line: the cheaper one may fit now.
        waiting = queue if record_refusal else None
        price = functools.partial(
            price_worst_case,
            exchange,
            default_ceiling,
            assumed_tool_calls=assumed_tool_calls,
            bounding=bounding,
        )
        plan_of = functools.partial(_plan, exchange, owner, now + lease, counters, caps, min_output)
        tried = await reserve_by_bound(
            storage,
            exchange,
            work if bounding is Bounding.COUNT else None,
            price,
            plan_of,
            caps,
            thresholds,
        )
        decision: Admitted | Refused
        if tried.taken is not None:
            priced, plan, decision = tried.taken
            worst = priced.worst
            keys = counter_keys(plan)
            if waiting is not None:
                waiting.held(keys)
        else:
            priced = price(count=await work.input_count(exchange) if work else None)
            worst, count = priced.worst, priced.count
            counted = count.tokens
            _check_input_caps(caps, count.tokens, count.exact)
            plan = plan_of(priced, exchange.request_id)  # (any bound's was given back)
            keys = counter_keys(plan)
            decision = await reserve_confirmed(storage, plan, waiting, keys, exchange)
        if isinstance(decision, Refused):
            if full is not None and decision.counter and _cheap(decision.counter.ref):
                full.saw_full(decision.counter.ref.budget.name, decision.counter.ref.member)
            if waiting is not None and room_is_held(decision):
                raise _told(_busy(decision, waiting), decision, exchange, min_output)
            if found is not None and _loop_counter(decision):
                raise await _strike_loop(storage, book, decision, exchange, found)
            settles_s = queue.typical_s if queue is not None else CONCURRENCY_WAIT_S
            refusal = _refusal(decision, worst, book, now, settles_s)
            raise _told(refusal, decision, exchange, min_output)
    except (BudgetExceeded, BudgetBusy, RequestCapExceeded, RateLimited, LoopDetected) as refusal:
        if not record_refusal and isinstance(refusal, BudgetExceeded):
            raise
        await confirm_key(exchange)  # a refusal's row is written on the key's behalf too
        if worst is None and isinstance(refusal, RateLimited | LoopDetected):
            # refused before it was priced (a full rate limit, a blocked loop): priced now,
            # for the record
            with contextlib.suppress(GatewayError):
                repriced = price_worst_case(
                    exchange,
                    default_ceiling,
                    assumed_tool_calls=assumed_tool_calls,
                    count=await work.input_count(exchange) if work else None,
                )
                worst, counted = repriced.worst, repriced.count.tokens
        await record_block(storage, exchange, refusal, worst, counted=counted, work=work)
        raise
    if thresholds is not None:
        for crossing in thresholds.crossed(decision, tried.given_back):
            event = ThresholdCrossed(
                crossing.budget,
                crossing.member,
                crossing.threshold_bp,
                crossing.used_bp,
                exchange.request_id,
                crossing.since_ms,
                crossing.limit,
                crossing.unit,
                crossing.scope,
            )
            exchange.reporter.notice(event)
    return Ticket(
        plan=plan,
        admitted=decision,
        requested_ceiling=priced.requested,
        bounded=priced.bounded,
        budget_state=_state_after(decision, plan, exchange, min_output),
        keys=tuple(keys),
    )


def _plan(
    exchange: Exchange,
    owner: str,
    expires_at: datetime,
    counters: list[CounterRef],
    caps: list[RequestCap],
    min_output: int,
    priced: Priced,
    reservation_id: str,
) -> ReservationPlan:
    return ReservationPlan(
        reservation_id=reservation_id,
        owner=owner,
        expires_at=expires_at,
        counters=tuple(counters),
        worst=priced.worst,
        caps=tuple(caps),
        min_output=max(min_output, exchange.spec.min_ceiling(exchange.body)),
        template=exchange.template_row(),
    )


def _state_after(
    admitted: Admitted, plan: ReservationPlan, exchange: Exchange, min_output: int
) -> str | None:
    """The state of the tightest budget (the one the headers name) with this request in
    flight: as `spendgate budgets` would show it now (docs/budgets.md)."""
    tightest = admitted.tightest
    if tightest is None:
        return None
    amount = admitted.amounts[plan.counters.index(tightest.ref)]
    after = CounterState(
        tightest.ref, tightest.limit, tightest.spent, tightest.reserved + amount, tightest.oldest_ms
    )
    models = exchange.snapshot.models
    minimal = _minimal(models, tightest.ref.budget, tightest.ref.member, min_output)
    return budget_state(after, minimal)


@functools.lru_cache(maxsize=MINIMAL_CACHE)
def _minimal(models: ModelTable, budget: Budget, member: str, min_output: int) -> int:
    """`minimal_request`, remembered per model table (each snapshot has its own: a reload
    builds a new one), so an admitted request does not price every model again."""
    return minimal_request(budget, member, model_prices(models), min_output)


def _told(
    refusal: GatewayError, refused: Refused, exchange: Exchange, min_output: int
) -> GatewayError:
    """A budget's refusal names it in its headers, with the state this refusal leaves it
    in: as `spendgate budgets` shows it once the refusal is in the ledger."""
    counter = refused.counter
    if counter is not None and counter.ref.budget.kind is Kind.BUDGET:
        ref = counter.ref
        minimal = _minimal(exchange.snapshot.models, ref.budget, ref.member, min_output)
        over = isinstance(refusal, BudgetExceeded)
        condition = budget_state(counter, minimal, Refusals(unanswered=over, lately=1))
        refusal.extra_headers.update(budget_headers(counter, condition))
    return refusal


def _cheap(ref: CounterRef) -> bool:
    """A limit that a request fills by its mere arrival (requests, concurrency)."""
    budget = ref.budget
    return (
        budget.kind is Kind.LIMIT
        and budget.blocks
        and budget.unit in (Unit.REQUESTS, Unit.CONCURRENT)
    )


async def _refuse_on_full_rate_limits(
    storage: Storage, counters: list[CounterRef], now: datetime, full: FullLimits | None
) -> None:
    """A request-rate or concurrency limit with no room left refuses at once, before the
    body is counted (the atomic reservation decides again, whatever this read saw). With
    ``full``, only the limits this process has seen full are read."""
    cheap = tuple(
        ref
        for ref in counters
        if _cheap(ref) and (full is None or full.may_be_full(ref.budget.name, ref.member))
    )
    if not cheap:
        return
    for state in await storage.counter_states(cheap, now):
        if state.room < 1:
            raise _rate_limited(state, 1, now)
        if full is not None:
            full.saw_room(state.ref.budget.name, state.ref.member)


async def _refuse_blocked_loop(
    storage: Storage, book: BudgetBook, key_id: str, found: str, now: datetime
) -> None:
    """A (key, fingerprint) blocked as a loop is refused before it is counted or priced."""
    block = await storage.loop_block(key_id, found)
    if block is not None and block.blocks(now):
        raise _loop_detected(block, book, now, None)


def _loop_counter(refused: Refused) -> CounterState | None:
    counter = refused.counter
    return counter if counter is not None and counter.ref.budget.kind is Kind.LOOP else None


async def _strike_loop(
    storage: Storage, book: BudgetBook, refused: Refused, exchange: Exchange, found: str
) -> LoopDetected:
    """The loop detector refused: the pair is struck (blocked for a cool-down that grows
    with each repeat detection; `spendgate.domain.loops`) and the refusal says until when.
    The repeats it counted are forgiven (the block is their penalty): when the block ends,
    the pair has ``loop_max_repeats`` sends again before it is detected again."""
    counter = _loop_counter(refused)
    assert counter is not None
    assert book.loops is not None
    now = exchange.arrived
    block = await storage.strike_loop(
        book.loops,
        key_id=exchange.key.id,
        fingerprint=found,
        model=exchange.route.name,
        now=now,
    )
    ref = counter.ref
    await storage.reset_budget(ref.budget.name, ref.member, ref.window.since_ms)
    if book.loops.escalate_after and book.loops.escalates(
        await storage.loop_blocks(), exchange.key.id, now
    ):  # too many loops at once: the whole key is blocked
        block = await storage.strike_loop(
            book.loops,
            key_id=exchange.key.id,
            fingerprint=KEY_WIDE,
            model=exchange.route.name,
            now=now,
        )
    key = exchange.key
    model = exchange.route.name
    exchange.reporter.notice(
        LoopStruck(key.id, model, block.strikes, block.key_wide, key.team, key.service)
    )
    return _loop_detected(block, book, now, counter.spent + counter.reserved + 1)


def _loop_detected(
    block: LoopBlock, book: BudgetBook, now: datetime, repeats: int | None
) -> LoopDetected:
    detector = book.loop
    assert detector is not None
    length = detector.period.length
    until = block.until.astimezone(book.calendar.zone).isoformat()
    window_s = length.total_seconds() if length else 0.0
    return LoopDetected(
        loop_message(block, now, until, repeats, window_s), blocked_by=detector.name
    )


def _busy(refused: Refused, queue: AdmissionQueue) -> BudgetBusy:
    counter = refused.counter
    assert counter is not None
    ref, unit = counter.ref, counter.ref.budget.unit
    wait = min(MAX_RETRY_AFTER_S, max(1.0, queue.typical_s))
    here = queue.holding(ref.id)
    return BudgetBusy(
        f"Budget {ref.budget.describe(ref.member)} has room: {unit.render(counter.spent)} "
        f"spent of {unit.render(counter.limit)}, but {unit.render(counter.reserved)} of it is "
        f"reserved by requests in flight ({here} of them in this gateway), which give back "
        f"what they do not use when they finish; this request needs at least "
        f"{unit.render(refused.needed)}. It waited {queue.max_wait_s:g} s in line. "
        f"Retry in {wait:.0f} s.",
        wait_s=wait,
        blocked_by=ref.budget.name,
    )


async def record_block(
    storage: Storage,
    exchange: Exchange,
    refusal: GatewayError,
    worst: WorstCase | None,
    *,
    counted: int | None = None,
    work: BodyWork | None = None,
) -> None:
    """A refused request leaves an uncharged ledger row naming what stopped it, with its
    worst case, and what a realistic estimate of its cost needs (`LedgerRow.fingerprint`
    and the ``would_*`` fields): its input (``counted`` tokens, else the worst case's
    bound) at the model's input rate, its output rate and ceiling."""
    row = exchange.row(
        now=exchange.started,
        usage=Usage(),
        status=(exchange.refusals_as or exchange.spec.adapter).error_status(refusal),
        error=refusal.message[:500],
    )
    try:
        found = await work.fingerprint(exchange) if work else fingerprint(exchange.body)
    except GatewayError:
        found = None
    blocked = dataclasses.replace(
        row, blocked_by=refusal.blocked_by or type(refusal).__name__, fingerprint=found
    )
    if worst is not None:
        tokens = worst.input_tokens if counted is None else counted
        rates = exchange.price.rates_for(tokens)
        blocked = dataclasses.replace(
            blocked,
            would_cost_nanos=worst.amount(Unit.NANOS, worst.requested_ceiling),
            would_input_nanos=token_cost(tokens, rates.input),
            would_output_rate=rates.output * worst.choices,
            would_ceiling=worst.requested_ceiling,
        )
    await asyncio.shield(storage.record(blocked))
    exchange.reporter.outcome(RefusedEvent(blocked))


def _check_input_caps(caps: list[RequestCap], input_tokens: int, exact: bool) -> None:
    for cap in caps:
        if cap.max_input_tokens is not None and input_tokens > cap.max_input_tokens:
            how = "" if exact else " (an upper-bound estimate)"
            raise RequestCapExceeded(
                f"This request has {input_tokens:,} input tokens{how}, over the limit of "
                f"{cap.max_input_tokens:,} per request for {cap.target.scope.value} "
                f"'{cap.target.match}'. Shorten the prompt or split the work.",
                blocked_by=f"request-cap:{cap.target.scope.value}:{cap.target.match}",
            )


def _refusal(
    refused: Refused, worst: WorstCase, book: BudgetBook, now: datetime, settles_s: float
) -> GatewayError:
    if refused.counter is None:
        cap = refused.cap
        assert cap is not None
        assert cap.max_request_nanos is not None
        return RequestCapExceeded(
            f"Even with the smallest output ceiling this request would cost up to "
            f"{Unit.NANOS.render(refused.needed)}, over the per-request limit of "
            f"{Unit.NANOS.render(cap.max_request_nanos)} for {cap.target.scope.value} "
            f"'{cap.target.match}'.",
            blocked_by=f"request-cap:{cap.target.scope.value}:{cap.target.match}",
        )
    counter = refused.counter
    budget = counter.ref.budget
    if budget.kind is Kind.LIMIT:
        return _rate_limited(counter, refused.needed, now, settles_s)
    if budget.kind is Kind.LOOP:  # without a fingerprint (never on the request path)
        seconds = budget.period.length.total_seconds() if budget.period.length else 0
        return LoopDetected(
            f"Loop detected: this key sent the same request {counter.spent + counter.reserved + 1} "
            f"times within {seconds:g} s. Change the request, or fix the client that repeats it.",
            blocked_by=budget.name,
        )
    return BudgetExceeded(_budget_message(counter, refused.needed, book), blocked_by=budget.name)


# A concurrency slot frees when some request in flight ends: suggest a short wait.
CONCURRENCY_WAIT_S = 1.0
# Limits whose requests in flight reserve a worst case and settle at their real amount.
_GIVEN_BACK = (Unit.TOKENS, Unit.NANOS)


def _rate_limited(
    counter: CounterState, needed: int, now: datetime, settles_s: float = CONCURRENCY_WAIT_S
) -> RateLimited:
    """``settles_s``: how long a request in flight typically takes to end."""
    budget = counter.ref.budget
    frees = counter.frees_at(now)
    wait = CONCURRENCY_WAIT_S if frees is None else max(0.001, (frees - now).total_seconds())
    unit = budget.unit
    held = unit in _GIVEN_BACK and counter.reserved > 0 and counter.spent + needed <= counter.limit
    if held:
        # What fills the window is reserved by requests in flight, which give back what
        # they do not use when they end: room comes then, not when the window moves on.
        wait = min(wait, min(MAX_RETRY_AFTER_S, max(CONCURRENCY_WAIT_S, settles_s)))
    if unit is Unit.CONCURRENT:
        what = f"{counter.reserved} requests in flight of {counter.limit} allowed at once"
    else:
        in_flight = (
            f" ({unit.render(counter.reserved)} of it reserved by requests in flight, which "
            "give back what they do not use when they end)"
            if held
            else ""
        )
        what = (
            f"{unit.render(counter.spent + counter.reserved)} of {unit.render(counter.limit)} "
            f"per {_human(budget.period.length)} used{in_flight}; this request needs "
            f"{unit.render(needed)}"
        )
    when = f"Room frees up in {wait:.1f} s."
    if needed > counter.limit:
        # More than the whole window holds: no wait lets it through, so no retry can help.
        wait = math.inf
        when = (
            "That is more than a whole window holds: lower the output ceiling or shorten "
            "the prompt, or ask an operator to raise the limit."
            if unit is Unit.TOKENS
            else "The limit lets none through: ask an operator to raise it."
        )
    return RateLimited(
        f"Rate limit reached for {budget.describe(counter.ref.member)}: {what}. {when}",
        wait_s=wait,
        tokens=unit is Unit.TOKENS,
        window=refusal_window(counter, now, now + timedelta(seconds=wait) if held else None),
        blocked_by=budget.name,
    )


def _human(length: timedelta | None) -> str:
    if length is None:
        return "window"
    seconds = length.total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return unit if count == 1 else f"{count} {unit}s"
    return f"{seconds:g} seconds"


def _budget_message(counter: CounterState, needed: int, book: BudgetBook) -> str:
    ref = counter.ref
    unit = ref.budget.unit
    resets = ref.window.resets_at
    when = (
        f"It resets at {resets.astimezone(book.calendar.zone).isoformat()}."
        if resets is not None
        else "It never resets (lifetime budget); ask an operator to raise it."
    )
    return (
        f"{BUDGET_EXHAUSTED}{ref.budget.describe(ref.member)}: "
        f"{unit.render(counter.spent)} spent and {unit.render(counter.reserved)} reserved "
        f"of {unit.render(counter.limit)}; this request needs at least {unit.render(needed)}. "
        f"{when}"
    )


def charged(exchange: Exchange, row: LedgerRow) -> tuple[int, ...]:
    """What each counter of the request's ticket is charged for ``row`` (none without a
    ticket): computed once per request, for `settled_above` and `settlement`."""
    ticket = exchange.ticket
    if ticket is None:
        return ()
    usage = Usage(input_tokens=row.input_tokens, output_tokens=row.output_tokens)
    return actual_amounts(ticket.plan.counters, usage, row.cost_nanos)


def settled_above(
    exchange: Exchange, row: LedgerRow, amounts: tuple[int, ...] | None = None
) -> list[SettledAbove]:
    """The counters this request was charged more on than it reserved (its worst case
    missed something): each is an event, never silently absorbed. ``amounts``: what
    `charged` gives for ``row``, if the caller has it already."""
    ticket = exchange.ticket
    if ticket is None:
        return []
    charged_now = charged(exchange, row) if amounts is None else amounts
    return [
        SettledAbove(row.request_id, ref.budget.name, ref.member, reserved, amount)
        for ref, reserved, amount in zip(
            ticket.plan.counters, ticket.admitted.amounts, charged_now, strict=True
        )
        if amount > reserved
    ]


def settlement(
    exchange: Exchange, row: LedgerRow, amounts: tuple[int, ...] | None = None
) -> Unwritten:
    """What ending the request writes: its row, and the lease it settles with what each
    counter is charged (a trace's lease has no counters). ``amounts`` as for
    `settled_above`."""
    ticket = exchange.ticket
    if ticket is None:
        return Unwritten(row, exchange.trace)
    charged_now = charged(exchange, row) if amounts is None else amounts
    return Unwritten(row, ticket.plan.reservation_id, charged_now)


async def finish(storage: Storage, item: Unwritten) -> None:
    """Write the request's ledger row, settling its lease in the same transaction."""
    if item.reservation_id is None:
        await storage.record(item.row)
    else:
        await storage.settle(item.reservation_id, item.amounts, item.row)
