"""Service tiers, long-context tiers under them, and per-call tool fees: `Price` and `cost_of`."""

from __future__ import annotations

import dataclasses
from decimal import ROUND_CEILING, Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spendgate.domain.pricing import (
    Price,
    Rates,
    ServiceTier,
    Tier,
    cost_of,
    free_price,
    max_rates,
)
from spendgate.domain.usage import Usage
from spendgate.money import Nanos, dollars_to_nanos


def usd(value: str) -> Nanos:
    return dollars_to_nanos(value)


STANDARD = Rates(input=usd("2"), output=usd("10"), cached_input=usd("0.20"))
LONG = Rates(input=usd("4"), output=usd("15"), cached_input=usd("0.40"))
OWN = Rates(input=usd("30"), output=usd("150"))
OWN_LONG = Rates(input=usd("60"), output=usd("225"))

PRICE = Price(
    "m",
    STANDARD,
    tiers=(Tier(272_000, LONG),),
    service_tiers={
        "priority": ServiceTier(multiplier=Fraction(2)),
        "flex": ServiceTier(multiplier=Fraction(1, 2)),
        "fast": ServiceTier(rates=OWN, tiers=(Tier(200_000, OWN_LONG),)),
    },
    tool_fees={"web_search": usd("0.01"), "file_search": usd("0.0025")},
)

SMALL = Usage(input_tokens=1_000, cached_input_tokens=400, output_tokens=100)
LARGE = Usage(input_tokens=300_000, output_tokens=1_000)


def test_usage_gains_tier_and_tool_calls_with_defaults() -> None:
    usage = Usage()
    assert usage.service_tier is None
    assert usage.tool_calls == ()


# ------------------------------------------------------------------ service tiers


@pytest.mark.parametrize("tier", [None, "default", "standard", "auto", "scale", "Priority"])
def test_a_tier_the_price_does_not_list_is_billed_at_standard_rates(tier: str | None) -> None:
    usage = Usage(input_tokens=1_000, cached_input_tokens=400, output_tokens=100, service_tier=tier)
    assert cost_of(usage, PRICE) == 600 * 2_000 + 400 * 200 + 100 * 10_000


@pytest.mark.parametrize(
    ("tier", "expected"),
    [
        ("priority", 600 * 4_000 + 400 * 400 + 100 * 20_000),
        ("flex", 600 * 1_000 + 400 * 100 + 100 * 5_000),
        # A rate card of its own: cached input falls back to the card's own input rate.
        ("fast", 1_000 * 30_000 + 100 * 150_000),
    ],
)
def test_each_listed_tier_has_its_rates(tier: str, expected: int) -> None:
    usage = Usage(input_tokens=1_000, cached_input_tokens=400, output_tokens=100, service_tier=tier)
    assert cost_of(usage, PRICE) == expected


def test_a_multiplier_scales_the_long_context_rates() -> None:
    assert PRICE.rates_for(300_000, "priority") == LONG.scaled(Fraction(2))
    priority = Usage(input_tokens=300_000, output_tokens=1_000, service_tier="priority")
    assert cost_of(priority, PRICE) == 300_000 * 8_000 + 1_000 * 30_000
    flex = Usage(input_tokens=300_000, output_tokens=1_000, service_tier="flex")
    assert cost_of(flex, PRICE) == 300_000 * 2_000 + 1_000 * 7_500


def test_a_rate_card_uses_its_own_long_context_tiers_only() -> None:
    # 250K is past fast's own 200K threshold but not the standard 272K one...
    assert PRICE.rates_for(250_000, "fast") == OWN_LONG
    assert PRICE.rates_for(250_000) == STANDARD
    # ...and at 300K the standard long-context rates do not leak into the card.
    assert PRICE.rates_for(300_000, "fast") == OWN_LONG
    assert PRICE.rates_for(200_000, "fast") == OWN


def test_a_scaled_rate_is_rounded_up_per_million() -> None:
    odd = Price(
        "m",
        Rates(input=Nanos(3), output=Nanos(1)),
        service_tiers={
            "flex": ServiceTier(multiplier=Fraction(1, 2)),
            "priority": ServiceTier(multiplier=Fraction(5, 3)),
        },
    )
    assert odd.rates_for(0, "flex") == Rates(input=Nanos(2), output=Nanos(1))
    assert odd.rates_for(0, "priority") == Rates(input=Nanos(5), output=Nanos(2))


def test_the_standard_path_returns_the_price_own_rates() -> None:
    assert PRICE.rates_for(100) is STANDARD
    assert PRICE.rates_for(100, "no-such-tier") is STANDARD


# ------------------------------------------------------------------ tool fees


def test_tool_fees_are_added_per_call() -> None:
    usage = Usage(input_tokens=1_000, tool_calls=(("web_search", 3), ("file_search", 2)))
    tokens = 1_000 * 2_000
    assert cost_of(usage, PRICE) == tokens + 3 * 10_000_000 + 2 * 2_500_000


def test_a_tool_without_a_fee_costs_nothing_extra() -> None:
    usage = Usage(input_tokens=1_000, tool_calls=(("web_fetch", 5), ("code_execution", 1)))
    assert cost_of(usage, PRICE) == 1_000 * 2_000
    assert PRICE.tool_fee("web_fetch") == 0
    assert PRICE.tool_fee("web_search") == 10_000_000


def test_tool_fees_do_not_depend_on_the_tier_and_negative_counts_are_ignored() -> None:
    calls = (("web_search", 2), ("web_search", -4))
    usage = Usage(input_tokens=300_000, service_tier="fast", tool_calls=calls)
    assert cost_of(usage, PRICE) == 300_000 * 60_000 + 2 * 10_000_000
    assert PRICE.tool_cost(calls) == 20_000_000


def test_a_free_price_charges_no_fees() -> None:
    usage = Usage(input_tokens=10, tool_calls=(("web_search", 10),))
    free = free_price("local")
    assert cost_of(usage, free) == 0
    assert free.tool_fee("web_search") == 0


# ------------------------------------------------------------------ worst cases


def test_dearest_tier() -> None:
    assert PRICE.dearest_tier([None, "flex", "priority"]) == "priority"
    assert PRICE.dearest_tier(["flex", None]) is None
    assert PRICE.dearest_tier(["flex"]) == "flex"
    assert PRICE.dearest_tier([]) is None
    assert PRICE.dearest_tier(["priority", "fast"], input_tokens=300_000) == "fast"
    # An unlisted tier prices as standard; on a tie the earlier candidate wins.
    assert PRICE.dearest_tier(["default", None, "batch"]) == "default"


def test_worst_rates_are_the_dearest_field_by_field() -> None:
    price = Price(
        "m",
        Rates(input=usd("1"), output=usd("10")),
        service_tiers={"a": ServiceTier(rates=Rates(input=usd("5"), output=usd("2")))},
    )
    worst = price.worst_rates(0, [None, "a"])
    assert (worst.input, worst.output) == (usd("5"), usd("10"))
    assert worst.cached_input == usd("5")  # the fallbacks are filled in first
    assert worst.dearest_input == usd("5")
    assert worst.dearest_output == usd("10")
    assert price.worst_rates(0) == max_rates(price.rates)


def test_dearest_input_and_output_cover_every_token_class() -> None:
    rates = Rates(input=usd("1"), output=usd("2"), cache_write_1h=usd("3"), reasoning=usd("4"))
    assert (rates.dearest_input, rates.dearest_output) == (usd("3"), usd("4"))
    assert (STANDARD.dearest_input, STANDARD.dearest_output) == (usd("2"), usd("10"))


# ------------------------------------------------------------------ properties

rate = st.integers(min_value=0, max_value=200 * 10**9).map(Nanos)
multipliers = st.fractions(min_value=Fraction(1, 10), max_value=10, max_denominator=1_000)


@st.composite
def usages(draw: st.DrawFn) -> Usage:
    input_tokens = draw(st.integers(0, 2_000_000))
    cached = draw(st.integers(0, input_tokens))
    write = draw(st.integers(0, input_tokens - cached))
    output = draw(st.integers(0, 200_000))
    return Usage(
        input_tokens=input_tokens,
        cached_input_tokens=cached,
        cache_write_tokens=write,
        cache_write_1h_tokens=draw(st.integers(0, write)),
        output_tokens=output,
        reasoning_tokens=draw(st.integers(0, output)),
        service_tier="t",
    )


def exact_standard_cost(usage: Usage, rates: Rates) -> Decimal:
    full = rates.full()
    pairs = [
        (usage.uncached_input_tokens, full.input),
        (usage.cached_input_tokens, full.cached_input),
        (usage.cache_write_tokens - usage.cache_write_1h_tokens, full.cache_write),
        (usage.cache_write_1h_tokens, full.cache_write_1h),
        (usage.output_tokens - usage.reasoning_tokens, full.output),
        (usage.reasoning_tokens, full.reasoning),
    ]
    return sum((Decimal(tokens) * price / 1_000_000 for tokens, price in pairs), Decimal(0))


@given(usage=usages(), input_rate=rate, output_rate=rate, multiplier=multipliers)
def test_a_tier_is_never_billed_below_its_multiple_of_the_exact_cost(
    usage: Usage, input_rate: Nanos, output_rate: Nanos, multiplier: Fraction
) -> None:
    rates = Rates(input=input_rate, output=output_rate)
    price = Price("m", rates, service_tiers={"t": ServiceTier(multiplier=multiplier)})
    exact = exact_standard_cost(usage, rates) * multiplier.numerator / multiplier.denominator
    cost = cost_of(usage, price)
    assert Decimal(cost) >= exact
    # Each of the six classes rounds up at most twice: its rate, then its cost.
    bound = exact + 6 + Decimal(usage.total_tokens) / 1_000_000
    assert Decimal(cost) <= bound.to_integral_value(rounding=ROUND_CEILING)


@given(usage=usages(), input_rate=rate, output_rate=rate, low=multipliers, high=multipliers)
def test_a_larger_multiplier_never_costs_less(
    usage: Usage, input_rate: Nanos, output_rate: Nanos, low: Fraction, high: Fraction
) -> None:
    low, high = min(low, high), max(low, high)
    rates = Rates(input=input_rate, output=output_rate)
    cheap = Price("m", rates, service_tiers={"t": ServiceTier(multiplier=low)})
    dear = Price("m", rates, service_tiers={"t": ServiceTier(multiplier=high)})
    assert cost_of(usage, dear) >= cost_of(usage, cheap)


@given(usage=usages(), first=rate, second=rate, third=rate, fourth=rate)
def test_worst_rates_never_cost_less_than_any_candidate(
    usage: Usage, first: Nanos, second: Nanos, third: Nanos, fourth: Nanos
) -> None:
    price = Price(
        "m",
        Rates(input=first, output=second),
        service_tiers={
            "a": ServiceTier(rates=Rates(input=third, output=fourth, cached_input=first)),
            "b": ServiceTier(multiplier=Fraction(3, 2)),
        },
    )
    worst = Price("w", price.worst_rates(usage.input_tokens, [None, "a", "b"]))
    for tier in (None, "a", "b"):
        at_tier = cost_of(dataclasses.replace(usage, service_tier=tier), price)
        assert cost_of(usage, worst) >= at_tier


def test_worst_rates_cover_only_the_tiers_named() -> None:
    assert PRICE.worst_rates(1_000, ["flex"]) == max_rates(STANDARD.scaled(Fraction(1, 2)))
    assert PRICE.worst_rates(1_000, []) == max_rates(STANDARD)
    assert PRICE.worst_rates(1_000, [None, "priority"]).output == usd("20")
