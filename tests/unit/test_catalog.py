"""The shipped catalog, and how `build_price_book` layers every price source."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from spendgate.config import parse_config
from spendgate.config.schema import Config
from spendgate.domain.pricing import cost_of
from spendgate.domain.usage import Usage
from spendgate.errors import ConfigError
from spendgate.money import dollars_to_nanos
from spendgate.pricing import build_price_book, load_builtin_catalog, parse_catalog

REQUIRED = [
    *("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3", "o4-mini"),
    *("gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-5-codex", "gpt-5.1"),
    *("text-embedding-3-small", "text-embedding-3-large"),
    *("claude-opus-4-1", "claude-opus-4-5", "claude-sonnet-4-5", "claude-sonnet-4-6"),
    *("claude-haiku-4-5", "claude-3-5-haiku"),
    *("gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite"),
    # The current generations (research notes of 2026-12-06).
    *("gpt-6.1-sol", "gpt-6.1-terra", "gpt-6-sol", "gpt-6-luna", "gpt-6-astra"),
    *("gpt-5.6", "gpt-5.6-sol", "gpt-5.6-terra", "gpt-5.6-luna", "gpt-5.5", "gpt-5.5-pro"),
    *("gpt-5.4", "gpt-5.4-mini", "gpt-5.4-nano", "gpt-5.4-pro", "gpt-5.3-codex", "gpt-5.2"),
    *("claude-opus-5-5", "claude-opus-5", "claude-sonnet-5-5", "claude-sonnet-5"),
    *("claude-haiku-5-5", "claude-opus-4-8", "claude-opus-4-7", "claude-opus-4-6"),
    *("gemini-3.1-pro-preview", "gemini-3.8-flash", "gemini-3.7-flash", "gemini-3.6-flash"),
    *("gemini-3.5-flash", "gemini-3.5-flash-lite", "gemini-3.1-flash-lite"),
    "gemini-3-flash-preview",
]

# (model, max input tokens, max output tokens), as the research notes give them.
LIMITS = [
    *((m, 922_000, 128_000) for m in ("gpt-6.1-sol", "gpt-6-sol", "gpt-6-astra", "gpt-5.6")),
    *((m, 1_050_000, 128_000) for m in ("gpt-5.5", "gpt-5.4", "gpt-5.4-pro")),
    ("gpt-5.4-mini", 272_000, 128_000),
    ("gpt-5-chat-latest", 128_000, 16_384),
    ("gpt-5-pro", 400_000, 272_000),
    *((m, 1_000_000, 128_000) for m in ("claude-opus-5-5", "claude-haiku-5-5", "claude-opus-4-6")),
    ("claude-sonnet-4-6", 1_000_000, 128_000),
    ("claude-haiku-4-5", 200_000, 64_000),
    ("gemini-3.1-pro-preview", 1_048_576, 65_536),
]


def catalog_document() -> Any:
    text = resources.files("spendgate.pricing").joinpath("catalog.yaml").read_text("utf-8")
    return yaml.safe_load(text)


# ------------------------------------------------------------------ the shipped catalog


def test_catalog_is_dated_and_names_its_sources() -> None:
    document = catalog_document()
    assert document["as_of"] == "2026-12-06"
    assert any("verify" in source.lower() for source in document["sources"])
    assert load_builtin_catalog().as_of == "2026-12-06"


def test_no_entry_is_dated_after_the_catalog() -> None:
    document = catalog_document()
    dated = [*document["models"].values(), *document["families"].values()]
    assert all(entry.get("as_of", document["as_of"]) <= document["as_of"] for entry in dated)


def test_every_model_names_its_family_and_bounds_its_output() -> None:
    document = catalog_document()
    for name, entry in document["models"].items():
        assert entry.get("family") in document["families"], name
        if entry["family"] == "openai-embedding":
            assert entry["output"] == "0", name
        else:
            assert entry.get("max_output_tokens"), f"{name} has no max_output_tokens"
    for name, price in load_builtin_catalog().prices.items():
        assert price.max_input_tokens, name
        assert price.rates.output == 0 or price.max_output_tokens, name


@pytest.mark.parametrize(("model", "max_input", "max_output"), LIMITS)
def test_model_limits(model: str, max_input: int, max_output: int) -> None:
    price = load_builtin_catalog().get(model)
    assert price is not None
    assert (price.max_input_tokens, price.max_output_tokens) == (max_input, max_output)


@pytest.mark.parametrize("model", REQUIRED)
def test_required_models_are_priced_with_limits(model: str) -> None:
    price = load_builtin_catalog().get(model)
    assert price is not None
    assert price.rates.input > 0
    assert price.max_input_tokens is not None
    assert price.source == "catalog"


def test_exact_catalog_values() -> None:
    book = load_builtin_catalog()
    mini = book.get("gpt-4o-mini")
    assert mini is not None
    assert (mini.rates.input, mini.rates.cached_input, mini.rates.output) == (
        150_000_000,
        75_000_000,
        600_000_000,
    )
    assert (mini.max_input_tokens, mini.max_output_tokens) == (128_000, 16_384)
    opus = book.get("claude-opus-4-1")
    assert opus is not None
    assert opus.rates.cache_write == 18_750_000_000
    assert opus.rates.cache_write_1h == 30_000_000_000
    nano = book.get("gpt-5-nano")
    assert nano is not None
    assert nano.rates.cached_input == 5_000_000


@pytest.mark.parametrize(
    ("model", "threshold", "input_rate", "output_rate"),
    [
        ("claude-sonnet-4-5", 200_000, 6_000_000_000, 22_500_000_000),
        ("gemini-2.5-pro", 200_000, 2_500_000_000, 15_000_000_000),
        ("gemini-3.1-pro-preview", 200_000, 4_000_000_000, 18_000_000_000),
        ("claude-haiku-5-5", 100_000, 500_000_000, 2_500_000_000),
        ("gpt-5.4", 272_000, 5_000_000_000, 22_500_000_000),
        ("gpt-5.5", 272_000, 10_000_000_000, 45_000_000_000),
        ("gpt-5.6-sol", 272_000, 8_000_000_000, 30_000_000_000),
        ("gpt-6.1-sol", 272_000, 4_000_000_000, 15_000_000_000),
        ("gpt-6-luna", 272_000, 200_000_000, 750_000_000),
    ],
)
def test_long_context_tiers(model: str, threshold: int, input_rate: int, output_rate: int) -> None:
    price = load_builtin_catalog().get(model)
    assert price is not None
    above = price.rates_for(threshold + 1)
    assert (above.input, above.output) == (input_rate, output_rate)
    assert price.rates_for(threshold) == price.rates


@pytest.mark.parametrize("model", ["claude-sonnet-4-6", "claude-opus-4-6", "claude-opus-5-5"])
def test_newer_claude_models_price_the_whole_window_at_standard_rates(model: str) -> None:
    price = load_builtin_catalog().get(model)
    assert price is not None
    assert price.rates_for(999_999) == price.rates


# (model, tier, input, cached input, output) in dollars per 1M tokens, below long context.
TIER_RATES = [
    ("gpt-6.1-sol", "priority", "4", "0.2", "20"),
    ("gpt-6.1-sol", "flex", "1", "0.05", "5"),
    ("gpt-6.1-sol", "batch", "1", "0.05", "5"),
    ("gpt-6.1-sol", "ultrafast", "12", "0.6", "60"),
    ("gpt-5.5", "priority", "12.5", "1.25", "75"),
    ("gpt-5.4", "flex", "1.25", "0.125", "7.5"),
    ("gpt-5-mini", "priority", "0.45", "0.045", "3.6"),
    ("gpt-5-nano", "priority", "0.05", "0.005", "0.4"),  # no Priority: standard
    ("gpt-4o", "priority", "4.25", "2.125", "17"),
    ("gpt-4o-mini", "priority", "0.25", "0.125", "1"),
    ("gpt-4.1", "flex", "2", "0.5", "8"),  # no Flex: standard
    ("o4-mini", "priority", "2", "0.5", "8"),
    ("o3", "priority", "3.5", "0.875", "14"),
    ("claude-opus-5-5", "fast", "8", "0.4", "40"),
    ("claude-opus-5-5", "batch", "2", "0.1", "10"),
    ("claude-opus-4-6", "fast", "30", "3", "150"),
    ("claude-opus-4-8", "fast", "5", "0.5", "25"),  # fast mode removed 2026-11-30
    ("claude-haiku-5-5", "batch", "0.05", "0.005", "0.25"),
    ("gemini-3.8-flash", "priority", "1.35", "0.135", "6.75"),
    ("gemini-3.1-pro-preview", "flex", "1", "0.2", "6"),
]


@pytest.mark.parametrize(("model", "tier", "input_rate", "cached", "output_rate"), TIER_RATES)
def test_service_tier_rates(
    model: str, tier: str, input_rate: str, cached: str, output_rate: str
) -> None:
    price = load_builtin_catalog().get(model)
    assert price is not None
    rates = price.rates_for(1_000, tier).full()
    expected = tuple(dollars_to_nanos(v) for v in (input_rate, cached, output_rate))
    assert (rates.input, rates.cached_input, rates.output) == expected


def test_openai_cache_writes_cost_more_than_input_from_gpt_5_6_on() -> None:
    """OpenAI's prompt-caching guide: "For GPT-5.6 models and later model families, cache
    writes cost 1.25x the uncached input token rate". A catalog entry without a
    ``cache_write`` bills its writes at the input rate: gpt-6-astra-law's were 80% of the
    bill, and its worst case reserved them at that."""
    book = load_builtin_catalog()
    newer = [
        name
        for name, price in book.prices.items()
        if re.match(r"gpt-(5\.(6|7|8|9)|[6-9])", name) and not price.free
    ]
    assert "gpt-6-astra-law" in newer
    for name in newer:
        rates = book.prices[name].rates
        assert rates.cache_write == -(-rates.input * 5 // 4), name


def test_tiers_combine_with_long_context() -> None:
    book = load_builtin_catalog()
    gpt = book.get("gpt-5.4")
    assert gpt is not None
    usage = Usage(input_tokens=300_000, output_tokens=1_000, service_tier="priority")
    assert cost_of(usage, gpt) == 300_000 * 10_000 + 1_000 * 45_000
    batch = Usage(input_tokens=300_000, output_tokens=1_000, service_tier="batch")
    assert cost_of(batch, gpt) == 300_000 * 2_500 + 1_000 * 11_250
    opus = book.get("claude-opus-4-6")
    assert opus is not None
    fast = Usage(input_tokens=250_000, output_tokens=1_000, service_tier="fast")
    assert cost_of(fast, opus) == 250_000 * 60_000 + 1_000 * 225_000
    haiku = book.get("claude-haiku-5-5")
    assert haiku is not None
    long_batch = Usage(input_tokens=150_000, output_tokens=1_000, service_tier="batch")
    assert cost_of(long_batch, haiku) == 150_000 * 250 + 1_000 * 1_250


@pytest.mark.parametrize(
    ("model", "tool", "dollars"),
    [
        ("claude-sonnet-5-5", "web_search", "0.01"),
        ("claude-sonnet-5-5", "web_fetch", "0"),
        ("gpt-6.1-sol", "web_search", "0.01"),
        ("gpt-5", "web_search_preview", "0.01"),
        ("gpt-4o", "web_search_preview", "0.025"),
        ("gpt-4.1-mini", "web_search", "0.01"),
        ("gpt-5.4", "file_search", "0.0025"),
        ("gemini-3.8-flash", "web_search", "0"),
        ("text-embedding-3-small", "web_search", "0"),
    ],
)
def test_tool_fees(model: str, tool: str, dollars: str) -> None:
    price = load_builtin_catalog().get(model)
    assert price is not None
    assert price.tool_fee(tool) == dollars_to_nanos(dollars)


def test_a_search_is_billed_on_top_of_tokens() -> None:
    price = load_builtin_catalog().get("claude-opus-5-5")
    assert price is not None
    usage = Usage(input_tokens=10_000, output_tokens=500, tool_calls=(("web_search", 3),))
    assert cost_of(usage, price) == 10_000 * 4_000 + 500 * 20_000 + 3 * 10_000_000


def test_aliases_share_the_price_under_their_own_name() -> None:
    book = load_builtin_catalog()
    dated = book.get("claude-sonnet-4-5-20250929")
    assert dated is not None
    assert dated.model == "claude-sonnet-4-5-20250929"
    base = book.get("claude-sonnet-4-5")
    assert base is not None
    assert dated.rates == base.rates
    assert dated.tiers == base.tiers


def test_catalog_numbers_are_strings_so_they_parse_exactly() -> None:
    def walk(node: object, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}")
        elif isinstance(node, float):
            raise AssertionError(f"{path} is a YAML float; write it as a string")

    walk(catalog_document()["models"], "models")


def test_catalog_has_no_duplicate_keys() -> None:
    class Strict(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        keys = [loader.construct_object(key) for key, _ in node.value]
        assert len(keys) == len(set(keys)), f"duplicate key near line {node.start_mark.line}"
        return loader.construct_mapping(node)

    Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    text = resources.files("spendgate.pricing").joinpath("catalog.yaml").read_text("utf-8")
    yaml.load(text, Loader=Strict)  # noqa: S506 - a SafeLoader subclass


def test_builtin_catalog_is_loaded_once_and_read_only() -> None:
    book = load_builtin_catalog()
    assert load_builtin_catalog() is book
    with pytest.raises(TypeError):
        book.prices["gpt-4o"] = book.prices["gpt-4o-mini"]  # type: ignore[index]


# ------------------------------------------------------------------ catalog validation


def minimal(**entry: Any) -> dict[str, Any]:
    return {"as_of": "2026-01-01", "models": {"m": {"input": "1", "output": "2", **entry}}}


@pytest.mark.parametrize(
    ("document", "key", "problem"),
    [
        (minimal(inptu="1"), "models.m.inptu", "unknown key"),
        ({"as_of": "2026-01-01", "models": {"m": {"input": "1"}}}, "models.m", "needs both"),
        (minimal(output="cheap"), "models.m.output", "decimal"),
        (minimal(max_output_tokens=0), "models.m.max_output_tokens", "greater than 0"),
        (minimal(input="-1"), "models.m", "input must not be negative"),
        (
            minimal(tiers=[{"above_input_tokens": 10, "rates": {"input": "1"}}]),
            "models.m.tiers[0].rates.output",
            "required",
        ),
        ({"as_of": "Nov 2026", "models": {}}, "as_of", "pattern"),
        ({"models": {}}, "as_of", "required"),
    ],
)
def test_catalog_errors_name_the_key(document: Any, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_catalog(document, "test.yaml")
    assert caught.value.path == "test.yaml"
    assert caught.value.key == key
    assert problem in caught.value.problem


def test_alias_collisions_are_refused() -> None:
    document = {
        "as_of": "2026-01-01",
        "models": {
            "a": {"input": "1", "output": "1", "aliases": ["b"]},
            "b": {"input": "2", "output": "2"},
        },
    }
    with pytest.raises(ConfigError, match="'b' is already a name of 'b'"):
        parse_catalog(document, "test.yaml")


def test_free_catalog_entry() -> None:
    book = parse_catalog({"as_of": "2026-01-01", "models": {"local": {"free": True}}}, "t")
    price = book.get("local")
    assert price is not None
    assert price.free
    assert cost_of(Usage(input_tokens=10, output_tokens=10), price) == 0


# ------------------------------------------------------------------ layering


def config(**sections: Any) -> Config:
    return Config.model_validate(
        {
            "providers": {
                "openai": {"kind": "openai", "base_url": "https://api.openai.com/v1"},
                "anthropic": {"kind": "anthropic", "base_url": "https://api.anthropic.com"},
            },
            **sections,
        }
    )


def litellm_file(directory: Path, entries: dict[str, Any], name: str = "prices.json") -> Path:
    path = directory / name
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def per_token(dollars_per_million: float) -> float:
    return dollars_per_million / 1_000_000


def test_defaults_give_the_builtin_catalog() -> None:
    book = build_price_book(config())
    assert book.get("gpt-4o") == load_builtin_catalog().get("gpt-4o")
    assert book.as_of == "2026-12-06"


def test_litellm_files_beat_the_catalog_and_overrides_beat_both(tmp_path: Path) -> None:
    file = litellm_file(
        tmp_path,
        {
            "gpt-4o": {"input_cost_per_token": 2e-06, "output_cost_per_token": 9e-06},
            "gpt-4o-mini": {"input_cost_per_token": 1e-07, "output_cost_per_token": 5e-07},
        },
    )
    cfg = config(
        pricing={
            "litellm_files": [str(file)],
            "overrides": {"gpt-4o": {"input": "1", "output": "2"}},
        }
    )
    book = build_price_book(cfg)
    gpt_4o, mini = book.get("gpt-4o"), book.get("gpt-4o-mini")
    assert gpt_4o is not None
    assert mini is not None
    assert (gpt_4o.rates.input, gpt_4o.source) == (1_000_000_000, "override")
    assert (mini.rates.input, mini.source) == (100_000_000, f"litellm:{file}")
    assert book.get("claude-haiku-4-5") == load_builtin_catalog().get("claude-haiku-4-5")


def test_a_models_own_price_beats_everything() -> None:
    cfg = config(
        models={"gpt-4o": {"provider": "openai", "price": {"input": "0.5", "output": "0.5"}}},
        pricing={"overrides": {"gpt-4o": {"input": "1", "output": "2"}}},
    )
    price = build_price_book(cfg).get("gpt-4o")
    assert price is not None
    assert (price.rates.input, price.source) == (500_000_000, "model")


def test_free_model_costs_nothing() -> None:
    cfg = config(models={"local": {"provider": "openai", "price": {"free": True}}})
    price = build_price_book(cfg).get("local")
    assert price is not None
    assert price.free
    assert cost_of(Usage(input_tokens=5_000, output_tokens=5_000), price) == 0


def test_gateway_name_first_then_upstream_name() -> None:
    cfg = config(
        models={
            "fast": {"provider": "openai", "upstream_model": "gpt-4o-mini"},
            "gpt-4o": {"provider": "openai", "upstream_model": "gpt-4o-2024-08-06"},
            "smart": {
                "deployments": [
                    {"provider": "anthropic", "model": "claude-sonnet-4-5-20250929"},
                    {"provider": "anthropic", "model": "claude-opus-4-1"},
                ]
            },
        }
    )
    book = build_price_book(cfg)
    fast, smart = book.get("fast"), book.get("smart")
    assert fast is not None
    assert smart is not None
    assert (fast.model, fast.rates.input) == ("fast", 150_000_000)
    assert (smart.model, smart.rates.input) == ("smart", 3_000_000_000)
    assert book.get("gpt-4o") == load_builtin_catalog().get("gpt-4o")


def test_an_override_of_the_upstream_name_prices_the_gateway_model() -> None:
    cfg = config(
        models={"fast": {"provider": "openai", "upstream_model": "gpt-4o-mini"}},
        pricing={"overrides": {"gpt-4o-mini": {"input": "0.1", "output": "0.1"}}},
    )
    fast = build_price_book(cfg).get("fast")
    assert fast is not None
    assert fast.rates.input == 100_000_000


def test_unpriced_model_stays_unpriced() -> None:
    cfg = config(
        models={"mystery": {"provider": "openai"}, "gpt-4o": {"provider": "openai"}},
        pricing={"builtin_catalog": False},
    )
    book = build_price_book(cfg)
    assert book.get("mystery") is None
    assert book.get("gpt-4o") is None
    assert len(book) == 0


def test_litellm_paths_are_relative_to_the_config_folder(tmp_path: Path) -> None:
    litellm_file(
        tmp_path,
        {"x-1": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06}},
        "lite.json",
    )
    cfg = config(pricing={"builtin_catalog": False, "litellm_files": ["lite.json"]})
    book = build_price_book(cfg, env_base_dir=tmp_path)
    assert "x-1" in book


def test_litellm_prefix_aliases_never_replace_an_explicit_name(tmp_path: Path) -> None:
    file = litellm_file(
        tmp_path,
        {
            "azure/gpt-4o": {"input_cost_per_token": 5e-06, "output_cost_per_token": 1.5e-05},
            "anthropic/claude-new": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06},
        },
    )
    book = build_price_book(config(pricing={"litellm_files": [str(file)]}))
    assert book.get("gpt-4o") == load_builtin_catalog().get("gpt-4o")
    assert "azure/gpt-4o" in book
    assert "claude-new" in book


def raw_config(**sections: Any) -> dict[str, Any]:
    return {
        "providers": {"openai": {"kind": "openai", "base_url": "https://api.openai.com/v1"}},
        **sections,
    }


def test_negative_override_names_the_key() -> None:
    data = raw_config(pricing={"overrides": {"gpt-4o": {"input": "-1", "output": "1"}}})
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "spendgate.yaml")
    assert (
        str(caught.value) == "spendgate.yaml: pricing.overrides.gpt-4o: input must not be negative"
    )


def test_negative_model_price_names_the_key() -> None:
    data = raw_config(
        models={
            "m": {
                "provider": "openai",
                "price": {
                    "input": "1",
                    "output": "1",
                    "tiers": [{"above_input_tokens": 5, "rates": {"input": "1", "output": "1"}}],
                    "reasoning": "-2",
                },
            }
        }
    )
    with pytest.raises(ConfigError, match=r"models\.m\.price: reasoning must not be negative"):
        parse_config(data, "spendgate.yaml")


def test_missing_litellm_file_is_a_config_error(tmp_path: Path) -> None:
    cfg = config(pricing={"litellm_files": ["nope.json"]})
    with pytest.raises(ConfigError, match=r"nope\.json: cannot read the file"):
        build_price_book(cfg, env_base_dir=tmp_path)


# The agents' default models (CLIENTS.md §12.1): a new user's first run must be priced.
AGENT_DEFAULTS = [
    # (model, the agent, input $/1M, output $/1M, max input, max output)
    ("claude-opus-5-5", "Claude Code 2.1.328", "4", "20", 1_000_000, 128_000),
    ("gpt-6.1-sol", "Codex 0.169.0", "2", "10", 922_000, 128_000),
]


@pytest.mark.parametrize(("model", "agent", "inp", "out", "max_in", "max_out"), AGENT_DEFAULTS)
def test_the_agents_default_models_are_priced(
    model: str, agent: str, inp: str, out: str, max_in: int, max_out: int
) -> None:
    price = load_builtin_catalog().get(model)
    assert price is not None, f"{agent}'s default model {model} is not in the catalog"
    assert (price.rates.input, price.rates.output) == (dollars_to_nanos(inp), dollars_to_nanos(out))
    assert (price.max_input_tokens, price.max_output_tokens) == (max_in, max_out)
    entry = catalog_document()["models"][model]
    assert entry["as_of"] == "2026-12-06"
