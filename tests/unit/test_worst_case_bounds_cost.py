"""The worst case priced before a call is never below what the call settles at, for honest
traffic: its input no larger than the bound, its output within the ceiling, served in one
of the tiers the worst case allowed for, over every model of the built-in catalog."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from spendgate.domain.admission import worst_case
from spendgate.domain.budgets import Unit
from spendgate.domain.pricing import Price, Rates, cost_of
from spendgate.domain.usage import Usage
from spendgate.money import Nanos
from spendgate.pricing.catalog import load_builtin_catalog

CATALOG = load_builtin_catalog()
MODELS = sorted(CATALOG.prices)


@st.composite
def honest_calls(draw: st.DrawFn) -> tuple[Price, int, int, tuple[str | None, ...], Usage]:
    price = CATALOG.prices[draw(st.sampled_from(MODELS))]
    bound = draw(st.integers(1, 400_000))
    ceiling = draw(st.integers(1, 64_000))
    candidates = (None, *price.service_tiers)
    tiers = tuple(draw(st.lists(st.sampled_from(candidates), min_size=1, max_size=3)))
    served = draw(st.sampled_from(tiers))
    inputs = draw(st.integers(1, bound))
    cached = draw(st.integers(0, inputs))
    written = draw(st.integers(0, inputs - cached))
    output = draw(st.integers(0, ceiling))
    usage = Usage(
        input_tokens=inputs,
        cached_input_tokens=cached,
        cache_write_tokens=written,
        cache_write_1h_tokens=draw(st.integers(0, written)),
        output_tokens=output,
        reasoning_tokens=draw(st.integers(0, output)),
        service_tier=served,
    )
    return price, bound, ceiling, tiers, usage


@settings(max_examples=2000)
@given(call=honest_calls())
def test_the_worst_case_is_never_below_the_settled_cost(
    call: tuple[Price, int, int, tuple[str | None, ...], Usage],
) -> None:
    price, bound, ceiling, tiers, usage = call
    worst = worst_case(
        price, input_tokens=bound, input_exact=False, ceiling=ceiling, choices=1, tiers=tiers
    )
    assert cost_of(usage, price) <= worst.amount(Unit.NANOS, ceiling)


def test_rates_of_a_fraction_of_a_nano_dollar_per_token_settle_within_the_worst_case() -> None:
    """1.5 nano-dollars a token for input and cache writes, 37.5 for output and reasoning:
    the worst case rounds its input (2 tokens: 3) and its output (4 tokens: 150) once.
    Rounded class by class, one uncached token and one written (2 + 2) and three output
    tokens and one of reasoning (113 + 38) settled at 155, an overrun of 2 nano-dollars on
    an honest request; rounded once per row it is 153."""
    price = Price("m", Rates(input=Nanos(1_500_000), output=Nanos(37_500_000)))
    usage = Usage(input_tokens=2, cache_write_tokens=1, output_tokens=4, reasoning_tokens=1)
    worst = worst_case(price, input_tokens=2, input_exact=True, ceiling=4, choices=1)
    assert worst.amount(Unit.NANOS, 4) == 153
    assert cost_of(usage, price) == 153
