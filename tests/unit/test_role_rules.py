"""What each role may do and see, and which team a budget member belongs to (pure)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from spendgate.domain.budgets import Budget, BudgetScope, Scoped, Unit
from spendgate.domain.periods import Period
from spendgate.domain.roles import (
    Access,
    Principal,
    Role,
    parse_duration,
    shared_labels,
    team_of_budget_member,
)

ORG = Principal("env", Role.ORG_ADMIN)
ML_ADMIN = Principal("alice", Role.TEAM_ADMIN, "ml", "tok_a")
VIEWER = Principal("val", Role.VIEWER, None, "tok_v")
ML_VIEWER = Principal("vic", Role.VIEWER, "ml", "tok_w")


@pytest.mark.parametrize(
    ("principal", "allowed"),
    [
        (ORG, set(Access)),
        (ML_ADMIN, {Access.TEAM_READ, Access.TEAM_CHANGE}),
        (VIEWER, {Access.TEAM_READ, Access.READ}),
        (ML_VIEWER, {Access.TEAM_READ}),
    ],
    ids=lambda p: getattr(p, "name", ""),
)
def test_what_each_role_is_allowed(principal: Principal, allowed: set[Access]) -> None:
    assert {access for access in Access if principal.allows(access)} == allowed
    for access in set(Access) - allowed:
        assert principal.refusal(access).startswith("Permission denied: ")


def test_who_sees_and_changes_what() -> None:
    assert ORG.sees(None)
    assert ORG.sees("web")
    assert ORG.may_change(None)
    assert VIEWER.sees("web")
    assert not VIEWER.may_change("web")
    assert ML_ADMIN.sees("ml")
    assert not ML_ADMIN.sees("web")
    assert not ML_ADMIN.sees(None)
    assert ML_ADMIN.may_change("ml")
    assert not ML_ADMIN.may_change("web")
    assert not ML_ADMIN.may_change(None)
    assert ML_VIEWER.sees("ml")
    assert not ML_VIEWER.may_change("ml")
    assert ML_ADMIN.actor == "token:tok_a (alice)"
    assert ORG.actor == "env"
    assert "belongs to team web" in ML_ADMIN.outside("key key_1", "web")


def budget(name: str, scope: BudgetScope, match: str) -> Budget:
    return Budget(
        name=name,
        target=Scoped(scope, match, ()),
        unit=Unit.NANOS,
        limit=10,
        period=Period.parse("daily"),
        hard=True,
        soft_bp=(),
    )


KEYS = {"key_ml": "ml", "key_none": None}


@pytest.mark.parametrize(
    ("item", "member", "team"),
    [
        (budget("team-ml", BudgetScope.TEAM, "ml"), None, "ml"),
        (budget("team-ml", BudgetScope.TEAM, "ml"), "ml", "ml"),
        (budget("team-ml", BudgetScope.TEAM, "ml"), "web", None),  # not its member
        (budget("per-team", BudgetScope.TEAM, "*"), "web", "web"),
        (budget("per-team", BudgetScope.TEAM, "*"), None, None),  # the whole: every team
        (budget("per-key", BudgetScope.KEY, "*"), "key_ml", "ml"),
        (budget("one-key", BudgetScope.KEY, "key_ml"), None, "ml"),
        (budget("per-key", BudgetScope.KEY, "*"), "key_none", None),
        (budget("per-user", BudgetScope.USER, "*"), "ada", None),
        (budget("org", BudgetScope.ORG, "acme"), None, None),
        (budget("key:key_ml", BudgetScope.KEY, "key_ml"), None, "ml"),
        (budget("key:key_ml:requests/minute", BudgetScope.KEY, "key_ml"), "key_ml", "ml"),
        (budget("key:key_gone", BudgetScope.KEY, "key_gone"), None, None),
    ],
)
def test_the_team_of_a_budget_member(item: Budget, member: str | None, team: str | None) -> None:
    assert team_of_budget_member(item, member, KEYS) == team


def test_durations() -> None:
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration(" 12h ") == timedelta(hours=12)
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("2w") == timedelta(weeks=2)
    for bad in ("0d", "30", "d", "1y", "-1d", ""):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)


def test_a_team_admin_may_set_only_labels_no_other_team_carries() -> None:
    carried: dict[tuple[str, str], set[str | None]] = {
        ("user", "ada"): {"ml"},
        ("user", "bob"): {"ml", "web"},
        ("tags", "shared"): {None},
    }
    assert shared_labels(" ada ", None, ("x",)) == {("user", "ada"), ("tags", "x")}
    assert ML_ADMIN.foreign_label({("user", "ada"), ("service", "new")}, carried) is None
    refusal = ML_ADMIN.foreign_label({("user", "ada"), ("user", "bob")}, carried)
    assert refusal is not None
    assert refusal.startswith("Permission denied: user 'bob' is carried by a key outside team ml")
    assert ML_ADMIN.foreign_label({("tags", "shared")}, carried) is not None  # of no team
    assert ORG.foreign_label({("user", "bob"), ("tags", "shared")}, carried) is None
