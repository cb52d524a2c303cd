"""`cost_of`: the exact sum rounded up once, never below the exact cost, monotone in tokens."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from spendgate.dialects.anthropic import from_anthropic
from spendgate.dialects.openai import from_openai_chat
from spendgate.domain.admission import worst_case
from spendgate.domain.budgets import Unit
from spendgate.domain.pricing import Price, PriceBook, Rates, Tier, cost_of, free_price
from spendgate.domain.usage import Usage
from spendgate.money import Nanos, dollars_to_nanos
from spendgate.pricing import load_builtin_catalog


def usd(value: str) -> Nanos:
    return dollars_to_nanos(value)


SONNET = Price(
    model="claude-sonnet-4-5",
    rates=Rates(
        input=usd("3"),
        output=usd("15"),
        cached_input=usd("0.30"),
        cache_write=usd("3.75"),
        cache_write_1h=usd("6"),
    ),
    tiers=(
        Tier(
            200_000,
            Rates(
                input=usd("6"),
                output=usd("22.50"),
                cached_input=usd("0.60"),
                cache_write=usd("7.50"),
                cache_write_1h=usd("12"),
            ),
        ),
    ),
)


def test_plain_input_and_output() -> None:
    price = Price("m", Rates(input=usd("0.15"), output=usd("0.60")))
    assert cost_of(Usage(input_tokens=1_000, output_tokens=500), price) == 150_000 + 300_000


def test_cached_input_is_cheaper_and_part_of_input() -> None:
    price = Price("gpt-4o", Rates(input=usd("2.50"), output=usd("10"), cached_input=usd("1.25")))
    usage = from_openai_chat(
        {
            "prompt_tokens": 1_000,
            "completion_tokens": 0,
            "prompt_tokens_details": {"cached_tokens": 400},
        }
    )
    assert cost_of(usage, price) == 600 * 2_500 + 400 * 1_250


def test_cache_writes_are_priced_by_ttl() -> None:
    five_minutes = Usage(input_tokens=1_000, cache_write_tokens=1_000)
    one_hour = Usage(input_tokens=1_000, cache_write_tokens=1_000, cache_write_1h_tokens=1_000)
    mixed = Usage(input_tokens=1_000, cache_write_tokens=1_000, cache_write_1h_tokens=400)
    assert cost_of(five_minutes, SONNET) == 1_000 * 3_750
    assert cost_of(one_hour, SONNET) == 1_000 * 6_000
    assert cost_of(mixed, SONNET) == 600 * 3_750 + 400 * 6_000


def test_missing_cache_rates_fall_back() -> None:
    price = Price("m", Rates(input=usd("1"), output=usd("2"), cache_write=usd("1.25")))
    usage = Usage(
        input_tokens=30, cached_input_tokens=10, cache_write_tokens=20, cache_write_1h_tokens=5
    )
    # cached → input rate; 1h write → the 5-minute write rate.
    assert cost_of(usage, price) == 10 * 1_000 + 15 * 1_250 + 5 * 1_250


def test_anthropic_usage_at_catalog_price() -> None:
    usage = from_anthropic(
        {
            "input_tokens": 25,
            "cache_creation_input_tokens": 11,
            "cache_read_input_tokens": 7,
            "cache_creation": {"ephemeral_5m_input_tokens": 11, "ephemeral_1h_input_tokens": 0},
            "output_tokens": 15,
        }
    )
    price = load_builtin_catalog().get("claude-sonnet-4-5")
    assert price is not None
    assert cost_of(usage, price) == 25 * 3_000 + 11 * 3_750 + 7 * 300 + 15 * 15_000


def test_long_context_tier_replaces_every_rate() -> None:
    at_limit = Usage(input_tokens=200_000, output_tokens=1_000)
    above = Usage(input_tokens=200_001, output_tokens=1_000, cached_input_tokens=1)
    assert cost_of(at_limit, SONNET) == 200_000 * 3_000 + 1_000 * 15_000
    assert cost_of(above, SONNET) == 200_000 * 6_000 + 1 * 600 + 1_000 * 22_500


def test_highest_eligible_tier_wins_whatever_the_order() -> None:
    base = Rates(input=usd("1"), output=usd("1"))
    tiers = (
        Tier(500, Rates(input=usd("3"), output=usd("3"))),
        Tier(100, Rates(usd("2"), usd("2"))),
    )
    price = Price("m", base, tiers=tiers)
    assert price.rates_for(100) is base
    assert price.rates_for(101).input == usd("2")
    assert price.rates_for(501).input == usd("3")


def test_reasoning_price_applies_to_the_reasoning_part_of_output() -> None:
    price = Price("r", Rates(input=usd("1"), output=usd("4"), reasoning=usd("8")))
    usage = Usage(output_tokens=100, reasoning_tokens=30)
    assert cost_of(usage, price) == 70 * 4_000 + 30 * 8_000
    # Reasoning never exceeds the output it is part of.
    assert cost_of(Usage(output_tokens=10, reasoning_tokens=50), price) == 10 * 8_000


def test_free_price_costs_nothing() -> None:
    assert cost_of(Usage(input_tokens=10**9, output_tokens=10**9), free_price("local")) == 0


def test_unpriced_model_is_absent_from_the_book() -> None:
    book = PriceBook({"a": Price("a", Rates(usd("1"), usd("1")))})
    assert book.get("b") is None
    assert "b" not in book
    assert "a" in book
    assert len(book.merged({"b": free_price("b")})) == 2


# ------------------------------------------------------------------ properties

rate = st.integers(min_value=0, max_value=200 * 10**9).map(Nanos)  # up to $200 per 1M tokens
optional_rate = st.none() | rate


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
    )


@st.composite
def rates_(draw: st.DrawFn) -> Rates:
    return Rates(
        input=draw(rate),
        output=draw(rate),
        cached_input=draw(optional_rate),
        cache_write=draw(optional_rate),
        cache_write_1h=draw(optional_rate),
        reasoning=draw(optional_rate),
    )


def exact_components(usage: Usage, rates: Rates) -> list[Decimal]:
    cached = rates.input if rates.cached_input is None else rates.cached_input
    write = rates.input if rates.cache_write is None else rates.cache_write
    write_1h = write if rates.cache_write_1h is None else rates.cache_write_1h
    reasoning = rates.output if rates.reasoning is None else rates.reasoning
    pairs = [
        (usage.uncached_input_tokens, rates.input),
        (usage.cached_input_tokens, cached),
        (usage.cache_write_tokens - usage.cache_write_1h_tokens, write),
        (usage.cache_write_1h_tokens, write_1h),
        (usage.output_tokens - usage.reasoning_tokens, rates.output),
        (usage.reasoning_tokens, reasoning),
    ]
    return [Decimal(tokens) * price / 1_000_000 for tokens, price in pairs]


@given(usage=usages(), rates=rates_())
def test_cost_is_the_ceiling_of_the_exact_sum(usage: Usage, rates: Rates) -> None:
    """Rounded once per row: never below the exact cost, less than a nano-dollar above."""
    exact = sum(exact_components(usage, rates))
    cost = cost_of(usage, Price("m", rates))
    assert cost == int(exact.to_integral_value(rounding=ROUND_CEILING))
    assert Decimal(cost) >= exact
    assert Decimal(cost) - exact < 1


@given(
    usage=usages(),
    rates=rates_(),
    more_input=st.integers(0, 10**6),
    more_output=st.integers(0, 10**6),
)
def test_cost_is_monotone_in_tokens(
    usage: Usage, rates: Rates, more_input: int, more_output: int
) -> None:
    price = Price("m", rates)
    bigger = Usage(
        input_tokens=usage.input_tokens + more_input,
        cached_input_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        output_tokens=usage.output_tokens + more_output,
        reasoning_tokens=usage.reasoning_tokens,
    )
    assert cost_of(bigger, price) >= cost_of(usage, price)


@given(usage=usages(), rates=rates_(), extra=rates_())
def test_a_dearer_tier_never_lowers_the_cost(usage: Usage, rates: Rates, extra: Rates) -> None:
    dearer = Rates(
        input=Nanos(rates.input + extra.input),
        output=Nanos(rates.output + extra.output),
    )
    cheap = Rates(input=rates.input, output=rates.output)
    tiered = Price("m", cheap, tiers=(Tier(100_000, dearer),))
    assert cost_of(usage, tiered) >= cost_of(usage, Price("m", cheap))


@settings(max_examples=1000)
@given(rates=rates_(), data=st.data())
def test_a_request_using_its_whole_worst_case_settles_within_it(
    rates: Rates, data: st.DataObject
) -> None:
    """Any rates (a fraction of a nano-dollar per token included), input exactly the bound
    and output exactly the ceiling, split between every class at random: the cost is never
    above the worst case reserved (`tests/unit/test_worst_case_bounds_cost.py`)."""
    inputs = data.draw(st.integers(1, 5_000))
    ceiling = data.draw(st.integers(1, 5_000))
    cached = data.draw(st.integers(0, inputs))
    written = data.draw(st.integers(0, inputs - cached))
    usage = Usage(
        input_tokens=inputs,
        cached_input_tokens=cached,
        cache_write_tokens=written,
        cache_write_1h_tokens=data.draw(st.integers(0, written)),
        output_tokens=ceiling,
        reasoning_tokens=data.draw(st.integers(0, ceiling)),
    )
    price = Price("m", rates)
    worst = worst_case(price, input_tokens=inputs, input_exact=True, ceiling=ceiling, choices=1)
    assert cost_of(usage, price) <= worst.amount(Unit.NANOS, ceiling)


def test_a_compaction_is_billed_at_the_tier_of_its_own_input() -> None:
    """Anthropic's documented example: a compaction read 180,000 tokens and wrote 3,500,
    then the answer read 23,000 and wrote 1,000. Neither step is above Claude Sonnet 4.5's
    200K threshold, though their inputs sum to 203,000: both are billed at the standard
    rates. A step above it is billed at the long-context rates alone."""
    usage = from_anthropic(
        {
            "input_tokens": 23_000,
            "output_tokens": 1_000,
            "iterations": [
                {"type": "compaction", "input_tokens": 180_000, "output_tokens": 3_500},
                {"type": "message", "input_tokens": 23_000, "output_tokens": 1_000},
            ],
        }
    )
    assert (usage.input_tokens, usage.output_tokens) == (203_000, 4_500)
    standard = 203_000 * usd("3") + 4_500 * usd("15")
    assert cost_of(usage, SONNET) == standard // 1_000_000
    bigger = from_anthropic(
        {
            "input_tokens": 10,
            "cache_read_input_tokens": 20_000,
            "output_tokens": 100,
            "iterations": [
                {
                    "type": "compaction",
                    "input_tokens": 150_000,
                    "cache_read_input_tokens": 60_000,
                    "output_tokens": 7_000,
                },
            ],
        }
    )
    long_context = 150_000 * usd("6") + 60_000 * usd("0.60") + 7_000 * usd("22.50")
    answer = 10 * usd("3") + 20_000 * usd("0.30") + 100 * usd("15")
    assert cost_of(bigger, SONNET) == -(-(long_context + answer) // 1_000_000)


def test_audio_input_tokens_are_billed_at_the_audio_rate_when_uncached() -> None:
    price = Price(
        model="m",
        rates=Rates(input=Nanos(300), output=Nanos(2_500), audio_input=Nanos(1_000)),
    )
    usage = Usage(input_tokens=1_000_000, audio_input_tokens=400_000, cached_input_tokens=100_000)
    # 500,000 text at 300, 400,000 audio at 1,000, 100,000 cached at 300 (per million)
    assert cost_of(usage, price) == (500_000 * 300 + 400_000 * 1_000 + 100_000 * 300) // 1_000_000
    plain = Price(model="m", rates=Rates(input=Nanos(300), output=Nanos(2_500)))
    assert cost_of(usage, plain) == 300  # no audio rate: the input rate
