"""Soft-threshold crossings (pure): a reservation that takes a budget member past a soft
threshold is reported once per window, however often it hovers across the line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from spendgate.config.schema import BudgetScope
from spendgate.domain.admission import Admitted, CounterState, Crossing, Thresholds
from spendgate.domain.budgets import Budget, CounterRef, Kind, Scoped, Unit
from spendgate.domain.periods import Calendar, Period, window

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
CALENDAR = Calendar.of("UTC")


def _budget(kind: Kind = Kind.BUDGET, soft: tuple[int, ...] = (5_000, 8_000)) -> Budget:
    return Budget(
        "team", Scoped(BudgetScope.TEAM, "*", ()), Unit.NANOS, 1_000, Period.parse("daily"),
        True, soft, kind=kind,
    )  # fmt: skip


def _admitted(budget: Budget, spent: int, reserved: int, amount: int, at: datetime) -> Admitted:
    ref = CounterRef(budget, "ml", window(budget.period, at, CALENDAR))
    state = CounterState(ref, budget.limit, spent, reserved)
    return Admitted(ceiling=10, clamped=False, amounts=(amount,), tightest=None, states=(state,))


def test_each_threshold_is_reported_once_a_window() -> None:
    watch = Thresholds()
    budget = _budget()
    assert watch.crossed(_admitted(budget, 400, 0, 50, NOW)) == []  # 45%: below both
    assert watch.crossed(_admitted(budget, 400, 50, 100, NOW)) == [
        Crossing("team", "ml", 5_000, 5_500)
    ]
    # settled below its worst case: back under 50 %, then across again
    assert watch.crossed(_admitted(budget, 480, 0, 100, NOW)) == []
    assert watch.crossed(_admitted(budget, 480, 0, 400, NOW)) == [
        Crossing("team", "ml", 8_000, 8_800)
    ]  # two at once would both be reported; 50 % was already
    tomorrow = NOW + timedelta(days=1)
    assert watch.crossed(_admitted(budget, 0, 0, 900, tomorrow)) == [
        Crossing("team", "ml", 5_000, 9_000),
        Crossing("team", "ml", 8_000, 9_000),
    ]


def test_limits_and_budgets_without_thresholds_report_nothing() -> None:
    watch = Thresholds()
    assert watch.crossed(_admitted(_budget(kind=Kind.LIMIT), 0, 0, 1_000, NOW)) == []
    assert watch.crossed(_admitted(_budget(soft=()), 0, 0, 1_000, NOW)) == []


def test_a_threshold_passed_by_a_bound_given_back_is_reported_where_the_count_reaches_it() -> None:
    """`spendgate.pipeline.bound_first`: request X's bound takes the budget from 30 % to
    70 % and is given back for its exact count. Meanwhile request Y reserved from 70 % to
    95 % and, finding 50 % already behind it, reported only 80 %. X's exact reservation,
    from 55 % (Y's hold) to 65 %, never passes 50 % itself: it reports it, since it reaches
    it; without that, the crossing would be lost."""
    budget = _budget()
    watch = Thresholds()
    bound = _admitted(budget, 0, 300, 400, NOW)  # X: 30 % -> 70 %, given back
    assert watch.would_cross(bound)
    assert watch.crossed(_admitted(budget, 0, 700, 250, NOW)) == [  # Y
        Crossing("team", "ml", 8_000, 9_500)
    ]
    exact = _admitted(budget, 0, 550, 100, NOW)  # X's exact count: 55 % -> 65 %
    assert Thresholds().crossed(exact) == []  # on its own it passes nothing
    assert watch.crossed(exact, given_back=bound) == [Crossing("team", "ml", 5_000, 6_500)]
    assert watch.crossed(exact, given_back=bound) == []  # once a window


def test_a_bound_given_back_is_not_reported_where_the_count_stays_below() -> None:
    budget = _budget()
    watch = Thresholds()
    bound = _admitted(budget, 0, 300, 400, NOW)  # 30 % -> 70 %, given back
    assert watch.crossed(_admitted(budget, 0, 300, 100, NOW), given_back=bound) == []  # 40 %
    # the bound's 80 % is not reached either way, and another budget's bound counts not
    bound = _admitted(budget, 0, 0, 900, NOW)  # 0 -> 90 %
    assert watch.crossed(_admitted(budget, 0, 0, 600, NOW), given_back=bound) == [
        Crossing("team", "ml", 5_000, 6_000)
    ]
    other = _budget(soft=(9_000,))
    other_bound = _admitted(other, 0, 0, 950, NOW)
    assert Thresholds().crossed(_admitted(budget, 0, 0, 100, NOW), given_back=other_bound) == []
