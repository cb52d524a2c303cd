"""The ``budgets:`` list is validated straight into `BudgetSpec`s by pydantic's core
(`spendgate.config.budgets.listed_budgets`), not one `BudgetConfig` model per entry: both
ways must accept the same entries, give the same budgets (the same Decimals, written the
same), and refuse the same entries with the same errors."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from spendgate.config.budgets import BudgetConfig, BudgetSpec, listed_budgets
from spendgate.config.build import build_budget, build_budget_book
from spendgate.config.loader import parse_config
from spendgate.domain.budgets import BudgetBook, ScopeIndex
from spendgate.domain.periods import Calendar

MODELS: TypeAdapter[list[BudgetConfig]] = TypeAdapter(list[BudgetConfig])


def by_models(entries: Any) -> tuple[BudgetSpec, ...]:
    """What a model per entry gives (the way before)."""
    return tuple(BudgetSpec.of(entry) for entry in MODELS.validate_python(entries))


def outcome(validate: Any, entries: Any) -> tuple[str, Any]:
    try:
        specs = validate(entries)
    except ValidationError as exc:
        return "refused", repr(exc.errors(include_url=False, include_context=False))
    # the same values, written the same (Decimal('1.0') is not Decimal('1.00'))
    return "accepted", [(spec, [repr(field) for field in spec]) for spec in specs]


texts = st.one_of(
    st.sampled_from(["ml", "user-1", "a b", "", "*", "x.y:z/w@v+u", "-lead", "é", "ok\n"]),
    st.text(max_size=6),
)
amounts = st.one_of(
    st.sampled_from(["10", "10.50", "0", "-1", " 12 ", "1e3", "1_000", "NaN", "inf", "0.8"]),
    st.sampled_from(["0.5", "1", "1.0", "0.0001", "abc", "", "007"]),
    st.integers(-5, 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
)
anything = st.one_of(st.none(), st.booleans(), texts, amounts, st.lists(texts, max_size=2))
fields: dict[str, st.SearchStrategy[Any]] = {
    "name": st.one_of(texts, anything),
    "scope": st.one_of(st.sampled_from(["user", "team", "org", "key", "tag", "USER"]), anything),
    "match": st.one_of(texts, anything),
    "models": st.one_of(st.lists(texts, max_size=3), anything),
    "limit_usd": st.one_of(amounts, anything),
    "limit_tokens": st.one_of(st.integers(-1, 10**9), anything),
    "share_of": st.one_of(texts, anything),
    "share": st.one_of(amounts, anything),
    "period": st.one_of(
        st.sampled_from(["monthly", "daily", "rolling:5h", "rolling:0h", "yearly"]), anything
    ),
    "hard": st.one_of(st.booleans(), anything),
    "soft_thresholds": st.one_of(st.lists(amounts, max_size=3), anything),
    "hidden_input": st.one_of(st.sampled_from(["bound", "refuse", "estimate"]), anything),
    "limit": anything,  # an unknown key
}


@st.composite
def entries(draw: st.DrawFn) -> Any:
    """A budget entry: mostly a plausible mapping, some keys missing or wrong."""
    if draw(st.integers(0, 20)) == 0:
        return draw(anything)
    entry = {"name": draw(st.sampled_from(["a", "b", "c-1"])), "scope": "user"}
    entry["limit_usd" if draw(st.booleans()) else "limit_tokens"] = draw(st.integers(1, 99))
    for key in draw(st.lists(st.sampled_from(sorted(fields)), max_size=4, unique=True)):
        entry[key] = draw(fields[key])
    for key in draw(st.lists(st.sampled_from(["name", "scope"]), max_size=1)):
        entry.pop(key, None)
    return entry


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.lists(entries(), max_size=4), anything))
def test_the_list_validates_as_one_model_per_entry_would(value: Any) -> None:
    assert outcome(listed_budgets, value) == outcome(by_models, value)


def test_plain_entries_come_out_as_the_models_would() -> None:
    value = [
        {"name": "a", "scope": "user", "match": "u1", "limit_usd": "1000"},
        {"name": "b", "scope": "team", "limit_usd": 12.5, "soft_thresholds": [0.5, "0.9"]},
        {"name": "c", "scope": "tag", "models": ["claude-*"], "limit_tokens": 5, "hard": False},
        {"name": "d", "scope": "org", "share_of": "a", "share": "0.2", "period": "rolling:5h"},
        {"name": "e", "scope": "key", "limit_usd": 3, "hard": False, "hidden_input": "estimate"},
    ]
    assert outcome(listed_budgets, value) == outcome(by_models, value)
    assert outcome(listed_budgets, value)[0] == "accepted"


def test_a_refused_entry_is_named_as_before() -> None:
    value = [{"name": "a", "scope": "user", "limit_usd": 1}, {"name": "b", "scope": "user"}]
    with pytest.raises(ValidationError) as caught:
        listed_budgets(value)
    (error,) = caught.value.errors()
    assert (error["loc"], error["msg"]) == (
        (1,),
        "Value error, give exactly one of limit_usd, limit_tokens or share_of",
    )


def test_the_spec_has_the_models_fields_and_defaults() -> None:
    model = BudgetConfig(name="a", scope="user", limit_tokens=1)  # type: ignore[arg-type]
    assert list(BudgetSpec._fields) == list(BudgetConfig.model_fields)
    assert BudgetSpec.of(model) == BudgetSpec("a", model.scope, limit_tokens=1)


def _config(count: int) -> dict[str, Any]:
    budgets: list[dict[str, Any]] = [
        {"name": f"u{i}", "scope": "user", "match": f"user{i}", "limit_usd": f"{10 + i % 7}.5"}
        for i in range(count)
    ]
    budgets += [
        {"name": "team", "scope": "team", "limit_tokens": 1000, "period": "daily"},
        {"name": "share", "scope": "user", "share_of": "team", "share": "0.25"},
        {"name": "opus", "scope": "user", "models": ["claude-*"], "limit_usd": 2, "hard": False},
    ]
    return {"budgets": budgets}


def test_the_book_is_built_as_from_one_model_per_budget() -> None:
    config = parse_config(_config(500))
    models = MODELS.validate_python(_config(500)["budgets"])
    by_name = {model.name: model for model in models}
    before = [build_budget(m, by_name.get(m.share_of) if m.share_of else None) for m in models]
    book = build_budget_book(config)
    assert list(book.budgets) == before
    old = BudgetBook(before, [], Calendar.of("UTC"))
    assert book._periods == old._periods
    assert (book._by_model, book._by_session) == (old._by_model, old._by_session)


def test_the_index_files_repeated_members_in_order() -> None:
    config = parse_config(_config(3))
    budgets = build_budget_book(config).budgets
    index = ScopeIndex([(b.target, b) for b in budgets] * 2)
    assert index._named == {
        **index._named,
        budgets[0].target.scope: {f"user{i}": (i, len(budgets) + i) for i in range(3)},
    }


def test_a_config_built_from_another_keeps_its_budgets() -> None:
    config = parse_config(_config(3))
    copy = config.model_validate(config.model_dump(round_trip=True))
    assert copy.budgets == config.budgets
    assert config.model_copy(update={"budgets": config.budgets}).budgets is config.budgets
    assert config.budgets[0].limit_usd == Decimal("10.5")
