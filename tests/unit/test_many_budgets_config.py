"""A config listing many budgets: check-config's "not checked" warning names the first
`UNCHECKED_SHOWN` of them and counts the rest (it named every one: a 100,000-budget
config printed one warning of several megabytes)."""

from __future__ import annotations

from typing import Any

import pytest

from spendgate.config.checks import UNCHECKED_SHOWN, reference_warnings
from spendgate.config.loader import parse_config


def _config(budgets: int) -> dict[str, Any]:
    return {
        "budgets": [
            {"name": f"u{i}", "scope": "user", "match": f"user{i}", "limit_usd": "10"}
            for i in range(budgets)
        ]
    }


def test_the_unchecked_warning_names_the_first_and_counts_the_rest() -> None:
    config = parse_config(_config(UNCHECKED_SHOWN + 1234))
    (warning,) = reference_warnings(config, None, "the database does not exist yet")
    named = [f"budgets[{i}] (user 'user{i}')" for i in range(UNCHECKED_SHOWN)]
    assert warning == (
        f"not checked: {', '.join(named)} and 1,234 more: these labels exist only on keys, "
        "and the database does not exist yet"
    )


def test_a_short_list_is_named_in_full() -> None:
    config = parse_config(_config(2))
    assert reference_warnings(config, None, "no keys") == [
        "not checked: budgets[0] (user 'user0'), budgets[1] (user 'user1'): these labels "
        "exist only on keys, and no keys"
    ]


def test_budgets_no_key_carries_are_named_up_to_a_count() -> None:
    from spendgate.config.checks import KeyLabels

    config = parse_config(_config(UNCHECKED_SHOWN + 5))
    warnings = reference_warnings(config, KeyLabels(users=frozenset({"user0"})))
    assert len(warnings) == UNCHECKED_SHOWN + 1
    assert warnings[0].startswith("budgets[1]: budget 'u1' matches user 'user1', but no active")
    assert warnings[-1] == (
        "and 4 more budgets, limits, caps or rules whose member no active key in the "
        "database carries"
    )


def _mixed(count: int) -> dict[str, Any]:
    scopes = ("user", "service", "tag", "key")
    budgets = [
        {"name": f"b{i}", "scope": scopes[i % 4 if i % 3 else 0], "match": f"m{i % 50}",
         "limit_usd": "10"}
        for i in range(count)
    ]  # fmt: skip
    limits = [{"name": "rpm", "scope": "user", "match": "m7", "requests": "5/minute"}]
    return {"budgets": budgets, "limits": limits}


@pytest.mark.parametrize("data", [_config(300), _mixed(300), _mixed(7)])
@pytest.mark.parametrize("carried", [None, {"m1", "m7", "m30", "user4"}, set()])
def test_budgets_looked_up_in_bulk_warn_as_one_by_one(
    data: dict[str, Any], carried: set[str] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Budgets each naming a member of a key-carried scope, on every model, are checked
    in bulk: the warnings read as when each entry is checked on its own."""
    from spendgate.config import checks
    from spendgate.config.checks import KeyLabels

    config = parse_config(data)
    labels = None
    if carried is not None:
        labels = KeyLabels(*(frozenset(carried),) * 5)
    assert checks._named_on_keys(config.budgets) is not None
    in_bulk = reference_warnings(config, labels, "no database")
    monkeypatch.setattr(checks, "_named_on_keys", lambda budgets: None)
    assert in_bulk == reference_warnings(config, labels, "no database")
