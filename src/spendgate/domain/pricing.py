"""Prices and the cost of a usage. Pure: the catalogs that fill a `PriceBook` live in
`spendgate.pricing`.

All prices are integer nano-dollars per million tokens (see `spendgate.money`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from spendgate.domain.usage import Usage
from spendgate.money import Nanos, token_cost


@dataclass(frozen=True, slots=True)
class Rates:
    """Per-million-token rates that apply to one request."""

    input: Nanos
    output: Nanos
    cached_input: Nanos | None = None  # None: same as input
    cache_write: Nanos | None = None  # None: same as input
    cache_write_1h: Nanos | None = None  # None: same as cache_write
    reasoning: Nanos | None = None  # None: same as output


@dataclass(frozen=True, slots=True)
class Tier:
    """Rates that replace the base rates when a request's input exceeds ``above_input_tokens``."""

    above_input_tokens: int
    rates: Rates


@dataclass(frozen=True, slots=True)
class Price:
    model: str
    rates: Rates
    tiers: tuple[Tier, ...] = ()
    free: bool = False
    max_output_tokens: int | None = None
    max_input_tokens: int | None = None
    source: str = "catalog"

    def rates_for(self, input_tokens: int) -> Rates:
        chosen = self.rates
        for tier in sorted(self.tiers, key=lambda t: t.above_input_tokens):
            if input_tokens > tier.above_input_tokens:
                chosen = tier.rates
        return chosen


FREE_RATES = Rates(input=Nanos(0), output=Nanos(0))


def free_price(model: str, source: str = "config") -> Price:
    return Price(model=model, rates=FREE_RATES, free=True, source=source)


def cost_of(usage: Usage, price: Price) -> Nanos:
    """What ``usage`` costs at ``price``, in nano-dollars, each component rounded up."""
    if price.free:
        return Nanos(0)
    rates = price.rates_for(usage.input_tokens)
    cached_rate = rates.input if rates.cached_input is None else rates.cached_input
    write_rate = rates.input if rates.cache_write is None else rates.cache_write
    write_1h_rate = write_rate if rates.cache_write_1h is None else rates.cache_write_1h
    reasoning_rate = rates.output if rates.reasoning is None else rates.reasoning
    write_1h = min(usage.cache_write_1h_tokens, usage.cache_write_tokens)
    reasoning = min(usage.reasoning_tokens, usage.output_tokens)
    return Nanos(
        token_cost(usage.uncached_input_tokens, rates.input)
        + token_cost(usage.cached_input_tokens, cached_rate)
        + token_cost(usage.cache_write_tokens - write_1h, write_rate)
        + token_cost(write_1h, write_1h_rate)
        + token_cost(usage.output_tokens - reasoning, rates.output)
        + token_cost(reasoning, reasoning_rate)
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
