"""The pure router: aliases by scope and dialect, rewrites, premium exceptions, downgrades,
shadow decisions and weighted deployment order."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from spendgate.config import parse_config
from spendgate.config.build import build_budget_book, build_model_table, build_router
from spendgate.config.schema import RouteKind
from spendgate.domain.budgets import Caller
from spendgate.domain.identity import ApiKey
from spendgate.domain.models import Deployment, Dialect, ModelRoute
from spendgate.domain.routing import RouteFacts, Router
from spendgate.errors import ModelNotFound, WrongDialect
from spendgate.pricing.catalog import build_price_book

OPENAI = Dialect.OPENAI
ANTHROPIC = Dialect.ANTHROPIC


def _config(routing: dict[str, Any], budgets: list[dict[str, Any]] | None = None) -> Any:
    return parse_config(
        {
            "providers": {
                "oa": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
                "an": {"kind": "anthropic", "base_url": "http://127.0.0.1:9"},
            },
            "models": {
                "gpt-4o": {"provider": "oa"},
                "gpt-4o-mini": {"provider": "oa"},
                "claude-opus-4-1": {"provider": "an"},
                "claude-sonnet-4-6": {"provider": "an"},
                "claude-haiku-4-5": {"provider": "an"},
            },
            "orgs": {"acme": {"teams": ["web", "ml"]}},
            "budgets": budgets or [],
            "routing": routing,
        }
    )


def _router(routing: dict[str, Any], budgets: list[dict[str, Any]] | None = None) -> Router:
    config = _config(routing, budgets)
    table = build_model_table(config, build_price_book(config))
    return build_router(config, table, build_budget_book(config))


def _caller(model: str, **identity: Any) -> Caller:
    key = ApiKey(
        id=identity.pop("id", "key_1"),
        key_hash="h",
        hint="sk-...",
        name="k",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        **identity,
    )
    return Caller(key=key, org="acme" if key.team else None, model=model)


ALIASES = {
    "rules": [
        {"name": "everyone", "kind": "alias", "alias": "default", "to": "gpt-4o-mini"},
        {"name": "everyone-msgs", "kind": "alias", "alias": "default", "to": "claude-haiku-4-5"},
        {
            "name": "ml-team",
            "kind": "alias",
            "scope": "team",
            "match": "ml",
            "alias": "default",
            "to": "gpt-4o",
        },
        {
            "name": "alice",
            "kind": "alias",
            "scope": "user",
            "match": "alice",
            "alias": "default",
            "to": "gpt-4o-mini",
        },
    ]
}


def test_the_most_specific_alias_wins_within_the_dialect() -> None:
    router = _router(ALIASES)
    facts = RouteFacts()
    anyone = router.route("default", OPENAI, _caller("default"), facts, {})
    assert (anyone.model, anyone.rule, anyone.kind) == ("gpt-4o-mini", "everyone", RouteKind.ALIAS)
    ml = router.route("default", OPENAI, _caller("default", team="ml"), facts, {})
    assert (ml.model, ml.rule, ml.baseline) == ("gpt-4o", "ml-team", "gpt-4o")
    alice_in_ml = router.route(
        "default", OPENAI, _caller("default", team="ml", user="alice"), facts, {}
    )
    assert alice_in_ml.rule == "alice"  # a user beats a team
    messages = router.route("default", ANTHROPIC, _caller("default", team="ml"), facts, {})
    assert (messages.model, messages.rule) == ("claude-haiku-4-5", "everyone-msgs")
    assert not anyone.changed  # an alias is what the caller asked for: no saving claimed


def test_names_that_are_neither_alias_nor_model_are_refused() -> None:
    router = _router(ALIASES)
    with pytest.raises(ModelNotFound):
        router.route("fast", OPENAI, _caller("fast"), RouteFacts(), {})
    only_openai = _router({"rules": [ALIASES["rules"][0]]})
    with pytest.raises(WrongDialect):
        only_openai.route("default", ANTHROPIC, _caller("default"), RouteFacts(), {})
    # A model asked for by name, with no rule: served as asked.
    plain = only_openai.route("gpt-4o", OPENAI, _caller("gpt-4o"), RouteFacts(), {})
    assert (plain.model, plain.rule, plain.kind) == ("gpt-4o", None, None)


REWRITES = {
    "premium": {
        "models": ["claude-opus-*", "gpt-4o"],
        "users": ["bob"],
        "keys": ["key_vip"],
        "tags": ["critical"],
        "with_tools": True,
        "min_input_tokens": 1000,
        "allowance_budget": "web-premium",
    },
    "rules": [
        {
            "name": "web-no-opus",
            "kind": "rewrite",
            "scope": "team",
            "match": "web",
            "models": ["claude-opus-*"],
            "to": "claude-sonnet-4-6",
        },
        {
            "name": "bot-mini",
            "kind": "rewrite",
            "scope": "service",
            "match": "review-bot",
            "models": ["gpt-4o"],
            "to": "gpt-4o-mini",
        },
    ],
}
PREMIUM_BUDGETS = [
    {"name": "web-monthly", "scope": "team", "match": "web", "limit_usd": "100"},
    {
        "name": "web-premium",
        "scope": "team",
        "match": "web",
        "models": ["claude-opus-*"],
        "share_of": "web-monthly",
        "share": "0.2",
        "hard": False,
    },
]


def test_rewrites_apply_to_their_scope_and_models_only() -> None:
    router = _router(REWRITES, PREMIUM_BUDGETS)
    web = router.route("claude-opus-4-1", ANTHROPIC, _caller("x", team="web"), RouteFacts(), {})
    assert (web.model, web.rule, web.kind, web.baseline) == (
        "claude-sonnet-4-6",
        "web-no-opus",
        RouteKind.REWRITE,
        "claude-opus-4-1",
    )
    assert web.changed
    ml = router.route("claude-opus-4-1", ANTHROPIC, _caller("x", team="ml"), RouteFacts(), {})
    assert ml.model == "claude-opus-4-1"
    assert ml.rule is None
    bot = router.route("gpt-4o", OPENAI, _caller("x", service="review-bot"), RouteFacts(), {})
    assert bot.model == "gpt-4o-mini"


@pytest.mark.parametrize(
    ("identity", "facts", "used"),
    [
        ({"user": "bob"}, RouteFacts(), {}),
        ({"id": "key_vip"}, RouteFacts(), {}),
        ({"tags": ("critical",)}, RouteFacts(), {}),
        ({}, RouteFacts(has_tools=True), {}),
        ({}, RouteFacts(input_tokens=lambda model: 1000), {}),
        ({}, RouteFacts(opted_in=True), {"web-premium": 9_999}),
    ],
    ids=["user", "key", "tag", "tools", "big-input", "opt-in-with-allowance"],
)
def test_premium_entitlement_keeps_the_premium_model(
    identity: dict[str, Any], facts: RouteFacts, used: dict[str, int]
) -> None:
    router = _router(REWRITES, PREMIUM_BUDGETS)
    decision = router.route(
        "claude-opus-4-1", ANTHROPIC, _caller("x", team="web", **identity), facts, used
    )
    assert (decision.model, decision.premium, decision.rule) == ("claude-opus-4-1", True, None)


@pytest.mark.parametrize(
    ("facts", "used"),
    [
        (RouteFacts(opted_in=True), {"web-premium": 10_000}),  # allowance used up
        (RouteFacts(opted_in=False), {"web-premium": 0}),  # did not opt in
        (RouteFacts(input_tokens=lambda model: 999), {}),  # just under the size rule
    ],
    ids=["allowance-spent", "no-opt-in", "small-input"],
)
def test_without_entitlement_the_rewrite_applies(facts: RouteFacts, used: dict[str, int]) -> None:
    router = _router(REWRITES, PREMIUM_BUDGETS)
    decision = router.route("claude-opus-4-1", ANTHROPIC, _caller("x", team="web"), facts, used)
    assert (decision.model, decision.premium) == ("claude-sonnet-4-6", False)


def test_the_allowance_is_watched_only_for_opt_ins() -> None:
    router = _router(REWRITES, PREMIUM_BUDGETS)
    caller = _caller("claude-opus-4-1", team="web")
    assert router.watched(caller, RouteFacts()) == ()
    assert router.watched(caller, RouteFacts(opted_in=True)) == ("web-premium",)
    # The share is resolved against the parent budget: 20% of $100.
    config = _config(REWRITES, PREMIUM_BUDGETS)
    allowance = build_budget_book(config).get("web-premium")
    assert allowance is not None
    assert allowance.limit == 20 * 10**9


DOWNGRADES = {
    "tiers": {
        "claude-opus-4-1": "claude-sonnet-4-6",
        "claude-sonnet-4-6": "claude-haiku-4-5",
    },
    "rules": [
        {"name": "web-soft", "kind": "downgrade", "budget": "web-monthly"},
        {"name": "web-late", "kind": "downgrade", "budget": "web-monthly", "at": "0.95"},
    ],
}
SOFT_BUDGET = [
    {
        "name": "web-monthly",
        "scope": "team",
        "match": "web",
        "limit_usd": "100",
        "soft_thresholds": ["0.8"],
    }
]


@pytest.mark.parametrize(
    ("used_bp", "model", "rule"),
    [
        (0, "claude-opus-4-1", None),
        (7_999, "claude-opus-4-1", None),
        (8_000, "claude-sonnet-4-6", "web-soft"),  # the budget's own soft threshold
        (9_499, "claude-sonnet-4-6", "web-soft"),
        (9_500, "claude-haiku-4-5", "web-late"),  # two rules: two tiers
        (12_000, "claude-haiku-4-5", "web-late"),  # no tier below haiku
    ],
)
def test_downgrades_step_down_the_tiers_past_each_threshold(
    used_bp: int, model: str, rule: str | None
) -> None:
    router = _router(DOWNGRADES, SOFT_BUDGET)
    caller = _caller("claude-opus-4-1", team="web")
    assert router.watched(caller, RouteFacts()) == ("web-monthly",)
    decision = router.route(
        "claude-opus-4-1", ANTHROPIC, caller, RouteFacts(), {"web-monthly": used_bp}
    )
    assert (decision.model, decision.rule) == (model, rule)
    assert decision.baseline == "claude-opus-4-1"


def test_shadow_rules_record_but_do_not_route() -> None:
    routing = {
        "rules": [
            {
                "name": "try-sonnet",
                "kind": "rewrite",
                "models": ["claude-opus-*"],
                "to": "claude-sonnet-4-6",
                "shadow": True,
            }
        ]
    }
    router = _router(routing)
    decision = router.route("claude-opus-4-1", ANTHROPIC, _caller("x"), RouteFacts(), {})
    assert (decision.model, decision.rule, decision.changed) == ("claude-opus-4-1", None, False)
    assert (decision.shadow_rule, decision.shadow_model) == ("try-sonnet", "claude-sonnet-4-6")
    untouched = router.route("claude-haiku-4-5", ANTHROPIC, _caller("x"), RouteFacts(), {})
    assert untouched.shadow_rule is None


def test_weighted_order_draws_the_first_and_keeps_the_rest_as_fallbacks() -> None:
    heavy = Deployment("a", "m", weight=3)
    light = Deployment("b", "m", weight=1)
    spare = Deployment("c", "m", weight=0)
    route = ModelRoute("m", OPENAI, (heavy, light, spare), None, None)
    assert route.ordered(0.0) == [heavy, light, spare]
    assert route.ordered(0.74) == [heavy, light, spare]
    assert route.ordered(0.75) == [light, heavy, spare]
    assert route.ordered(0.999) == [light, heavy, spare]
    # Over a uniform sweep of draws, the first choice follows the weights exactly.
    firsts = [route.ordered(i / 1000)[0] for i in range(1000)]
    assert (firsts.count(heavy), firsts.count(light), firsts.count(spare)) == (750, 250, 0)


def test_the_shadow_rule_named_is_the_shadow_rule_not_an_enforced_one() -> None:
    """A shadow rewrite and an enforced downgrade both act on the shadow track: the row
    must name the shadow rule (the enforced one is the decision's own rule)."""
    routing = {
        "tiers": {"claude-opus-4-1": "claude-sonnet-4-6", "claude-sonnet-4-6": "claude-haiku-4-5"},
        "rules": [
            {
                "name": "try-sonnet",
                "kind": "rewrite",
                "models": ["claude-opus-*"],
                "to": "claude-sonnet-4-6",
                "shadow": True,
            },
            {"name": "web-soft", "kind": "downgrade", "budget": "web-monthly"},
        ],
    }
    router = _router(routing, SOFT_BUDGET)
    caller = _caller("claude-opus-4-1", team="web")
    decision = router.route(
        "claude-opus-4-1", ANTHROPIC, caller, RouteFacts(), {"web-monthly": 9_000}
    )
    assert (decision.model, decision.rule) == ("claude-sonnet-4-6", "web-soft")
    assert (decision.shadow_rule, decision.shadow_model) == ("try-sonnet", "claude-haiku-4-5")
    quiet = router.route("claude-opus-4-1", ANTHROPIC, caller, RouteFacts(), {"web-monthly": 0})
    assert (quiet.model, quiet.shadow_rule, quiet.shadow_model) == (
        "claude-opus-4-1",
        "try-sonnet",
        "claude-sonnet-4-6",
    )


def test_a_rewrite_to_the_model_already_asked_for_chooses_nothing() -> None:
    routing = {
        "rules": [
            {"name": "mini", "kind": "rewrite", "models": ["gpt-4o*"], "to": "gpt-4o-mini"},
        ]
    }
    router = _router(routing)
    same = router.route("gpt-4o-mini", OPENAI, _caller("x"), RouteFacts(), {})
    assert (same.model, same.rule, same.kind) == ("gpt-4o-mini", None, None)
    moved = router.route("gpt-4o", OPENAI, _caller("x"), RouteFacts(), {})
    assert (moved.model, moved.rule) == ("gpt-4o-mini", "mini")


def test_a_downgraded_request_no_longer_claims_premium() -> None:
    routing = {**DOWNGRADES, "premium": {"models": ["claude-opus-*"], "users": ["bob"]}}
    routing["rules"] = [
        *DOWNGRADES["rules"],
        {
            "name": "no-opus",
            "kind": "rewrite",
            "models": ["claude-opus-*"],
            "to": "claude-sonnet-4-6",
        },
    ]
    router = _router(routing, SOFT_BUDGET)
    bob = _caller("claude-opus-4-1", team="web", user="bob")
    kept = router.route("claude-opus-4-1", ANTHROPIC, bob, RouteFacts(), {"web-monthly": 0})
    assert (kept.model, kept.premium) == ("claude-opus-4-1", True)
    stepped = router.route("claude-opus-4-1", ANTHROPIC, bob, RouteFacts(), {"web-monthly": 8_000})
    assert (stepped.model, stepped.kind, stepped.premium) == (
        "claude-sonnet-4-6",
        RouteKind.DOWNGRADE,
        False,
    )


def test_a_rule_scoped_to_a_model_applies_to_the_model_reached_not_the_name_sent() -> None:
    """A downgrade rule of ``scope: model`` steps requests for that model down, whether
    they name it or reach it by an alias, as a ``scope: model`` budget counts the model
    that serves; ``watched`` reads its budget for an alias too. The rule was matched
    against the name sent: a request by alias was never stepped down, however full the
    budget (and the budget was not even read)."""
    routing = {
        "tiers": {"gpt-4o": "gpt-4o-mini"},
        "rules": [
            {"name": "smart", "kind": "alias", "alias": "smart", "to": "gpt-4o"},
            {
                "name": "4o-soft",
                "kind": "downgrade",
                "scope": "model",
                "match": "gpt-4o",
                "budget": "4o-monthly",
                "at": "0.8",
            },
        ],
    }
    budgets = [
        {"name": "4o-monthly", "scope": "model", "match": "gpt-4o", "limit_usd": "100"},
    ]
    router = _router(routing, budgets)
    full = {"4o-monthly": 9_000}
    for sent in ("gpt-4o", "smart"):
        caller = _caller(sent)
        assert router.watched(caller, RouteFacts()) == ("4o-monthly",)
        decision = router.route(sent, OPENAI, caller, RouteFacts(), full)
        assert (decision.model, decision.rule) == ("gpt-4o-mini", "4o-soft"), sent
        assert router.step_down(caller, "gpt-4o") == ("4o-soft", "gpt-4o-mini")
    mini = router.route("gpt-4o-mini", OPENAI, _caller("gpt-4o-mini"), RouteFacts(), full)
    assert mini.model == "gpt-4o-mini"
