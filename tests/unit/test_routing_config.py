"""Bad routing, fallback and budget-share configs are refused at load, each with one message
that names the file, the key path and the rule or model it is about."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from spendgate.config import load_config, parse_config
from spendgate.errors import ConfigError
from spendgate.gateway import build_gateway

SOURCE = "spendgate.yaml"

BASE: dict[str, Any] = {
    "providers": {
        "openai": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
        "anthropic": {"kind": "anthropic", "base_url": "http://127.0.0.1:9"},
    },
    "models": {
        "gpt-4o": {"provider": "openai"},
        "gpt-4o-mini": {"provider": "openai"},
        "claude-opus-4-1": {"provider": "anthropic"},
        "claude-sonnet-4-6": {"provider": "anthropic"},
        "claude-haiku-4-5": {"provider": "anthropic"},
    },
    "orgs": {"acme": {"teams": ["ml", "web"]}},
    "budgets": [{"name": "ml-monthly", "scope": "team", "match": "ml", "limit_usd": "100"}],
    "routing": {
        "tiers": {"claude-opus-4-1": "claude-sonnet-4-6", "claude-sonnet-4-6": "claude-haiku-4-5"},
        "rules": [
            {"name": "default-all", "kind": "alias", "alias": "default", "to": "gpt-4o-mini"},
        ],
    },
}

Edit = Callable[[dict[str, Any]], None]


def rule(**fields: Any) -> Edit:
    """An edit that appends a rule (as routing.rules[1])."""

    def edit(data: dict[str, Any]) -> None:
        data["routing"]["rules"].append(fields)

    return edit


def model(name: str, **fields: Any) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        data["models"][name] = fields

    return edit


def routing(key: str, value: Any) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        data["routing"][key] = value

    return edit


def budget(**fields: Any) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        data["budgets"].append(fields)

    return edit


def edited(edit: Edit) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    edit(data)
    return data


# (case id, edit, key path, every fragment the problem must contain)
CASES: list[tuple[str, Edit, str, list[str]]] = [
    (
        "rewrite to an unknown model",
        rule(name="web-gpt5", kind="rewrite", models=["gpt-4o"], to="gpt-5"),
        "routing.rules[1]",
        ["rule 'web-gpt5'", "model 'gpt-5'", "not declared under models"],
    ),
    (
        "alias to an unknown model",
        rule(name="fast", kind="alias", alias="fast", to="gpt-9-turbo"),
        "routing.rules[1]",
        ["rule 'fast'", "model 'gpt-9-turbo'", "not declared under models"],
    ),
    (
        "downgrade watching an unknown budget",
        rule(name="soft", kind="downgrade", budget="web-monthly"),
        "routing.rules[1]",
        ["rule 'soft'", "budget 'web-monthly'", "not a declared budget"],
    ),
    (
        "rewrite across dialects",
        rule(name="opus-to-mini", kind="rewrite", models=["claude-opus-*"], to="gpt-4o-mini"),
        "routing.rules[1]",
        ["rule 'opus-to-mini'", "'claude-opus-4-1' (anthropic API)", "'gpt-4o-mini' (openai API)"],
    ),
    (
        "rewrite matching no declared model",
        rule(name="no-gemini", kind="rewrite", models=["gemini-*"], to="gpt-4o-mini"),
        "routing.rules[1]",
        ["rule 'no-gemini'", "match no declared model"],
    ),
    (
        "duplicate rule names",
        rule(name="default-all", kind="alias", alias="smart", to="gpt-4o"),
        "routing.rules[1]",
        ["rule 'default-all'", "same name as routing.rules[0]"],
    ),
    (
        "tier cycle",
        routing(
            "tiers",
            {"claude-opus-4-1": "claude-sonnet-4-6", "claude-sonnet-4-6": "claude-opus-4-1"},
        ),
        "routing.tiers.claude-opus-4-1",
        ["loop back to 'claude-opus-4-1'"],
    ),
    (
        "tier to an unknown model",
        routing("tiers", {"gpt-4o": "gpt-4o-nano"}),
        "routing.tiers.gpt-4o",
        ["model 'gpt-4o-nano'", "not declared under models"],
    ),
    (
        "tier across dialects",
        routing("tiers", {"claude-haiku-4-5": "gpt-4o-mini"}),
        "routing.tiers.claude-haiku-4-5",
        ["'claude-haiku-4-5' (anthropic API)", "'gpt-4o-mini' (openai API)"],
    ),
    (
        "downgrade without tiers",
        lambda data: (
            routing("tiers", {})(data),
            rule(name="soft", kind="downgrade", budget="ml-monthly")(data),
        ),
        "routing.rules[1]",
        ["rule 'soft'", "no tiers are declared"],
    ),
    (
        "unknown premium allowance budget",
        routing("premium", {"models": ["gpt-4o"], "allowance_budget": "web-premium"}),
        "routing.premium.allowance_budget",
        ["'web-premium'", "not a declared budget"],
    ),
    (
        "fallback to an unknown model",
        model("gpt-4o", provider="openai", fallbacks=["gpt-4.1"]),
        "models.gpt-4o.fallbacks[0]",
        ["model 'gpt-4.1'", "not declared under models"],
    ),
    (
        "fallback to the other dialect",
        model("gpt-4o", provider="openai", fallbacks=["gpt-4o-mini", "claude-haiku-4-5"]),
        "models.gpt-4o.fallbacks[1]",
        ["'gpt-4o' (openai API)", "'claude-haiku-4-5' (anthropic API)"],
    ),
    (
        "fallback to itself",
        model("gpt-4o", provider="openai", fallbacks=["gpt-4o"]),
        "models.gpt-4o.fallbacks[0]",
        ["cannot fall back to itself"],
    ),
    (
        "every deployment weight 0",
        model("gpt-4o", deployments=[{"provider": "openai", "weight": 0}]),
        "models.gpt-4o.deployments",
        ["every weight is 0"],
    ),
    (
        "alias rule without to",
        rule(name="web-default", kind="alias", scope="team", match="web", alias="default"),
        "routing.rules[1]",
        ["an alias rule needs alias", "and to"],
    ),
    (
        "downgrade rule with a to",
        rule(name="soft", kind="downgrade", budget="ml-monthly", to="claude-haiku-4-5"),
        "routing.rules[1]",
        ["a downgrade rule follows routing.tiers"],
    ),
    (
        "share of an unknown budget",
        budget(name="ml-premium", scope="team", match="ml", share_of="ml-yearly", share="0.2"),
        "budgets[1]",
        ["budget 'ml-premium'", "share of 'ml-yearly'", "not a declared budget"],
    ),
    (
        "share of a share",
        lambda data: (
            budget(name="a", scope="team", match="ml", share_of="ml-monthly", share="0.5")(data),
            budget(name="b", scope="team", match="ml", share_of="a", share="0.5")(data),
        ),
        "budgets[2]",
        ["budget 'b'", "itself a share"],
    ),
    (
        "share without its fraction",
        budget(name="ml-premium", scope="team", match="ml", share_of="ml-monthly"),
        "budgets[1]",
        ["share_of and share go together"],
    ),
]


CASES += [
    (
        "downgrade rule matching no declared model",
        rule(name="soft", kind="downgrade", budget="ml-monthly", models=["gemini-*"]),
        "routing.rules[1]",
        ["rule 'soft'", "match no declared model"],
    ),
    (
        "premium models matching nothing",
        routing("premium", {"models": ["gemini-*"]}),
        "routing.premium.models",
        ["match no declared model"],
    ),
    (
        "the same alias twice for the same callers",
        rule(name="default-again", kind="alias", alias="default", to="gpt-4o"),
        "routing.rules[1]",
        ["rule 'default-again'", "alias 'default'", "routing.rules[0]", "never apply"],
    ),
]


def test_the_base_config_is_valid() -> None:
    config = parse_config(copy.deepcopy(BASE), SOURCE)
    assert [r.name for r in config.routing.rules] == ["default-all"]


@pytest.mark.parametrize(
    ("edit", "key", "fragments"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_bad_config_is_refused_naming_the_key(edit: Edit, key: str, fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(edited(edit), SOURCE)
    error = info.value
    assert (error.path, error.key) == (SOURCE, key), str(error)
    assert str(error).startswith(f"{SOURCE}: {key}: "), str(error)
    for fragment in fragments:
        assert fragment in error.problem, str(error)


def test_load_config_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "spendgate.yaml"
    data = edited(rule(name="web-gpt5", kind="rewrite", models=["gpt-4o"], to="gpt-5"))
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "routing.rules[1]"
    assert str(info.value).startswith(f"{path}: routing.rules[1]: rule 'web-gpt5' ")


def test_a_malformed_rule_is_named_too() -> None:
    data = edited(rule(name="web-default", kind="alias", scope="team", alias="default"))
    with pytest.raises(ConfigError) as info:
        parse_config(data, SOURCE)
    assert info.value.key == "routing.rules[1]"
    assert "'web-default'" in info.value.problem


# Checks that need the price book: at gateway build (serve, reload) and in check-config.


def _built(data: dict[str, Any], tmp_path: Path) -> None:
    data = {**data, "storage": {"url": f"sqlite:///{tmp_path / 'db.sqlite'}"}}
    build_gateway(parse_config(data, SOURCE), source=SOURCE, env={}, require_secrets=False)


@pytest.mark.parametrize(
    ("edit", "key", "fragments"),
    [
        (
            lambda d: (
                model("house", provider="openai")(d),
                rule(name="to-house", kind="rewrite", models=["gpt-4o"], to="house")(d),
            ),
            "routing.rules[1]",
            ["rule 'to-house'", "model 'house'", "has no price"],
        ),
        (
            routing("tiers", {"claude-haiku-4-5": "claude-opus-4-1"}),
            "routing.tiers.claude-haiku-4-5",
            ["'claude-opus-4-1'", "not cheaper"],
        ),
        (
            lambda d: (
                model("house", provider="openai")(d),
                model("gpt-4o", provider="openai", fallbacks=["house"])(d),
            ),
            "models.gpt-4o.fallbacks[0]",
            ["'house'", "has no price"],
        ),
    ],
    ids=["rule to an unpriced model", "tier step to a dearer model", "unpriced fallback"],
)
def test_routing_targets_must_be_priced_and_tiers_cheaper(
    edit: Edit, key: str, fragments: list[str], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as info:
        _built(edited(edit), tmp_path)
    assert info.value.key == key
    for fragment in fragments:
        assert fragment in info.value.problem
    assert str(info.value).startswith(f"{SOURCE}: {key}: ")
