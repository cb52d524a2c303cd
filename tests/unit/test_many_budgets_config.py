"""A config listing many budgets: check-config's "not checked" warning names the first
`UNCHECKED_SHOWN` of them and counts the rest (it named every one: a 100,000-budget
config printed one warning of several megabytes)."""

from __future__ import annotations

from typing import Any

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
