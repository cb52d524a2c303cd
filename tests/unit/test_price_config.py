"""The price keys of the config and the catalog: ``service_tiers``, ``tool_fees`` and catalog
families; their validation (exact messages with key paths) and how they layer."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from spendgate.config import parse_config
from spendgate.config.schema import ServiceTiersConfig, ToolFeesConfig
from spendgate.domain.pricing import SERVICE_TIERS, TOOLS, Rates, ServiceTier, cost_of
from spendgate.domain.usage import Usage
from spendgate.errors import ConfigError
from spendgate.money import Nanos
from spendgate.pricing import build_price_book, load_builtin_catalog, parse_catalog

PROVIDERS = {
    "openai": {"kind": "openai", "base_url": "https://api.openai.com/v1"},
    "anthropic": {"kind": "anthropic", "base_url": "https://api.anthropic.com"},
}


def with_override(**block: Any) -> dict[str, Any]:
    price = {"input": "1", "output": "2", **block}
    return {"providers": PROVIDERS, "pricing": {"overrides": {"gpt-4o": price}}}


def book_of(**sections: Any) -> Any:
    return build_price_book(parse_config({"providers": PROVIDERS, **sections}, "spendgate.yaml"))


def test_the_config_names_every_tier_and_tool_the_domain_knows() -> None:
    assert set(ServiceTiersConfig.model_fields) == set(SERVICE_TIERS)
    assert set(ToolFeesConfig.model_fields) == set(TOOLS)


# ------------------------------------------------------------------ validation

AT = "spendgate.yaml: pricing.overrides.gpt-4o"


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            {"service_tiers": {"prority": "2"}},
            f"{AT}.service_tiers.prority: unknown key",
        ),
        (
            {"service_tiers": {"default": "1"}},
            f"{AT}.service_tiers.default: unknown key",
        ),
        (
            {"service_tiers": {"priority": "-2"}},
            f"{AT}.service_tiers.priority.multiplier: Input should be greater than 0",
        ),
        (
            {"service_tiers": {"flex": "0"}},
            f"{AT}.service_tiers.flex.multiplier: Input should be greater than 0",
        ),
        (
            {"service_tiers": {"priority": "twice"}},
            f"{AT}.service_tiers.priority.multiplier: Input should be a valid decimal",
        ),
        (
            {"service_tiers": {"priority": {"multipler": "2"}}},
            f"{AT}.service_tiers.priority.multipler: unknown key",
        ),
        (
            {"service_tiers": {"priority": {"input": "1"}}},
            f'{AT}.service_tiers.priority: give a multiplier (e.g. "2") or rates of its own '
            "with input and output",
        ),
        (
            {"service_tiers": {"priority": {"multiplier": "2", "output": "1"}}},
            f"{AT}.service_tiers.priority: give a multiplier or rates of its own, not both",
        ),
        (
            {"service_tiers": {"fast": {"input": "1", "output": "-1"}}},
            f"{AT}.service_tiers.fast: output must not be negative",
        ),
        (
            {
                "service_tiers": {
                    "fast": {
                        "input": "1",
                        "output": "1",
                        "tiers": [{"above_input_tokens": 5, "rates": {"input": "1"}}],
                    }
                }
            },
            f"{AT}.service_tiers.fast.tiers[0].rates.output: Field required",
        ),
        (
            {"tool_fees": {"web_serch": "0.01"}},
            f"{AT}.tool_fees.web_serch: unknown key",
        ),
        (
            {"tool_fees": {"web_search": "-0.01"}},
            f"{AT}.tool_fees.web_search: Input should be greater than or equal to 0",
        ),
        (
            {"tool_fees": {"file_search": "a penny"}},
            f"{AT}.tool_fees.file_search: Input should be a valid decimal",
        ),
    ],
)
def test_bad_price_keys_name_the_key_path(block: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(with_override(**block), "spendgate.yaml")
    assert str(caught.value) == message


def test_a_free_price_takes_no_tiers_or_fees() -> None:
    data = {
        "providers": PROVIDERS,
        "models": {
            "m": {"provider": "openai", "price": {"free": True, "tool_fees": {"web_search": 1}}}
        },
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "spendgate.yaml")
    assert str(caught.value) == (
        "spendgate.yaml: models.m.price: a free price takes no service_tiers or tool_fees"
    )


# ------------------------------------------------------------------ config → Price


def test_multipliers_are_exact_and_fees_are_dollars_per_call() -> None:
    book = book_of(
        pricing={
            "builtin_catalog": False,
            "overrides": {
                "x": {
                    "input": "1",
                    "output": "2",
                    "service_tiers": {"priority": "1.8", "flex": 0.5, "batch": {"multiplier": 2}},
                    "tool_fees": {"web_search": "0.01", "file_search": "0.0025"},
                }
            },
        }
    )
    price = book.get("x")
    assert price is not None
    assert price.service_tiers["priority"] == ServiceTier(multiplier=Fraction(9, 5))
    assert price.service_tiers["flex"].multiplier == Fraction(1, 2)
    assert price.service_tiers["batch"].multiplier == 2
    assert price.tool_fees == {"web_search": 10_000_000, "file_search": 2_500_000}
    usage = Usage(input_tokens=1_000_000, service_tier="priority", tool_calls=(("web_search", 1),))
    assert cost_of(usage, price) == 1_800_000_000 + 10_000_000


def test_a_tier_with_rates_of_its_own() -> None:
    fast = {
        "input": "30",
        "output": "150",
        "tiers": [{"above_input_tokens": 200_000, "rates": {"input": "60", "output": "225"}}],
    }
    book = book_of(
        pricing={
            "builtin_catalog": False,
            "overrides": {"x": {"input": "5", "output": "25", "service_tiers": {"fast": fast}}},
        }
    )
    price = book.get("x")
    assert price is not None
    assert price.rates_for(1, "fast") == Rates(input=Nanos(30 * 10**9), output=Nanos(150 * 10**9))
    assert price.rates_for(200_001, "fast").output == 225 * 10**9


# ------------------------------------------------------------------ layering


def test_an_override_keeps_the_catalog_tiers_and_fees_it_does_not_name() -> None:
    catalog = load_builtin_catalog().get("gpt-5.5")
    assert catalog is not None
    book = book_of(
        pricing={
            "overrides": {
                "gpt-5.5": {
                    "input": "4",
                    "output": "24",
                    "service_tiers": {"flex": "0.6"},
                    "tool_fees": {"web_search": "0.02"},
                }
            }
        }
    )
    price = book.get("gpt-5.5")
    assert price is not None
    assert price.source == "override"
    # The catalog's priority multiplier now applies to the negotiated rates.
    assert price.service_tiers["priority"] == catalog.service_tiers["priority"]
    assert price.rates_for(0, "priority").input == 10 * 10**9
    assert price.service_tiers["flex"].multiplier == Fraction(3, 5)
    assert price.tool_fees["web_search"] == 20_000_000
    assert price.tool_fees["file_search"] == catalog.tool_fees["file_search"]


def test_null_removes_a_tier_from_the_layer_below() -> None:
    book = book_of(
        pricing={
            "overrides": {
                "gpt-5.4": {"input": "1", "output": "2", "service_tiers": {"priority": None}}
            }
        }
    )
    price = book.get("gpt-5.4")
    assert price is not None
    assert "priority" not in price.service_tiers
    assert "flex" in price.service_tiers
    assert price.rates_for(0, "priority") == price.rates


def test_a_models_own_price_layers_over_its_upstream_name() -> None:
    book = book_of(
        models={
            "smart": {
                "provider": "anthropic",
                "upstream_model": "claude-opus-5-5",
                "price": {"input": "3", "output": "15"},
            }
        }
    )
    price = book.get("smart")
    assert price is not None
    assert price.rates.input == 3 * 10**9
    assert price.service_tiers["fast"].multiplier == 2
    assert price.tool_fees["web_search"] == 10_000_000


def test_a_free_override_has_no_fees() -> None:
    book = book_of(pricing={"overrides": {"gpt-4o": {"free": True}}})
    price = book.get("gpt-4o")
    assert price is not None
    assert price.free
    assert price.tool_fees == {}
    assert price.service_tiers == {}


def test_a_litellm_price_keeps_the_catalog_tiers_and_fees_it_lacks(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    entry = {
        "input_cost_per_token": 3e-06,
        "output_cost_per_token": 2e-05,
        "input_cost_per_token_flex": 1e-06,
        "output_cost_per_token_flex": 1e-05,
    }
    path.write_text(json.dumps({"gpt-5.4": entry}), encoding="utf-8")
    book = book_of(pricing={"litellm_files": [str(path)]})
    price = book.get("gpt-5.4")
    assert price is not None
    assert price.rates.input == 3_000 * 10**6
    assert price.service_tiers["flex"].rates == Rates(input=Nanos(10**9), output=Nanos(10**10))
    assert price.service_tiers["priority"].multiplier == 2  # from the catalog
    assert price.tool_fees["file_search"] == 2_500_000  # from the catalog


# ------------------------------------------------------------------ catalog families


def catalog(**extra: Any) -> dict[str, Any]:
    return {
        "as_of": "2026-01-01",
        "families": {
            "p": {
                "service_tiers": {"batch": "0.5", "priority": "2"},
                "tool_fees": {"web_search": "0.01"},
            }
        },
        "models": {"m": {"input": "1", "output": "2", "family": "p", **extra}},
    }


def test_an_entry_starts_from_its_family() -> None:
    price = parse_catalog(catalog(), "c.yaml").get("m")
    assert price is not None
    assert set(price.service_tiers) == {"batch", "priority"}
    assert price.tool_fees == {"web_search": 10_000_000}


def test_an_entry_layers_its_own_tiers_and_fees_over_its_familys() -> None:
    extra = {
        "service_tiers": {"priority": "2.5", "batch": None},
        "tool_fees": {"web_search": "0", "file_search": "0.0025"},
    }
    price = parse_catalog(catalog(**extra), "c.yaml").get("m")
    assert price is not None
    assert price.service_tiers == {"priority": ServiceTier(multiplier=Fraction(5, 2))}
    assert price.tool_fees == {"web_search": 0, "file_search": 2_500_000}


@pytest.mark.parametrize(
    ("document", "key", "problem"),
    [
        (catalog(family="q"), "models.m.family", "unknown family 'q' (declared: p)"),
        (catalog(as_of="Dec 2026"), "models.m.as_of", "String should match pattern"),
        (
            {**catalog(), "families": {"p": {"service_tiers": {"fastest": "2"}}}},
            "families.p.service_tiers.fastest",
            "unknown key",
        ),
        (
            {**catalog(), "families": {"p": {"tool_fees": {"web_search": "-1"}}}},
            "families.p.tool_fees.web_search",
            "Input should be greater than or equal to 0",
        ),
    ],
)
def test_catalog_family_errors_name_the_key(document: Any, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_catalog(document, "c.yaml")
    assert (caught.value.path, caught.value.key) == ("c.yaml", key)
    assert caught.value.problem.startswith(problem)


# ------------------------------------------------------------------ limits are the model's


def test_a_price_without_limits_keeps_the_models_limits() -> None:
    """A negotiated price (override, or a model's own price over its upstream name) that
    states no limits keeps the catalog's: the model's maximum output bounds reservations
    whatever the price is."""
    book = book_of(
        pricing={"overrides": {"claude-opus-4-5": {"input": "4", "output": "20"}}},
        models={
            "smart": {
                "provider": "anthropic",
                "upstream_model": "claude-haiku-4-5",
                "price": {"input": "3", "output": "15"},
            },
            "capped": {
                "provider": "anthropic",
                "upstream_model": "claude-opus-5-5",
                "price": {"input": "3", "output": "15", "max_output_tokens": 64000},
            },
        },
    )
    catalog = load_builtin_catalog()
    for name, upstream in (("claude-opus-4-5", "claude-opus-4-5"), ("smart", "claude-haiku-4-5")):
        price, listed = book.get(name), catalog.get(upstream)
        assert price is not None
        assert listed is not None
        assert price.rates.input in (3 * 10**9, 4 * 10**9)  # the layer's own rates
        assert (price.max_input_tokens, price.max_output_tokens) == (
            listed.max_input_tokens,
            listed.max_output_tokens,
        )
        assert listed.max_output_tokens == 64_000
    capped = book.get("capped")
    assert capped is not None
    assert (capped.max_input_tokens, capped.max_output_tokens) == (1_000_000, 64_000)


def test_a_litellm_price_without_limits_keeps_the_catalogs(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    entry = {"input_cost_per_token": 3e-06, "output_cost_per_token": 2e-05}
    path.write_text(json.dumps({"claude-haiku-4-5": entry}), encoding="utf-8")
    price = book_of(pricing={"litellm_files": [str(path)]}).get("claude-haiku-4-5")
    assert price is not None
    assert price.rates.input == 3_000 * 10**6
    assert (price.max_input_tokens, price.max_output_tokens) == (200_000, 64_000)


def test_an_override_keeps_the_catalogs_audio_rate_unless_it_states_one() -> None:
    kept = book_of(pricing={"overrides": {"gemini-2.5-flash": {"input": "0.2", "output": "2"}}})
    price = kept.get("gemini-2.5-flash")
    assert price is not None
    assert (price.rates.input, price.rates.audio_input) == (200_000_000, 1_000_000_000)
    flex = price.rates_for(1_000, "flex")
    assert flex.audio_input == 500_000_000  # the catalog's Flex card, kept whole
    stated = {"input": "0.2", "output": "2", "audio_input": "0.7"}
    own = book_of(pricing={"overrides": {"gemini-2.5-flash": stated}}).get("gemini-2.5-flash")
    assert own is not None
    assert own.rates.audio_input == 700_000_000
    usage = Usage(input_tokens=1_000_000, audio_input_tokens=1_000_000)
    assert cost_of(usage, own) == 700_000_000
