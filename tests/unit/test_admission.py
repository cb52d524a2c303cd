"""The admission decision, case by case: admit, clamp to the tightest nested budget,
refuse below the minimum, token budgets, n > 1, free models, per-request dollar caps,
soft budgets, and the ok / soft / exhausted states."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from spendgate.config.schema import BudgetScope
from spendgate.domain.admission import (
    Admitted,
    CounterState,
    Refused,
    WorstCase,
    decide,
    worst_case,
)
from spendgate.domain.budgets import Budget, CounterRef, RequestCap, Scoped, Unit
from spendgate.domain.periods import Calendar, Period, window
from spendgate.domain.pricing import Price, Rates, Tier, free_price
from spendgate.money import Nanos, dollars_to_nanos

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
# $1 / M input, $4 / M output: 1 token in = 1_000 nanos, 1 token out = 4_000 nanos.
PRICE = Price("m", Rates(input=Nanos(10**9), output=Nanos(4 * 10**9)))


def usd(text: str) -> int:
    return dollars_to_nanos(text)


def state(
    name: str,
    limit: int,
    spent: int = 0,
    reserved: int = 0,
    *,
    unit: Unit = Unit.NANOS,
    hard: bool = True,
    scope: BudgetScope = BudgetScope.TEAM,
    soft_bp: tuple[int, ...] = (8_000,),
) -> CounterState:
    budget = Budget(
        name=name,
        target=Scoped(scope, "*", ()),
        unit=unit,
        limit=limit,
        period=Period("monthly"),
        hard=hard,
        soft_bp=soft_bp,
    )
    ref = CounterRef(budget, "x", window(budget.period, NOW, Calendar.of("UTC")))
    return CounterState(ref, limit, spent, reserved)


def worst(input_tokens: int = 1_000, ceiling: int = 1_000, choices: int = 1) -> WorstCase:
    return worst_case(
        PRICE, input_tokens=input_tokens, input_exact=True, ceiling=ceiling, choices=choices
    )


def cap(max_usd: str) -> RequestCap:
    return RequestCap(Scoped(BudgetScope.KEY, "*", ()), None, usd(max_usd))


# ---------------------------------------------------------------------------- pricing


def test_worst_case_prices_input_and_full_output() -> None:
    case = worst(input_tokens=1_000, ceiling=1_000)
    assert case.input_cost == 1_000_000
    assert case.amount(Unit.NANOS, 1_000) == 1_000_000 + 4_000_000
    assert case.amount(Unit.TOKENS, 1_000) == 2_000


def test_worst_case_uses_the_dearest_rates() -> None:
    price = Price(
        "m",
        Rates(
            input=Nanos(10**9),
            output=Nanos(4 * 10**9),
            cache_write=Nanos(2 * 10**9),
            reasoning=Nanos(8 * 10**9),
        ),
        tiers=(Tier(200_000, Rates(input=Nanos(3 * 10**9), output=Nanos(5 * 10**9))),),
    )
    small = worst_case(price, input_tokens=1_000, input_exact=False, ceiling=10, choices=1)
    assert small.input_cost == 2_000_000  # cache writes dearer than plain input
    assert small.output_rate == 8 * 10**9  # reasoning dearer than output
    big = worst_case(price, input_tokens=300_000, input_exact=True, ceiling=10, choices=1)
    assert big.input_cost == 900_000_000  # the long-context tier
    assert big.output_rate == 5 * 10**9


# ---------------------------------------------------------------------------- decide


def test_admitted_unchanged_when_everything_fits() -> None:
    budgets = [state("key", usd("1")), state("team", usd("10")), state("org", usd("100"))]
    decision = decide(worst(), budgets, [], min_output=256)
    assert decision == Admitted(
        ceiling=1_000, clamped=False, amounts=(5_000_000,) * 3, tightest=budgets[0]
    )


@pytest.mark.parametrize("tightest", [0, 1, 2])
def test_clamped_to_what_the_tightest_nested_budget_affords(tightest: int) -> None:
    """Key within team within org: a different one is the tightest each time."""
    rooms = [usd("1"), usd("1"), usd("1")]
    rooms[tightest] = 1_000_000 + 400 * 4_000  # input + 400 output tokens
    budgets = [
        state("key", usd("2"), spent=usd("2") - rooms[0], scope=BudgetScope.KEY),
        state("team", usd("5"), reserved=usd("5") - rooms[1], scope=BudgetScope.TEAM),
        state("org", usd("9"), spent=usd("4"), reserved=usd("5") - rooms[2]),
    ]
    decision = decide(worst(), budgets, [], min_output=256)
    assert isinstance(decision, Admitted)
    assert decision.ceiling == 400
    assert decision.clamped
    assert decision.tightest is budgets[tightest]
    assert decision.amounts == (1_000_000 + 1_600_000,) * 3
    assert all(a <= b.room for a, b in zip(decision.amounts, budgets, strict=True))


def test_clamp_rounds_down_to_a_ceiling_that_fits() -> None:
    budget = state("team", 1_000_000 + 4_000 * 300 + 3_999)  # 300.99 tokens of output
    decision = decide(worst(), [budget], [], min_output=1)
    assert isinstance(decision, Admitted)
    assert decision.ceiling == 300
    assert decision.amounts == (1_000_000 + 1_200_000,)


def test_refused_below_the_minimum_names_the_tightest() -> None:
    budgets = [
        state("org", usd("100")),
        state("team", usd("1"), spent=usd("1") - 1_000_000 - 255 * 4_000),  # 255 tokens left
        state("key", usd("1"), spent=usd("1") - 1_000_000 - 300 * 4_000),
    ]
    decision = decide(worst(), budgets, [], min_output=256)
    assert isinstance(decision, Refused)
    assert decision.counter is budgets[1]
    assert decision.cap is None
    assert decision.needed == 1_000_000 + 256 * 4_000


def test_refused_when_not_even_the_input_fits() -> None:
    budget = state("team", usd("1"), spent=usd("1") - 999_999)
    decision = decide(worst(), [budget], [], min_output=0)
    assert isinstance(decision, Refused)
    assert decision.counter is budget
    assert decision.needed == 1_000_000


def test_a_small_request_is_admitted_whole_or_refused() -> None:
    """The minimum never exceeds what the request itself asked for."""
    budget = state("team", 1_000_000 + 100 * 4_000)
    assert decide(worst(ceiling=100), [budget], [], min_output=256) == Admitted(
        100, False, (1_400_000,), budget
    )
    refused = decide(worst(ceiling=101), [budget], [], min_output=256)
    assert isinstance(refused, Refused)
    assert refused.needed == 1_000_000 + 101 * 4_000


def test_token_budgets_count_input_and_output_tokens() -> None:
    tokens = state("tok", 10_000, spent=7_000, unit=Unit.TOKENS)
    decision = decide(worst(input_tokens=1_000, ceiling=4_000), [tokens], [], min_output=256)
    assert isinstance(decision, Admitted)
    assert decision.ceiling == 2_000
    assert decision.amounts == (3_000,)
    refused = decide(worst(input_tokens=2_800, ceiling=4_000), [tokens], [], min_output=256)
    assert isinstance(refused, Refused)
    assert refused.needed == 2_800 + 256


def test_mixed_units_each_counter_gets_its_own_amount() -> None:
    budgets = [state("usd", usd("1")), state("tok", 100_000, unit=Unit.TOKENS)]
    decision = decide(worst(), budgets, [], min_output=256)
    assert isinstance(decision, Admitted)
    assert decision.amounts == (5_000_000, 2_000)


def test_n_choices_multiply_the_output() -> None:
    budget = state("team", 1_000_000 + 3 * 500 * 4_000)
    decision = decide(worst(ceiling=1_000, choices=3), [budget], [], min_output=256)
    assert isinstance(decision, Admitted)
    assert decision.ceiling == 500
    assert decision.amounts == (1_000_000 + 3 * 500 * 4_000,)
    tokens = state("tok", 1_000 + 3 * 300, unit=Unit.TOKENS)
    decision = decide(worst(ceiling=1_000, choices=3), [tokens], [], min_output=256)
    assert isinstance(decision, Admitted)
    assert decision.ceiling == 300


def test_free_models_cost_nothing_but_still_count_tokens() -> None:
    case = worst_case(
        free_price("local"), input_tokens=500, input_exact=True, ceiling=800, choices=1
    )
    exhausted = state("usd", usd("1"), spent=usd("1"))
    decision = decide(case, [exhausted], [], min_output=256)
    assert decision == Admitted(800, False, (0,), exhausted)
    tokens = state("tok", 1_000, unit=Unit.TOKENS)
    clamped = decide(case, [tokens], [], min_output=256)
    assert isinstance(clamped, Admitted)
    assert clamped.ceiling == 500


def test_per_request_dollar_cap_clamps() -> None:
    decision = decide(worst(), [], [cap("0.003")], min_output=256)
    assert decision == Admitted(ceiling=500, clamped=True, amounts=(), tightest=None)


def test_per_request_dollar_cap_refuses_below_the_minimum() -> None:
    tight = cap("0.0015")  # affords 125 output tokens
    decision = decide(worst(), [state("team", usd("100"))], [cap("1"), tight], min_output=256)
    assert decision == Refused(counter=None, cap=tight, needed=1_000_000 + 256 * 4_000)


def test_the_tighter_of_cap_and_budget_wins() -> None:
    budget = state("team", 1_000_000 + 300 * 4_000)
    decision = decide(worst(), [budget], [cap("0.003")], min_output=256)
    assert isinstance(decision, Admitted)
    assert decision.ceiling == 300
    assert decision.tightest is budget


def test_soft_budgets_never_block() -> None:
    soft = state("soft", usd("1"), spent=usd("5"), hard=False)
    hard = state("hard", usd("10"))
    decision = decide(worst(), [soft, hard], [], min_output=256)
    assert decision == Admitted(1_000, False, (5_000_000, 5_000_000), hard)
    only_soft = decide(worst(), [soft], [], min_output=256)
    assert only_soft == Admitted(1_000, False, (5_000_000,), None)


def test_no_budgets_no_caps_admits() -> None:
    assert decide(worst(), [], [], min_output=256) == Admitted(1_000, False, (), None)


@pytest.mark.parametrize(
    ("spent", "reserved", "expected"),
    [
        (0, 0, "ok"),
        (7_999, 0, "ok"),
        (4_000, 4_000, "soft"),  # reserved counts towards the threshold
        (9_999, 0, "soft"),
        (10_000, 0, "exhausted"),
        (6_000, 5_000, "held"),  # requests in flight hold the room: newcomers wait
        (10_000, 5_000, "exhausted"),
    ],
)
def test_counter_states(spent: int, reserved: int, expected: str) -> None:
    assert state("b", 10_000, spent, reserved).state == expected


def test_several_soft_thresholds_and_zero_limits() -> None:
    assert state("b", 100, 50, soft_bp=(5_000, 9_000)).state == "soft"
    assert state("b", 100, 49, soft_bp=(5_000, 9_000)).state == "ok"
    assert state("b", 100, 49, soft_bp=()).state == "ok"
    zero = state("b", 0)
    assert zero.state == "exhausted"
    assert state("b", 100, 50, 60, hard=False).state == "exhausted"  # never waits: no line
    assert zero.used_bp == 10_000
