"""Prices and the cost of a usage. Pure: the catalogs that fill a `PriceBook` live in
`spendgate.pricing`.

All rates are integer nano-dollars per million tokens, tool fees integer nano-dollars per
call (see `spendgate.money`).

A price has up to three dimensions, resolved in this order by `Price.rates_for`:

1. **the service tier** the provider reports (``usage.service_tier``): a tier the price
   lists (`ServiceTier`) is either a multiplier on the standard rates or a rate card of its
   own; any other tier (``default``, ``standard``, ``auto``, an unknown name, None) is
   billed at the standard rates;
2. **the long-context tier** (`Tier`), chosen by the request's input tokens: the highest
   ``above_input_tokens`` the input exceeds. A multiplier tier scales the standard card's
   long-context rates (so priority above 272k costs 2 x the long-context rates, as OpenAI
   and LiteLLM bill it); a tier with a rate card of its own uses that card's long-context
   tiers only;
3. **per-call tool fees** (``tool_fees``), added for ``usage.tool_calls`` on top of the
   tokens; a tool without a fee costs nothing extra.

A computed charge is never below the real one: a multiplied rate is rounded up per million
tokens, then the tokens' cost (every class at its rate, summed exactly) is rounded up to
the next nano-dollar once. Once, not class by class: the worst case reserved before the
call (`spendgate.domain.admission.worst_case`) rounds its input once and its output once,
so a cost rounded class by class could exceed it by a few nano-dollars (an overrun) where
a rate is a fraction of a nano-dollar per token.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import NamedTuple

from spendgate.domain.usage import Usage
from spendgate.money import TOKENS_PER_PRICE_UNIT, Nanos

# The service tiers a price may list, as providers report them (lower-case). OpenAI reports
# ``priority`` when a request asked for ``fast``; Anthropic's ``speed: fast`` is ``fast``.
SERVICE_TIERS: tuple[str, ...] = ("priority", "fast", "ultrafast", "flex", "batch", "scale")
# The tools billed per call that a price may carry a fee for.
TOOLS: tuple[str, ...] = (
    "web_search",
    "web_search_preview",
    "web_fetch",
    "file_search",
    "code_execution",
    "image_generation",
)


class FullRates(NamedTuple):
    """`Rates` with every fallback filled in."""

    input: Nanos
    cached_input: Nanos
    cache_write: Nanos
    cache_write_1h: Nanos
    output: Nanos
    reasoning: Nanos
    audio_input: Nanos


@dataclass(frozen=True, slots=True)
class Rates:
    """Per-million-token rates that apply to one request."""

    input: Nanos
    output: Nanos
    cached_input: Nanos | None = None  # None: same as input
    cache_write: Nanos | None = None  # None: same as input
    cache_write_1h: Nanos | None = None  # None: same as cache_write
    reasoning: Nanos | None = None  # None: same as output
    audio_input: Nanos | None = None  # None: same as input (uncached audio input tokens)

    def full(self) -> FullRates:
        """The same rates with every fallback filled in."""
        write = self.input if self.cache_write is None else self.cache_write
        return FullRates(
            input=self.input,
            cached_input=self.input if self.cached_input is None else self.cached_input,
            cache_write=write,
            cache_write_1h=write if self.cache_write_1h is None else self.cache_write_1h,
            output=self.output,
            reasoning=self.output if self.reasoning is None else self.reasoning,
            audio_input=self.input if self.audio_input is None else self.audio_input,
        )

    @property
    def dearest_input(self) -> Nanos:
        """The dearest rate an input token can be billed at (uncached, cached or written)."""
        full = self.full()
        return max(full.input, full.cached_input, full.cache_write, full.cache_write_1h)

    @property
    def dearest_output(self) -> Nanos:
        """The dearest rate an output token can be billed at (plain or reasoning)."""
        full = self.full()
        return max(full.output, full.reasoning)

    def scaled(self, multiplier: Fraction) -> Rates:
        """Every rate times ``multiplier``, each rounded up to the next nano-dollar."""
        return Rates(
            input=_scale(self.input, multiplier),
            output=_scale(self.output, multiplier),
            cached_input=_scale_optional(self.cached_input, multiplier),
            cache_write=_scale_optional(self.cache_write, multiplier),
            cache_write_1h=_scale_optional(self.cache_write_1h, multiplier),
            reasoning=_scale_optional(self.reasoning, multiplier),
            audio_input=_scale_optional(self.audio_input, multiplier),
        )


def _scale(rate: Nanos, multiplier: Fraction) -> Nanos:
    return Nanos(-(-rate * multiplier.numerator // multiplier.denominator))


def _scale_optional(rate: Nanos | None, multiplier: Fraction) -> Nanos | None:
    return None if rate is None else _scale(rate, multiplier)


def max_rates(first: Rates, *others: Rates) -> Rates:
    """Field by field, the dearest of the given rates (fallbacks filled in first): rates
    that are never below any of them, whichever applies."""
    if others:
        dearest = FullRates(*map(max, zip(*(r.full() for r in (first, *others)), strict=True)))
    else:  # one tier (most requests): its rates with the fallbacks filled in
        dearest = first.full()
    input_, cached, write, write_1h, output, reasoning, audio = dearest
    return Rates(input_, output, cached, write, write_1h, reasoning, audio)


@dataclass(frozen=True, slots=True)
class Tier:
    """Rates that replace the base rates when a request's input exceeds ``above_input_tokens``."""

    above_input_tokens: int
    rates: Rates


def _long_context(rates: Rates, tiers: tuple[Tier, ...], input_tokens: int) -> Rates:
    chosen, threshold = rates, -1
    for tier in tiers:
        if threshold < tier.above_input_tokens < input_tokens:
            chosen, threshold = tier.rates, tier.above_input_tokens
    return chosen


@dataclass(frozen=True, slots=True)
class ServiceTier:
    """How one service tier bills a model: the standard rates (long-context tiers included)
    times ``multiplier``, or, when ``rates`` is given, a rate card of its own (``rates`` and
    its long-context ``tiers``; the standard long-context tiers do not apply to it)."""

    multiplier: Fraction = Fraction(1)
    rates: Rates | None = None
    tiers: tuple[Tier, ...] = ()


@dataclass(frozen=True, slots=True)
class Price:
    model: str
    rates: Rates
    tiers: tuple[Tier, ...] = ()  # long-context tiers of the standard rates
    free: bool = False
    max_output_tokens: int | None = None
    max_input_tokens: int | None = None
    source: str = "catalog"
    service_tiers: Mapping[str, ServiceTier] = field(default_factory=dict)
    tool_fees: Mapping[str, Nanos] = field(default_factory=dict)  # nano-dollars per call

    def rates_for(self, input_tokens: int, tier: str | None = None) -> Rates:
        """The rates of a request with ``input_tokens`` of input served in ``tier`` (None,
        or a tier this price does not list: the standard rates)."""
        service = None if tier is None else self.service_tiers.get(tier)
        if service is None:
            return _long_context(self.rates, self.tiers, input_tokens)
        if service.rates is not None:
            return _long_context(service.rates, service.tiers, input_tokens)
        return _long_context(self.rates, self.tiers, input_tokens).scaled(service.multiplier)

    def worst_rates(self, input_tokens: int, tiers: Iterable[str | None] = (None,)) -> Rates:
        """Field by field, the dearest rates of any of ``tiers`` (None: the standard rates;
        no tiers at all: the standard rates) at ``input_tokens``: what a worst case must
        reserve at when the tier the provider will use is not known yet."""
        first, *others = [self.rates_for(input_tokens, tier) for tier in tiers] or [
            self.rates_for(input_tokens)
        ]
        return max_rates(first, *others)

    def dearest_tier(self, candidates: Iterable[str | None], input_tokens: int = 0) -> str | None:
        """The candidate whose rates at ``input_tokens`` are the dearest (None when there
        is no candidate). Tiers rank by their dearest input rate plus their dearest output
        rate; on a tie the earlier candidate wins. Two rate cards of their own can be dearer
        on different sides: `worst_rates` is the bound that holds for every candidate."""
        best: str | None = None
        best_rank: tuple[int, int] | None = None
        for candidate in candidates:
            rates = self.rates_for(input_tokens, candidate)
            rank = (rates.dearest_input + rates.dearest_output, rates.dearest_output)
            if best_rank is None or rank > best_rank:
                best, best_rank = candidate, rank
        return best

    def tool_fee(self, name: str) -> Nanos:
        """Nano-dollars per call of tool ``name``; 0 for a tool without a fee."""
        return Nanos(0) if self.free else self.tool_fees.get(name, Nanos(0))

    def tool_cost(self, calls: Iterable[tuple[str, int]]) -> Nanos:
        """The fees of ``(tool, calls)`` pairs, such as ``Usage.tool_calls``."""
        return Nanos(sum(self.tool_fee(name) * max(0, count) for name, count in calls))


FREE_RATES = Rates(input=Nanos(0), output=Nanos(0))


def free_price(model: str, source: str = "config") -> Price:
    return Price(model=model, rates=FREE_RATES, free=True, source=source)


def cost_of(usage: Usage, price: Price) -> Nanos:
    """What ``usage`` costs at ``price``, in nano-dollars: its tokens at the rates of its
    service tier and input size, summed exactly and rounded up once, plus its tools'
    per-call fees. A step billed apart (`Usage.apart`: a compaction) is priced at the
    long-context tier of its own input, and the main step at that of the rest."""
    if price.free:
        return Nanos(0)
    tier = usage.service_tier
    if usage.apart:
        exact = _exact_cost(usage.without_apart(), price, tier)
        exact += sum(_exact_cost(step, price, tier) for step in usage.apart)
    else:
        exact = _exact_cost(usage, price, tier)
    return Nanos(-(-exact // TOKENS_PER_PRICE_UNIT) + price.tool_cost(usage.tool_calls))


def _exact_cost(usage: Usage, price: Price, tier: str | None) -> int:
    """One sampling step's tokens at the rates of ``tier`` and of its own input size, in
    nano-dollars per million tokens (not rounded)."""
    rates = price.rates_for(usage.input_tokens, tier).full()
    write_1h = min(usage.cache_write_1h_tokens, usage.cache_write_tokens)
    reasoning = min(usage.reasoning_tokens, usage.output_tokens)
    uncached = max(0, usage.uncached_input_tokens)
    audio = min(max(0, usage.audio_input_tokens), uncached)  # audio read from a cache: cached
    return (
        (uncached - audio) * rates.input
        + audio * rates.audio_input
        + max(0, usage.cached_input_tokens) * rates.cached_input
        + max(0, usage.cache_write_tokens - write_1h) * rates.cache_write
        + max(0, write_1h) * rates.cache_write_1h
        + max(0, usage.output_tokens - reasoning) * rates.output
        + max(0, reasoning) * rates.reasoning
    )


@dataclass(frozen=True)
class PriceBook:
    """Model name → price. A model that is not here is unpriced, and unpriced means refused."""

    prices: Mapping[str, Price] = field(default_factory=dict)
    as_of: str | None = None

    def get(self, model: str) -> Price | None:
        return self.prices.get(model)

    def __contains__(self, model: object) -> bool:
        return model in self.prices

    def __len__(self) -> int:
        return len(self.prices)

    def merged(self, overrides: Mapping[str, Price]) -> PriceBook:
        """A new book where ``overrides`` replace entries of this one."""
        return PriceBook(prices={**self.prices, **overrides}, as_of=self.as_of)
