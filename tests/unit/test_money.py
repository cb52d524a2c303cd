"""Money is integer nano-dollars; parsing is exact and rounding never undercharges."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spendgate.money import (
    NANOS_PER_DOLLAR,
    dollars_text,
    dollars_to_nanos,
    float_dollars_to_nanos,
    format_dollars,
    nanos_to_decimal,
    token_cost,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.15", 150_000_000),
        ("2.50", 2_500_000_000),
        (" 3 ", 3 * NANOS_PER_DOLLAR),
        (5, 5 * NANOS_PER_DOLLAR),
        (Decimal("0.000000001"), 1),
        ("1e-9", 1),
        ("22.50", 22_500_000_000),
    ],
)
def test_dollars_parse_exactly(value: str | int | Decimal, expected: int) -> None:
    assert dollars_to_nanos(value) == expected


def test_sub_nano_amounts_round_up() -> None:
    assert dollars_to_nanos("0.0000000001") == 1
    assert dollars_to_nanos("0.0000000011") == 2


def test_floats_are_refused() -> None:
    with pytest.raises(TypeError, match="float"):
        dollars_to_nanos(0.15)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["abc", "", "1.2.3", "NaN", "Infinity", "-inf", "1,50", "$$"])
def test_non_amounts_are_value_errors(value: str) -> None:
    with pytest.raises(ValueError, match="not a dollar amount"):
        dollars_to_nanos(value)


def test_a_leading_dollar_sign_is_accepted() -> None:
    # Deliberate in money.py (`lstrip("$")`): CLI users type "$5".
    assert dollars_to_nanos("$1.50") == 1_500_000_000


def test_float_catalog_values_go_through_their_shortest_repr() -> None:
    assert float_dollars_to_nanos(0.1) == 100_000_000
    assert float_dollars_to_nanos(1.1e-06) == 1_100
    assert float_dollars_to_nanos(3e-07) == 300


@pytest.mark.parametrize(
    ("tokens", "price", "expected"),
    [
        (0, 150_000_000, 0),
        (-5, 150_000_000, 0),
        (1, 0, 0),
        (1_000_000, 150_000_000, 150_000_000),
        (1, 150_000_000, 150),
        (1, 1, 1),  # 1e-6 nano-dollars rounds up to one
        (3, 333_333_333, 1_000),  # 999.999999 → 1000
        (7, 300_000_000, 2_100),
    ],
)
def test_token_cost_rounds_up(tokens: int, price: int, expected: int) -> None:
    assert token_cost(tokens, price) == expected  # type: ignore[arg-type]


def test_format_and_decimal() -> None:
    assert format_dollars(1_234_000) == "$0.001234"
    assert format_dollars(-2_500_000_000, places=2) == "-$2.50"
    assert nanos_to_decimal(150_000_000) == Decimal("0.15")


@given(st.integers(min_value=-(10**20), max_value=10**20))
def test_dollars_text_writes_what_decimal_formatting_writes(amount: int) -> None:
    assert dollars_text(amount) == f"{nanos_to_decimal(amount):.9f}"
    assert dollars_text(0) == "0.000000000"
    assert dollars_text(1_234) == "0.000001234"
