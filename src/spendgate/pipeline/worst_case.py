"""A request's worst case, priced before it is sent: every way the provider could bill it.

* Input: the body's tokens, counted offline, with a margin (exact for OpenAI encodings, an
  upper bound for others). Where the body does not show all the input the provider will
  bill (a stored response, a conversation, a file by id, server-side tools:
  `spendgate.dialects.hidden`), the budgets decide (``hidden_input``): bound it by what
  the provider could bill (the model's input window, once per model pass: one, plus one
  per server tool call the request allows), refuse the request, or (soft budgets only)
  take the body's count as an estimate. A server-side compaction (Anthropic) may run
  before each pass, a pass over the context of its own: twice as many passes; none when
  the body's input stays below its trigger and nothing else can add to it.
* Cache writes: only where the request may write the provider's cache.
* Audio: the input at the model's audio input rate where it is dearer and the body may hold
  audio (Gemini: an audio, video or untyped file part).
* Service tier: the dearest the request can be served in (what it asks for, else the
  account's default: ``providers.*.default_service_tier``).
* Tool fees: each server tool's per-call fee, for every call the request allows.
* Output: the request's ceiling, or the model's maximum (never more than that), times its
  choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from spendgate.dialects.hidden import HiddenInput
from spendgate.domain.admission import WorstCase, worst_case
from spendgate.domain.budgets import CounterRef, HiddenInputPolicy, Kind
from spendgate.domain.tokens import TokenCount
from spendgate.errors import InvalidRequest, RequestCapExceeded
from spendgate.pipeline.exchange import Exchange

# Chat formatting overhead and tokenizer revisions make even an "exact" local count drift a
# little from the provider's; the reservation adds this margin so settlement stays below it.
INPUT_MARGIN_TOKENS = 32
INPUT_MARGIN_PERCENT = 10


def input_upper_bound(counted: int, context_window: int | None) -> int:
    padded = counted + INPUT_MARGIN_TOKENS + -(-counted * INPUT_MARGIN_PERCENT // 100)
    return min(padded, context_window) if context_window else padded


class Bounding(Enum):
    COUNT = "count"  # the body shows all the input
    BOUND = "bound"  # hidden input, bounded by the model's window and tool passes
    ESTIMATE = "estimate"  # hidden input, but only estimating budgets apply


@dataclass(frozen=True, slots=True)
class Priced:
    worst: WorstCase
    requested: int | None  # the output ceiling the request asked for itself
    count: TokenCount  # the body's input, counted
    hidden: HiddenInput
    bounded: str | None = None  # what the header says when hidden input was bounded


def hidden_input_policy(counters: list[CounterRef], hidden: HiddenInput) -> Bounding:
    """How the budgets that apply treat input the body does not show; raises
    `RequestCapExceeded` when one of them refuses such requests."""
    if not hidden:
        return Bounding.COUNT
    budgets = [ref.budget for ref in counters if ref.budget.kind is Kind.BUDGET]
    for budget in budgets:
        if budget.hidden_input is HiddenInputPolicy.REFUSE and budget.blocks:
            raise RequestCapExceeded(
                f"This request makes the provider bill input its body does not show "
                f"({hidden.describe(0)}), and budget '{budget.name}' refuses such requests "
                "(hidden_input: refuse). Send the context in the request body instead.",
                blocked_by=f"hidden-input:{budget.name}",
            )
    if budgets and all(b.hidden_input is HiddenInputPolicy.ESTIMATE for b in budgets):
        return Bounding.ESTIMATE
    return Bounding.BOUND


def price_worst_case(
    exchange: Exchange,
    default_ceiling: int,
    *,
    assumed_tool_calls: int,
    bounding: Bounding | None = None,
    count: TokenCount | None = None,
) -> Priced:
    """The request's worst case (`Bounding.BOUND` for hidden input unless told otherwise).
    ``count``: the input as already bounded (else the body is counted)."""
    spec, route, price, body = exchange.spec, exchange.route, exchange.price, exchange.body
    if count is None:
        count = spec.input_counter(exchange.counted_as, body)
    requested, choices = spec.requested_output(body)
    hidden = exchange.hidden_input().for_input(input_upper_bound(count.tokens, None))
    if bounding is None or not hidden:
        bounding = Bounding.BOUND if hidden else Bounding.COUNT
    ceiling = 0  # embeddings: input only, no output to reserve
    if spec.ceiling_fields:
        ceiling = requested or route.max_output_tokens or default_ceiling
        if route.max_output_tokens:  # the model cannot write more, whatever was asked
            ceiling = min(ceiling, route.max_output_tokens)
    input_tokens = input_upper_bound(count.tokens, price.max_input_tokens)
    exact, bounded = count.exact, None
    if bounding is Bounding.BOUND:
        window = price.max_input_tokens
        if not window:
            raise RequestCapExceeded(
                f"This request makes the provider bill input its body does not show "
                f"({hidden.describe(assumed_tool_calls)}), and the input window of "
                f"'{route.name}' is unknown, so its cost has no bound. An operator can set "
                f"models.{route.name}.price.max_input_tokens.",
                blocked_by="hidden-input:unbounded",
            )
        passes = hidden.passes(assumed_tool_calls)
        input_tokens, exact = window * passes, False
        bounded = (
            f"{hidden.describe(assumed_tool_calls)}: reserved as {input_tokens} input tokens "
            f"({passes} x the {window}-token window)"
        )
    elif bounding is Bounding.ESTIMATE:
        bounded = (
            f"{hidden.describe(assumed_tool_calls)}: estimated, the body counted as all the "
            f"input (hidden_input: estimate)"
        )
    cache_write, cache_write_1h = spec.cache_writes(body)
    worst = worst_case(
        price,
        input_tokens=input_tokens,
        input_exact=exact,
        ceiling=ceiling,
        choices=choices,
        cache_write=cache_write,
        cache_write_1h=cache_write_1h,
        fees=hidden.fees(price.tool_fee, assumed_tool_calls),
        tiers=spec.service_tiers(body, exchange.provider.default_service_tier),
        audio=spec.may_hold_audio(body),
    )
    return Priced(worst, requested, count, hidden, bounded)


def would_cost(exchange: Exchange, default_ceiling: int, assumed_tool_calls: int) -> Priced | None:
    """The request priced as `admit` prices it: what a refusal made before admission (an
    open circuit breaker) saved. None if the body cannot be priced."""
    try:
        return price_worst_case(exchange, default_ceiling, assumed_tool_calls=assumed_tool_calls)
    except (InvalidRequest, RequestCapExceeded):
        return None
