"""The admission decision: price a request's worst case, and find the largest output
ceiling that every applicable budget and request cap can still afford. Pure.

The arithmetic is exact in integers. For a dollar budget with ``room`` nano-dollars left,
a ceiling of ``k`` output tokens (per choice, ``n`` choices) costs
``input_cost + ceil(k * n * rate / 10**6)``, which fits iff
``k * n * rate <= (room - input_cost) * 10**6``; so the largest affordable ``k`` is
``floor((room - input_cost) * 10**6 / (n * rate))``. For a token budget it is
``floor((room - input_tokens) / n)``. The request is admitted with the smallest of these
and its own ceiling; clamped if that is below what it asked for but at least the
configured minimum; refused otherwise, naming the budget that was tightest.

Invariant (checked by a property test): if every reservation is settled at most at its
reserved amount, ``spent + reserved <= limit`` holds on every hard budget at all times.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from spendgate.domain.budgets import Budget, CounterRef, Kind, RequestCap, Unit
from spendgate.domain.pricing import Price
from spendgate.money import TOKENS_PER_PRICE_UNIT, Nanos, token_cost


@dataclass(frozen=True, slots=True)
class WorstCase:
    input_tokens: int  # an upper bound unless input_exact
    input_exact: bool
    requested_ceiling: int  # output tokens per choice the request may produce
    choices: int
    input_cost: int  # nano-dollars: every input token at the dearest input-side rate
    output_rate: int  # nano-dollars per million output tokens (the dearer of output/reasoning)

    def amount(self, unit: Unit, ceiling: int) -> int:
        if unit is Unit.REQUESTS or unit is Unit.CONCURRENT:
            return 1
        output = ceiling * self.choices
        if unit is Unit.TOKENS:
            return self.input_tokens + output
        return self.input_cost + token_cost(output, Nanos(self.output_rate))

    def affordable(self, unit: Unit, room: int) -> int:
        """Largest ceiling whose amount fits in ``room``; -1 if not even the input fits."""
        if unit is Unit.REQUESTS or unit is Unit.CONCURRENT:
            return self.requested_ceiling if room >= 1 else -1
        fixed = self.input_tokens if unit is Unit.TOKENS else self.input_cost
        if room < fixed:
            return -1
        spare = room - fixed
        if unit is Unit.TOKENS:
            return spare // self.choices
        if self.output_rate == 0:
            return self.requested_ceiling
        return spare * TOKENS_PER_PRICE_UNIT // (self.choices * self.output_rate)


def worst_case(
    price: Price,
    *,
    input_tokens: int,
    input_exact: bool,
    ceiling: int,
    choices: int,
    cache_write: bool = True,
    cache_write_1h: bool = True,
    fees: int = 0,
    tiers: Iterable[str | None] = (None,),
    audio: bool = False,
) -> WorstCase:
    """Every input token at the dearest input-side rate the request can incur (uncached,
    read from the cache, and a cache write only where it may write the cache:
    ``cache_write``, ``cache_write_1h``), the
    output at the dearer of output and reasoning, in the dearest of the service ``tiers``
    the request can be served in (None: standard), and ``fees`` (nano-dollars: per-call
    tool fees, at most) on top of the input. ``audio``: the input may hold audio, billed
    at the audio input rate where it is dearer."""
    if price.free:
        return WorstCase(input_tokens, input_exact, ceiling, choices, 0, 0)
    rates = price.worst_rates(input_tokens, tiers).full()
    candidates = [rates.input, rates.cached_input]  # a cache read is never dearer, unless set so
    if cache_write:
        candidates.append(rates.cache_write)
    if cache_write_1h:
        candidates.append(rates.cache_write_1h)
    if audio:
        candidates.append(rates.audio_input)
    output_rate = max(rates.output, rates.reasoning)
    return WorstCase(
        input_tokens=input_tokens,
        input_exact=input_exact,
        requested_ceiling=ceiling,
        choices=choices,
        input_cost=token_cost(input_tokens, max(candidates)) + fees,
        output_rate=output_rate,
    )


@dataclass(frozen=True, slots=True)
class CounterState:
    ref: CounterRef
    limit: int  # effective limit: the configured one or a runtime override
    spent: int
    reserved: int
    oldest_ms: int | None = field(default=None, compare=False)  # oldest bucket in use

    def frees_at(self, now: datetime, *, adding: bool = False) -> datetime | None:
        """When some of what fills this counter leaves its window: a calendar window's
        reset, or for a rolling window the moment its oldest used bucket ages out
        (``adding``: counting the amount this request is about to put in the bucket)."""
        window = self.ref.window
        length = self.ref.budget.period.length
        if length is None or window.resets_at is None:
            return window.resets_at
        oldest = self.oldest_ms if self.oldest_ms is not None else None
        if oldest is None and adding:
            oldest = window.bucket_ms
        if oldest is None:
            return now
        width = window.resets_at - window.since - length
        return datetime.fromtimestamp(oldest / 1000, UTC) + length + width

    @property
    def room(self) -> int:
        return self.limit - self.spent - self.reserved

    @property
    def used_bp(self) -> int:
        if self.limit <= 0:
            return 10_000
        return (self.spent + self.reserved) * 10_000 // self.limit

    @property
    def state(self) -> str:
        """``ok``, ``soft`` (past a soft threshold), ``held`` (a hard budget whose room is
        all reserved by requests in flight, which give back what they do not use: newcomers
        wait in line) or ``exhausted`` (what is spent, or for a rate limit what its window
        holds, leaves no room). Whether it refused someone lately is the ledger's to say
        (`BudgetView.state`)."""
        budget = self.ref.budget
        if self.room <= 0:
            gives_back = budget.clamps and budget.blocks and self.reserved > 0
            return "held" if gives_back and self.spent < self.limit else "exhausted"
        if any(self.used_bp >= bp for bp in self.ref.budget.soft_bp):
            return "soft"
        return "ok"


@dataclass(frozen=True, slots=True)
class Admitted:
    ceiling: int
    clamped: bool
    amounts: tuple[int, ...]  # reserved on each counter, in the order given
    tightest: CounterState | None  # the hard budget that affords the least output (before)
    # every counter as it was before this request (for headers; not part of the decision)
    states: tuple[CounterState, ...] = field(default=(), compare=False)
    shadow_blocks: tuple[str, ...] = ()  # shadow limits this request would have hit


@dataclass(frozen=True, slots=True)
class Refused:
    counter: CounterState | None  # the budget that cannot afford the request...
    cap: RequestCap | None  # ...or the per-request cap it exceeds
    needed: int  # the least the request could have reserved (in the blocker's unit)


def cap_ceiling(worst: WorstCase, caps: Sequence[RequestCap]) -> tuple[int, RequestCap | None]:
    """The largest ceiling the per-request dollar caps allow, and the cap that binds."""
    best, binding = worst.requested_ceiling, None
    for cap in caps:
        if cap.max_request_nanos is None:
            continue
        allowed = worst.affordable(Unit.NANOS, cap.max_request_nanos)
        if allowed < best:
            best, binding = allowed, cap
    return best, binding


def decide(
    worst: WorstCase,
    counters: Sequence[CounterState],
    caps: Sequence[RequestCap],
    min_output: int,
) -> Admitted | Refused:
    """Rate limits (and loop detection) never clamp: a request that does not fit whole is
    refused, to be retried once the window has moved. Budgets clamp down to ``min_output``.
    Shadow counters and soft budgets are reserved on like the others but never refuse.

    Runs inside the reservation's write transaction, so it computes each counter's
    affordable ceiling once and each unit's amount once."""
    requested = worst.requested_ceiling
    floor = min(min_output, requested)
    ceiling, cap = cap_ceiling(worst, caps) if caps else (requested, None)
    if ceiling < floor:
        return Refused(None, cap, worst.amount(Unit.NANOS, floor))
    blocker: CounterState | None = None
    tightest: CounterState | None = None
    least = 0
    shadows: list[tuple[CounterState, int]] = []
    for counter in counters:
        budget = counter.ref.budget
        if budget.shadow:
            shadows.append((counter, worst.affordable(budget.unit, counter.room)))
        if not budget.blocks:
            continue
        allowed = worst.affordable(budget.unit, counter.room)
        if not budget.clamps:  # a limit: the request fits whole, or not at all
            if allowed < requested:
                return Refused(counter, None, worst.amount(budget.unit, requested))
            continue
        # Rooms in tokens and in nano-dollars do not compare; what they afford does.
        if tightest is None or allowed < least:
            tightest, least = counter, allowed
        if allowed < ceiling:
            ceiling, blocker = allowed, counter
    if ceiling < floor:
        assert blocker is not None
        return Refused(blocker, None, worst.amount(blocker.ref.budget.unit, floor))
    by_unit: dict[Unit, int] = {}
    amounts = []
    for counter in counters:
        unit = counter.ref.budget.unit
        amount = by_unit.get(unit)
        if amount is None:
            amount = by_unit[unit] = worst.amount(unit, ceiling)
        amounts.append(amount)
    return Admitted(
        ceiling=ceiling,
        clamped=ceiling < requested,
        amounts=tuple(amounts),
        tightest=blocker or tightest,
        states=tuple(counters),
        shadow_blocks=tuple(c.ref.budget.name for c, allowed in shadows if allowed < ceiling),
    )


@dataclass(frozen=True, slots=True)
class Crossing:
    budget: str
    member: str
    threshold_bp: int
    used_bp: int  # spent + reserved after the reservation that crossed it
    # where and of what (for alerts; not part of what was crossed)
    since_ms: int = field(default=0, compare=False)  # the window it was crossed in
    limit: int = field(default=0, compare=False)
    unit: str = field(default="", compare=False)
    scope: str = field(default="", compare=False)


class Thresholds:
    """Which soft thresholds of which budget members have been crossed in their current
    window: a reservation takes a budget past one when spent + reserved was below it before
    and is at or above it after. Each is reported once per window, however often a budget
    hovering at the line crosses back and forth as reservations settle below their worst
    case. Bounded: past `MAX_SEEN` remembered crossings it starts over."""

    MAX_SEEN = 100_000

    def __init__(self, alerting: Mapping[str, tuple[int, ...]] | None = None) -> None:
        self._seen: set[tuple[str, str, int, int]] = set()
        # Thresholds that alerts watch besides each budget's soft ones, by budget name
        # ("*": every budget); replaced whole on reload.
        self.alerting: Mapping[str, tuple[int, ...]] = alerting or {}

    def _of(self, budget: Budget) -> tuple[int, ...]:
        if not self.alerting:
            return budget.soft_bp
        extra = self.alerting.get(budget.name, ()) + self.alerting.get("*", ())
        return tuple(sorted({*budget.soft_bp, *extra})) if extra else budget.soft_bp

    def _after(self, admitted: Admitted) -> Iterator[tuple[CounterState, tuple[int, ...], int]]:
        """(state, its thresholds, basis points used after the reservation) of each
        watched member."""
        for state, amount in zip(admitted.states, admitted.amounts, strict=True):
            budget = state.ref.budget
            marks = self._of(budget)
            if budget.kind is not Kind.BUDGET or not marks or state.limit <= 0:
                continue
            yield state, marks, (state.spent + state.reserved + amount) * 10_000 // state.limit

    def _passed(self, admitted: Admitted) -> Iterator[tuple[CounterState, int, int]]:
        """(state, threshold, basis points after) for each threshold the reservation
        takes a budget member past, whether reported before or not."""
        for state, marks, after in self._after(admitted):
            for threshold in marks:
                if state.used_bp < threshold <= after:
                    yield state, threshold, after

    def would_cross(self, admitted: Admitted) -> bool:
        """Whether the reservation takes any budget member past a threshold (reported
        before or not); nothing is remembered."""
        return next(self._passed(admitted), None) is not None

    def crossed(self, admitted: Admitted, given_back: Admitted | None = None) -> list[Crossing]:
        """The thresholds ``admitted`` takes a budget member past, each once per window.
        ``given_back``: a reservation of the same request released just before this one
        was made (`spendgate.pipeline.bound_first`); a threshold it passed counts as
        crossed here too if this reservation reaches it, since requests reserving while it
        was held found that line already behind them."""
        passed = list(self._passed(admitted))
        if given_back is not None:
            reached = {state.ref: (state, after) for state, _, after in self._after(admitted)}
            for state, threshold, _ in self._passed(given_back):
                now = reached.get(state.ref)
                if now is not None and now[1] >= threshold:
                    passed.append((now[0], threshold, now[1]))
        found = []
        for state, threshold, after in passed:
            budget = state.ref.budget
            seen = (budget.name, state.ref.member, state.ref.window.since_ms, threshold)
            if seen in self._seen:
                continue
            if len(self._seen) >= self.MAX_SEEN:
                self._seen.clear()
            self._seen.add(seen)
            found.append(
                Crossing(
                    budget.name,
                    state.ref.member,
                    threshold,
                    after,
                    state.ref.window.since_ms,
                    state.limit,
                    budget.unit.value,
                    budget.target.scope.value,
                )
            )
        return found
