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
