"""A budget's state, case by case: the minimal request it prices, and the one word
(`exhausted`, `refusing`, `held`, `soft`, `ok`) the CLI, the admin API and the headers
show for it (docs/budgets.md, "Budget states")."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from spendgate.domain.admission import CounterState
from spendgate.domain.budget_state import Refusals, budget_state, minimal_request
from spendgate.domain.budgets import Budget, BudgetScope, CounterRef, Kind, Scoped, Unit
from spendgate.domain.periods import Calendar, Period, window
from spendgate.domain.pricing import Price, Rates, free_price
from spendgate.money import Nanos

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
# $1 / M input, $4 / M output ($6 / M reasoning): 1 token in = 1_000 nanos, out = 6_000
DEAR = Price("dear", Rates(input=Nanos(10**9), output=Nanos(4 * 10**9), reasoning=Nanos(6 * 10**9)))
# $0.15 / M input, $0.60 / M output: 1 token in = 150 nanos, 1 token out = 600 nanos
CHEAP = Price("cheap", Rates(input=Nanos(150 * 10**6), output=Nanos(600 * 10**6)))
MODELS = [("dear", DEAR), ("cheap", CHEAP)]


def budget(
    unit: Unit = Unit.NANOS,
    *,
    models: tuple[str, ...] = (),
    scope: BudgetScope = BudgetScope.USER,
    hard: bool = True,
    kind: Kind = Kind.BUDGET,
    limit: int = 1_000_000,
) -> Budget:
    return Budget(
        name="b",
        target=Scoped(scope, "*", models),
        unit=unit,
        limit=limit,
        period=Period("daily"),
        hard=hard,
        soft_bp=(8_000,),
        kind=kind,
    )


def counter(b: Budget, spent: int = 0, reserved: int = 0, limit: int | None = None) -> CounterState:
    ref = CounterRef(b, "ada", window(b.period, NOW, Calendar.of("UTC")))
    return CounterState(ref, b.limit if limit is None else limit, spent, reserved)


def test_the_minimal_request_is_one_input_token_and_the_clamping_floor() -> None:
    assert minimal_request(budget(Unit.TOKENS), "ada", MODELS, 256) == 257
    # dollars: the cheapest model the budget covers, output at the dearer of output/reasoning
    assert minimal_request(budget(), "ada", MODELS, 100) == 150 + 100 * 600
    assert minimal_request(budget(models=("dear",)), "ada", MODELS, 100) == 1_000 + 100 * 6_000
    # a model-scoped budget member: that model's own price
    model = budget(scope=BudgetScope.MODEL)
    assert minimal_request(model, "dear", MODELS, 100) == 601_000
    assert minimal_request(model, "cheap", MODELS, 100) == 60_150
    # a free model: nothing but a spent-out budget is too poor for it
    assert minimal_request(budget(), "ada", [*MODELS, ("local", free_price("local"))], 100) == 1
    assert minimal_request(budget(models=("none-*",)), "ada", MODELS, 100) == 1
    assert minimal_request(budget(Unit.REQUESTS, kind=Kind.LIMIT), "ada", MODELS, 100) == 1


MINIMAL = 60_150


@pytest.mark.parametrize(
    ("spent", "reserved", "refusals", "expected"),
    [
        (0, 0, Refusals(), "ok"),
        (799_999, 0, Refusals(), "ok"),
        (800_000, 0, Refusals(), "soft"),
        # what spent leaves affords a minimal request exactly: not exhausted
        (1_000_000 - MINIMAL, 0, Refusals(), "soft"),
        # one nano-dollar short of it: exhausted, whatever is in flight
        (1_000_000 - MINIMAL + 1, 0, Refusals(), "exhausted"),
        (1_000_000 - MINIMAL + 1, 50_000, Refusals(), "exhausted"),
        (1_000_000, 0, Refusals(), "exhausted"),
        (1_200_000, 0, Refusals(), "exhausted"),  # a soft budget's overshoot, or a new limit
        # room all held by requests in flight, spent leaves room: held; refusing once refused
        (500_000, 500_000, Refusals(), "held"),
        (500_000, 500_000, Refusals(lately=1), "refusing"),
        # refused as over budget, nothing admitted since: exhausted though money is left
        (500_000, 0, Refusals(unanswered=True), "exhausted"),
        (500_000, 0, Refusals(unanswered=True, lately=3), "exhausted"),
        # answered by an admitted request: refusing for a minute, then as the counter says
        (500_000, 0, Refusals(lately=1), "refusing"),
        (900_000, 0, Refusals(), "soft"),
        # a reset emptied it: refusals before it no longer count
        (0, 0, Refusals(unanswered=True, lately=2), "ok"),
    ],
)
def test_a_hard_dollar_budget(spent: int, reserved: int, refusals: Refusals, expected: str) -> None:
    assert budget_state(counter(budget(), spent, reserved), MINIMAL, refusals) == expected


def test_a_limit_of_zero_refuses_everything_and_is_exhausted() -> None:
    assert budget_state(counter(budget(), limit=0), MINIMAL) == "exhausted"


def test_a_soft_budget_is_exhausted_by_what_it_spent_never_by_refusals() -> None:
    soft = budget(hard=False)
    assert budget_state(counter(soft, 500_000), MINIMAL, Refusals(unanswered=True)) == "ok"
    assert budget_state(counter(soft, 1_000_000 - MINIMAL + 1), MINIMAL) == "exhausted"
    # it never makes anyone wait: room all reserved reads exhausted, not held
    assert budget_state(counter(soft, 500_000, 500_000), MINIMAL) == "exhausted"


def test_a_rate_limit_is_exhausted_when_its_window_is_full() -> None:
    limit = budget(Unit.REQUESTS, kind=Kind.LIMIT, limit=5)
    assert budget_state(counter(limit, 4), 1) == "soft"
    assert budget_state(counter(limit, 5), 1) == "exhausted"
    assert budget_state(counter(limit, 2), 1, Refusals(unanswered=True)) == "ok"
    assert budget_state(counter(limit, 2), 1, Refusals(lately=1)) == "refusing"
