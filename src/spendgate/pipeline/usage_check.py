"""Usage is vetted before it is believed: counts that cannot be right are treated as
missing. The dialect's parser refuses what is malformed (a missing or empty object, a
negative, a string, a float: `SurfaceSpec.usage_problem`); here, what is impossible for
this request: more output than its ceiling allowed, more input than the model's window
over every pass the request could make, or an absurd count. Such a request is charged an
estimate instead, never more than what it reserved, flagged in its ledger row
(``usage_estimated``, ``usage_problem``) and reported as a `UsageAnomaly` event."""

from __future__ import annotations

import dataclasses

from spendgate.domain.output_tokens import GeneratedText
from spendgate.domain.usage import Usage
from spendgate.pipeline.exchange import Exchange
from spendgate.pipeline.worst_case import input_upper_bound

ABSURD_TOKENS = 10**9  # no request, anywhere, bills a billion tokens (nor tool calls)
_COUNTS = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "audio_input_tokens",
)


def output_limit(exchange: Exchange) -> int | None:
    """The most output the request could really have produced: its reserved ceiling, else
    its own ceiling or the model's maximum, times its choices; None if unknown."""
    ticket = exchange.ticket
    if ticket is not None:
        return ticket.ceiling * ticket.plan.worst.choices
    requested, choices = exchange.spec.requested_output(exchange.body)
    ceiling = requested or exchange.route.max_output_tokens
    return ceiling * choices if ceiling else None


def input_limit(exchange: Exchange) -> int | None:
    """The most input the provider could have billed: what was reserved for it, else the
    model's window once per pass; None if unknown."""
    ticket = exchange.ticket
    if ticket is not None:
        return max(ticket.plan.worst.input_tokens, exchange.price.max_input_tokens or 0)
    window = exchange.price.max_input_tokens
    if not window:
        return None
    settings = exchange.snapshot.config.budget_settings
    return window * exchange.hidden_input().passes(settings.assumed_tool_calls)


def implausible(usage: Usage, exchange: Exchange) -> str | None:
    """Why ``usage`` cannot be this request's, or None."""
    for name in _COUNTS:
        if getattr(usage, name) >= ABSURD_TOKENS:
            return f"usage {name} of {getattr(usage, name)} is impossible"
    for tool, calls in usage.tool_calls:  # billed per call: 2**64 of them priced past any store
        if calls >= ABSURD_TOKENS:
            return f"usage {tool} calls of {calls} is impossible"
    limit = output_limit(exchange)
    output = usage.without_apart().output_tokens  # a compaction's summary has no ceiling
    if limit is not None and output > limit:
        return f"usage output_tokens {output} above the ceiling of {limit}"
    window = input_limit(exchange)
    if window is not None and usage.input_tokens > window:
        return f"usage input_tokens {usage.input_tokens} above the most the model reads ({window})"
    return None


def capped(usage: Usage, exchange: Exchange) -> Usage:
    """An estimate never charges more output than the request could have produced."""
    limit = output_limit(exchange)
    if limit is not None and usage.output_tokens > limit:
        return dataclasses.replace(usage, output_tokens=limit)
    return usage


def believed(
    exchange: Exchange, reported: Usage | None, problem: str | None, text: str | GeneratedText
) -> tuple[Usage, str | None]:
    """The usage to charge, and what was wrong with the provider's if it was not believed:
    ``reported`` when it is plausible, else an estimate from ``text`` (capped)."""
    if reported is not None:
        problem = implausible(reported, exchange)
        if problem is None:
            return reported, None
    return capped(exchange.estimate(text), exchange), problem or "no usage reported"


def compaction_cut_short(usage: Usage, reported: Usage | None, exchange: Exchange) -> Usage:
    """``usage`` of a stream cut short (`cut_short`), with the pass of a server-side
    compaction that may have run before the answer (Anthropic): its tokens are reported
    only in the closing ``message_delta`` (``usage.iterations``), which a cut stream never
    got. Where the request enabled one and could reach its trigger (as its worst case
    allowed one), a compaction reading the whole context (the body's input, as estimated)
    is charged apart, within the input reserved; the summary it wrote is not known, and
    not counted."""
    if reported is not None and reported.apart:  # its iterations arrived: counted
        return usage
    context = exchange.estimate().input_tokens
    if not exchange.hidden_input().for_input(input_upper_bound(context, None)).compaction:
        return usage
    ticket = exchange.ticket
    if ticket is not None:  # never past the input its worst case reserved
        context = min(context, max(0, ticket.plan.worst.input_tokens - usage.input_tokens))
    if context <= 0:
        return usage
    step = Usage(input_tokens=context, estimated=True)
    return dataclasses.replace(usage, input_tokens=usage.input_tokens + context, apart=(step,))
