"""The budget index (`spendgate.domain.budgets.ScopeIndex`) against the linear scan it
replaced: for random books (named members, wildcards, model globs, every scope, names
repeated across scopes) and random callers (tags repeated, labels missing), the budgets,
members and order found through the index are exactly those of testing every budget's
``covers_model`` and ``members``; the same for request caps and for a caller's view."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from spendgate.domain.budgets import (
    Budget,
    BudgetBook,
    BudgetScope,
    Caller,
    RequestCap,
    Scoped,
    Unit,
)
from spendgate.domain.identity import ApiKey
from spendgate.domain.periods import Calendar, Period

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)
LABELS = ("a", "b", "c", "gpt-4o", "claude-haiku-4-5")  # shared: a value may name any scope
MODELS = ("gpt-4o", "gpt-4o-mini", "claude-haiku-4-5", "o3")
PATTERNS = ("gpt-*", "gpt-4o", "claude-*", "o?", "nothing-*")
PERIODS = (Period.parse("daily"), Period.parse("monthly"))

labels = st.sampled_from(LABELS)
maybe_label = st.none() | labels

targets = st.builds(
    Scoped,
    scope=st.sampled_from(list(BudgetScope)),
    match=st.sampled_from(("*", *LABELS)),
    models=st.lists(st.sampled_from(PATTERNS), max_size=2).map(tuple),
)


@st.composite
def books(draw: st.DrawFn) -> BudgetBook:
    picked = draw(st.lists(targets, max_size=24))
    budgets = [
        Budget(f"b{i}", target, Unit.NANOS, 10**9, draw(st.sampled_from(PERIODS)), True, ())
        for i, target in enumerate(picked)
    ]
    caps = [RequestCap(target, 1000, None) for target in draw(st.lists(targets, max_size=8))]
    return BudgetBook(budgets, caps, Calendar.of("UTC"))


@st.composite
def callers(draw: st.DrawFn) -> Caller:
    key = ApiKey(
        id=draw(labels),
        key_hash="h",
        hint="sk-...",
        name="k",
        created_at=NOW,
        user=draw(maybe_label),
        service=draw(maybe_label),
        team=draw(maybe_label),
        tags=tuple(draw(st.lists(labels, max_size=4))),  # a tag may be given twice
    )
    return Caller(
        key=key,
        org=draw(maybe_label),
        model=draw(st.sampled_from(MODELS)),
        session=draw(maybe_label),
    )


def scanned(book: BudgetBook, caller: Caller) -> list[tuple[str, str]]:
    """What the linear scan found: (budget, member) in book order."""
    return [
        (budget.name, member)
        for budget in book.budgets
        if budget.target.covers_model(caller.model)
        for member in budget.target.members(caller)
    ]


@settings(max_examples=400, deadline=None)
@given(book=books(), many=st.lists(callers(), min_size=1, max_size=6))
def test_the_index_finds_what_the_scan_found(book: BudgetBook, many: list[Caller]) -> None:
    for caller in [*many, *many]:  # the second time from the applies-cache
        found = [(ref.budget.name, ref.member) for ref in book.counters(caller, NOW)]
        assert found == scanned(book, caller)
        for ref in book.counters(caller, NOW):
            assert ref.window == book.window(ref.budget.period, NOW)


@settings(max_examples=300, deadline=None)
@given(book=books(), caller=callers())
def test_caps_and_a_callers_view_match_the_scan(book: BudgetBook, caller: Caller) -> None:
    assert book.caps_for(caller) == [
        cap
        for cap in book.caps
        if cap.target.covers_model(caller.model) and cap.target.members(caller)
    ]
    per_request = (BudgetScope.SESSION, BudgetScope.MODEL)
    assert [(b.name, m) for b, members in book.counting(caller) for m in members] == [
        (budget.name, member)
        for budget in book.budgets
        if budget.target.scope not in per_request
        for member in budget.target.members(caller)
    ]


def test_a_lookup_does_not_grow_with_the_book() -> None:
    """100,000 listed user budgets: a caller's lookup touches its own entries only (by
    count: the index hands back one budget, and builds nothing per listed budget)."""
    budgets = [
        Budget(f"u{i}", Scoped(BudgetScope.USER, f"user{i}", ()), Unit.NANOS, 10**9,
               PERIODS[1], True, ())
        for i in range(100_000)
    ]  # fmt: skip
    wild = Budget(
        "everyone", Scoped(BudgetScope.USER, "*", ()), Unit.NANOS, 1, PERIODS[0], True, ()
    )
    book = BudgetBook([*budgets[:50_000], wild, *budgets[50_000:]], [], Calendar.of("UTC"))
    key = ApiKey("k1", "h", "sk-...", "k", NOW, user="user77777")
    refs = book.counters(Caller(key=key, org=None, model="gpt-4o"), NOW)
    assert [(ref.budget.name, ref.member) for ref in refs] == [
        ("everyone", "user77777"),
        ("u77777", "user77777"),
    ]
    oldest = book.oldest_counted(NOW)
    assert len(oldest) == 100_001
    assert oldest["u5"] == book.window(PERIODS[1], NOW).since_ms
    assert oldest["everyone"] == book.window(PERIODS[0], NOW).since_ms
