"""A caller's counters (`BudgetBook.counters`) are made once and kept while their windows
last: the same members, windows and ids every request, new ones when a window rolls over
or the caller differs, and a caller's list of them is its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from spendgate.domain.budgets import Budget, BudgetBook, BudgetScope, Caller, Scoped, Unit
from spendgate.domain.identity import ApiKey
from spendgate.domain.periods import Calendar, Period

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)
DAILY = Period.parse("daily")
MONTHLY = Period.parse("monthly")


def _book() -> BudgetBook:
    budgets = [
        Budget("user", Scoped(BudgetScope.USER, "*", ()), Unit.NANOS, 10**9, DAILY, True, ()),
        Budget("team", Scoped(BudgetScope.TEAM, "ml", ()), Unit.NANOS, 10**9, MONTHLY, True, ()),
    ]
    return BudgetBook(budgets, [], Calendar.of("UTC"))


def _caller(user: str) -> Caller:
    key = ApiKey(
        id=f"k-{user}", key_hash="h", hint="sk-...", name="k", created_at=NOW, user=user, team="ml"
    )
    return Caller(key=key, org=None, model="gpt-4o")


def _described(refs: list) -> list[tuple[str, str, int, str]]:  # type: ignore[type-arg]
    return [(r.budget.name, r.member, r.window.bucket_ms, r.id) for r in refs]


def test_a_callers_counters_are_the_same_within_their_windows() -> None:
    book = _book()
    first = book.counters(_caller("ann"), NOW)
    again = book.counters(_caller("ann"), NOW + timedelta(hours=1))
    assert _described(again) == _described(first)
    assert all(a is b for a, b in zip(again, first, strict=True))  # made once, not per request
    bucket = int(datetime(2026, 12, 7, tzinfo=UTC).timestamp() * 1000)
    assert first[0].id == f"user|ann|{bucket}"
    again.pop()  # the list is the caller's own: the book's kept refs do not change
    assert _described(book.counters(_caller("ann"), NOW)) == _described(first)


def test_a_new_window_or_another_caller_gets_counters_of_its_own() -> None:
    book = _book()
    today = book.counters(_caller("ann"), NOW)
    tomorrow = book.counters(_caller("ann"), NOW + timedelta(days=1))
    assert tomorrow[0].window.bucket_ms == today[0].window.bucket_ms + 86_400_000
    assert tomorrow[0].id == f"user|ann|{tomorrow[0].window.bucket_ms}"
    assert tomorrow[1].window == today[1].window  # the month has not rolled over
    bob = book.counters(_caller("bob"), NOW)
    assert [r.member for r in bob] == ["bob", "ml"]
    assert [r.member for r in book.counters(_caller("ann"), NOW)] == ["ann", "ml"]
