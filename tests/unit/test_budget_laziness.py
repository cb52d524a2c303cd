"""The budget book builds each listed budget the first time a lookup needs it
(`spendgate.domain.budget_list.BudgetList`): filing, pruning and naming build none; a
caller's lookup builds the ones that apply to it; and what a lazily built budget admits,
clamps and refuses is what the same budget built up front does."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from spendgate.config.build import build_budget, build_budget_book
from spendgate.config.loader import parse_config
from spendgate.domain.admission import Admitted, CounterState, Refused, WorstCase, decide
from spendgate.domain.budget_list import BudgetList
from spendgate.domain.budgets import BudgetBook, Caller
from spendgate.domain.identity import ApiKey

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)


def _config(count: int) -> dict[str, Any]:
    budgets: list[dict[str, Any]] = [
        {"name": f"u{i}", "scope": "user", "match": f"user{i}", "limit_usd": f"{1 + i % 7}.5"}
        for i in range(count)
    ]
    budgets += [
        {"name": "team", "scope": "team", "match": "ml", "limit_tokens": 5000},
        {"name": "share", "scope": "user", "share_of": "team", "share": "0.25"},
        {"name": "opus", "scope": "user", "models": ["claude-*"], "limit_usd": 2, "hard": False},
        {"name": "daily", "scope": "user", "match": "user1", "limit_usd": "0.5", "period": "daily"},
    ]
    limits = [{"name": "rpm", "scope": "key", "requests": "3/minute", "concurrency": 2}]
    return {"budgets": budgets, "limits": limits}


def _caller(user: str, model: str = "gpt-4o", team: str | None = "ml") -> Caller:
    key = ApiKey(
        id=f"k-{user}", key_hash="h", hint="sk-...", name="k", created_at=NOW, user=user, team=team
    )
    return Caller(key=key, org=None, model=model)


def _eager(book: BudgetBook) -> BudgetBook:
    """The same budgets built up front, as the book held them before."""
    config = parse_config(_config(200))
    by_name = {spec.name: spec for spec in config.budgets}
    built = [
        build_budget(spec, by_name.get(spec.share_of) if spec.share_of else None)
        for spec in config.budgets
    ]
    limits = [budget for budget in book.budgets if budget.name.startswith("rpm:")]
    return BudgetBook([*built, *limits], [], book.calendar, book.loop, book.loops)


def test_filing_pruning_and_naming_build_no_budget() -> None:
    book = build_budget_book(parse_config(_config(200)))
    listed = book.budgets
    assert isinstance(listed, BudgetList)
    assert listed.built() == 0
    assert set(book.oldest_counted(NOW)) == {*book.names()}
    assert book.names()[:2] == ["u0", "u1"]
    assert len(book.names()) == len(listed)
    assert listed.built() == 0
    assert book.get("u7") == listed[7]
    assert book.get("nobody") is None
    assert listed.built() == 1


def test_a_lookup_builds_only_the_budgets_that_apply() -> None:
    book = build_budget_book(parse_config(_config(200)))
    listed = book.budgets
    assert isinstance(listed, BudgetList)
    found = {ref.budget.name for ref in book.counters(_caller("user1"), NOW)}
    assert found == {"u1", "team", "share", "daily", "rpm:requests/minute", "rpm:concurrency"}
    # built: those found, and the wildcard looked at for its models (opus), no other
    assert listed.built() == len(found) + 1
    assert {ref.budget.name for ref in book.counters(_caller("user1", "claude-x"), NOW)} == {
        *found,
        "opus",
    }


def test_budgets_built_on_first_use_admit_as_budgets_built_up_front() -> None:
    lazy = build_budget_book(parse_config(_config(200)))
    eager = _eager(lazy)
    assert not isinstance(eager.budgets, BudgetList)
    worst = WorstCase(
        input_tokens=400,
        input_exact=True,
        requested_ceiling=4000,
        choices=1,
        input_cost=400 * 2_500,
        output_rate=10_000_000_000,
    )
    for user in ("user0", "user1", "user3", "user199", "nobody"):
        for model in ("gpt-4o", "claude-x"):
            caller = _caller(user, model)
            refs = lazy.counters(caller, NOW)
            assert refs == eager.counters(caller, NOW)
            for spent in (0, 10**8, 10**9, 2 * 10**9, 6 * 10**9):
                results: list[Admitted | Refused] = []
                for book in (lazy, eager):
                    states = [
                        CounterState(ref, ref.budget.limit, min(spent, ref.budget.limit), 0)
                        for ref in book.counters(caller, NOW)
                    ]
                    results.append(decide(worst, states, [], 16))
                assert results[0] == results[1]
    assert list(lazy.budgets) == list(eager.budgets)
    assert lazy.budgets == eager.budgets
    assert lazy.oldest_counted(NOW) == eager.oldest_counted(NOW)
