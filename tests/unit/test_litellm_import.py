"""Importing LiteLLM's model_prices_and_context_window.json, exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from spendgate.domain.pricing import Rates, cost_of
from spendgate.domain.usage import Usage
from spendgate.errors import ConfigError
from spendgate.pricing import ImportReport, load_litellm_file, parse_litellm

FIXTURE: dict[str, Any] = {
    "sample_spec": {
        "input_cost_per_token": 0.0,
        "output_cost_per_token": 0.0,
        "max_tokens": "LEGACY parameter",
        "litellm_provider": "one of https://docs.litellm.ai/docs/providers",
        "mode": "one of: chat, embedding, completion, image_generation, ...",
    },
    "gpt-test": {
        "input_cost_per_token": 1.5e-07,
        "output_cost_per_token": 6e-07,
        "cache_read_input_token_cost": 7.5e-08,
        "max_input_tokens": 128000,
        "max_output_tokens": 16384,
        "litellm_provider": "openai",
        "mode": "chat",
    },
    "o-test": {
        "input_cost_per_token": 1.1e-06,
        "output_cost_per_token": 4.4e-06,
        "output_cost_per_reasoning_token": 8.8e-06,
        "max_output_tokens": 100000.0,
        "max_input_tokens": "lots",
        "litellm_provider": "openai",
        "mode": "chat",
    },
    "anthropic/claude-test": {
        "input_cost_per_token": 3e-06,
        "output_cost_per_token": 1.5e-05,
        "cache_read_input_token_cost": 3e-07,
        "cache_creation_input_token_cost": 3.75e-06,
        "cache_creation_input_token_cost_above_1hr": 6e-06,
        "input_cost_per_token_above_200k_tokens": 6e-06,
        "output_cost_per_token_above_200k_tokens": 2.25e-05,
        "cache_read_input_token_cost_above_200k_tokens": 6e-07,
        "cache_creation_input_token_cost_above_200k_tokens": 7.5e-06,
        "cache_creation_input_token_cost_above_1hr_above_200k_tokens": 1.2e-05,
        "input_cost_per_token_above_200k_tokens_priority": 9e-06,
        "max_input_tokens": 1000000,
        "max_output_tokens": 64000,
        "litellm_provider": "anthropic",
        "mode": "chat",
    },
    "gemini/gemini-test": {
        "input_cost_per_token": 1.25e-06,
        "output_cost_per_token": 1e-05,
        "input_cost_per_token_above_200k_tokens": 2.5e-06,
        "output_cost_per_token_above_200k_tokens": 1.5e-05,
        "litellm_provider": "gemini",
        "mode": "chat",
    },
    "float-trap": {"input_cost_per_token": 1.43e-06, "output_cost_per_token": 4e-07},
    "embed-test": {
        "input_cost_per_token": 2e-08,
        "output_cost_per_token": 0.0,
        "litellm_provider": "openai",
        "mode": "embedding",
    },
    "dall-e-test": {
        "input_cost_per_pixel": 1.9e-08,
        "output_cost_per_pixel": 0.0,
        "litellm_provider": "openai",
        "mode": "image_generation",
    },
    "whisper-test": {
        "input_cost_per_second": 0.0001,
        "output_cost_per_second": 0.0001,
        "mode": "audio_transcription",
    },
    "azure/gpt-test": {"input_cost_per_token": 9e-06, "output_cost_per_token": 9e-06},
    "azure/shared": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06},
    "bedrock/shared": {"input_cost_per_token": 1e-06, "output_cost_per_token": 3e-06},
    "vertex/shared": {"input_cost_per_token": 5e-06, "output_cost_per_token": 1e-06},
}


@pytest.fixture
def fixture_file(tmp_path: Path) -> Path:
    path = tmp_path / "model_prices_and_context_window.json"
    path.write_text(json.dumps(FIXTURE, indent=2), encoding="utf-8")
    return path


def test_per_token_floats_become_exact_nanos_per_million(fixture_file: Path) -> None:
    prices = load_litellm_file(fixture_file).prices
    gpt = prices["gpt-test"]
    assert gpt.rates.input == 150_000_000
    assert gpt.rates.cached_input == 75_000_000
    assert gpt.rates.output == 600_000_000
    o_test = prices["o-test"]
    assert (o_test.rates.input, o_test.rates.output) == (1_100_000_000, 4_400_000_000)
    assert o_test.rates.reasoning == 8_800_000_000
    # In binary floating point 1.43e-06 * 1e6 is 1.4300000000000002 and 4e-07 * 1e6 is
    # 0.39999999999999997; scaled in Decimal they are exact.
    trap = prices["float-trap"]
    assert (trap.rates.input, trap.rates.output) == (1_430_000_000, 400_000_000)
    assert prices["embed-test"].rates == Rates(input=20_000_000, output=0)  # type: ignore[arg-type]


def test_python_floats_give_the_same_result(fixture_file: Path) -> None:
    from_file = load_litellm_file(fixture_file)
    from_floats = parse_litellm(FIXTURE, str(fixture_file))
    assert dict(from_floats.prices) == dict(from_file.prices)


def test_cache_rates_and_long_context_bands(fixture_file: Path) -> None:
    claude = load_litellm_file(fixture_file).prices["anthropic/claude-test"]
    assert claude.rates.cache_write == 3_750_000_000
    assert claude.rates.cache_write_1h == 6_000_000_000
    (band,) = claude.tiers
    assert band.above_input_tokens == 200_000
    assert band.rates.input == 6_000_000_000
    assert band.rates.output == 22_500_000_000
    assert band.rates.cached_input == 600_000_000
    assert band.rates.cache_write == 7_500_000_000
    assert band.rates.cache_write_1h == 12_000_000_000
    long_prompt = Usage(input_tokens=250_000, output_tokens=1_000)
    assert cost_of(long_prompt, claude) == 250_000 * 6_000 + 1_000 * 22_500


def test_a_band_keeps_base_values_it_does_not_restate(fixture_file: Path) -> None:
    gemini = load_litellm_file(fixture_file).prices["gemini/gemini-test"]
    (band,) = gemini.tiers
    assert band.rates.input == 2_500_000_000
    assert band.rates.cached_input is None  # as the base: same as the band's input


def test_limits(fixture_file: Path) -> None:
    prices = load_litellm_file(fixture_file).prices
    assert (prices["gpt-test"].max_input_tokens, prices["gpt-test"].max_output_tokens) == (
        128_000,
        16_384,
    )
    # A whole float is read; a string is ignored rather than failing the whole import.
    assert (prices["o-test"].max_output_tokens, prices["o-test"].max_input_tokens) == (
        100_000,
        None,
    )


def test_report_counts(fixture_file: Path) -> None:
    result = load_litellm_file(fixture_file)
    assert result.report == ImportReport(
        source=str(fixture_file),
        entries=len(FIXTURE) - 1,
        imported=len(FIXTURE) - 3,
        skipped_unpriced=2,
        aliases=3,
    )
    assert "sample_spec" not in result.book
    assert "dall-e-test" not in result.book
    assert "whisper-test" not in result.book


def test_provider_prefix_is_an_extra_alias(fixture_file: Path) -> None:
    result = load_litellm_file(fixture_file)
    assert "anthropic/claude-test" in result.prices
    assert result.aliases["claude-test"].rates == result.prices["anthropic/claude-test"].rates
    assert result.aliases["claude-test"].model == "claude-test"
    assert result.book.get("claude-test") is not None
    # A key the file has itself is never replaced by an alias...
    assert "gpt-test" not in result.aliases
    assert result.book.get("gpt-test") == result.prices["gpt-test"]
    # ...and among aliases that collide, the dearest wins.
    assert result.aliases["shared"].rates.output == 3_000_000_000


def test_source_is_recorded(fixture_file: Path) -> None:
    price = load_litellm_file(fixture_file).prices["gpt-test"]
    assert price.source == f"litellm:{fixture_file}"


@pytest.mark.parametrize(
    ("content", "key", "problem"),
    [
        ('{"gpt-x": {"input_cost_per_token": 1e-6,', "", "not valid JSON at line 1"),
        ("[1, 2]", "", "top level must be a JSON object"),
        ('{"gpt-x": 5}', "gpt-x", "must be an object, not int"),
        (
            '{"gpt-x": {"input_cost_per_token": "cheap", "output_cost_per_token": 1e-6}}',
            "gpt-x.input_cost_per_token",
            "must be a number, not str",
        ),
        (
            '{"gpt-x": {"input_cost_per_token": true, "output_cost_per_token": 1e-6}}',
            "gpt-x.input_cost_per_token",
            "must be a number, not bool",
        ),
        (
            '{"gpt-x": {"input_cost_per_token": -1e-6, "output_cost_per_token": 1e-6}}',
            "gpt-x.input_cost_per_token",
            "non-negative",
        ),
        (
            '{"gpt-x": {"input_cost_per_token": NaN, "output_cost_per_token": 1e-6}}',
            "gpt-x.input_cost_per_token",
            "finite",
        ),
        (
            '{"gpt-x": {"input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6,'
            ' "output_cost_per_token_above_128k_tokens": []}}',
            "gpt-x.output_cost_per_token_above_128k_tokens",
            "must be a number, not list",
        ),
    ],
)
def test_bad_files_name_the_file_and_key(
    tmp_path: Path, content: str, key: str, problem: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_litellm_file(path)
    assert caught.value.path == str(path)
    assert caught.value.key == key
    assert problem in caught.value.problem
    assert str(path) in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_litellm_file(tmp_path / "absent.json")


# ------------------------------------------------------------------ service tiers and fees

TIERED: dict[str, Any] = {
    "gpt-tiered": {
        "input_cost_per_token": 2e-06,
        "output_cost_per_token": 1e-05,
        "cache_read_input_token_cost": 1e-07,
        "input_cost_per_token_above_272k_tokens": 4e-06,
        "output_cost_per_token_above_272k_tokens": 1.5e-05,
        "cache_read_input_token_cost_above_272k_tokens": 2e-07,
        "input_cost_per_token_priority": 4e-06,
        "output_cost_per_token_priority": 2e-05,
        "cache_read_input_token_cost_priority": 2e-07,
        "input_cost_per_token_above_272k_tokens_priority": 8e-06,
        "output_cost_per_token_above_272k_tokens_priority": 3e-05,
        "input_cost_per_token_flex": 1e-06,
        "output_cost_per_token_flex": 5e-06,
        "input_cost_per_token_batches": 1e-06,
        "output_cost_per_token_batches": 5e-06,
        "input_cost_per_token_ultrafast": 1.2e-05,
        "output_cost_per_token_ultrafast": 6e-05,
        "input_cost_per_token_decisions": 1e-07,
        "output_cost_per_token_decisions": 0.0,
        "search_context_cost_per_query": {
            "search_context_size_low": 0.01,
            "search_context_size_medium": 0.01,
            "search_context_size_high": 0.025,
        },
    },
    "half-a-tier": {
        "input_cost_per_token": 1e-06,
        "output_cost_per_token": 1e-06,
        "input_cost_per_token_priority": 2e-06,
        "search_context_cost_per_query": 0.014,
    },
}


def tiered() -> Any:
    return parse_litellm(TIERED, "tiered.json").prices


def test_priority_flex_batch_and_ultrafast_become_service_tiers() -> None:
    price = tiered()["gpt-tiered"]
    assert set(price.service_tiers) == {"priority", "flex", "batch", "ultrafast"}
    assert price.rates_for(1_000, "priority").input == 4_000_000_000
    assert price.rates_for(1_000, "priority").cached_input == 200_000_000
    assert price.rates_for(1_000, "batch").output == 5_000_000_000
    assert price.rates_for(1_000, "ultrafast").output == 60_000_000_000
    assert "decisions" not in price.service_tiers


def test_a_tiers_own_long_context_band_is_read() -> None:
    price = tiered()["gpt-tiered"]
    above = price.rates_for(272_001, "priority")
    assert (above.input, above.output) == (8_000_000_000, 30_000_000_000)
    usage = Usage(input_tokens=300_000, output_tokens=1_000, service_tier="priority")
    assert cost_of(usage, price) == 300_000 * 8_000 + 1_000 * 30_000


def test_a_band_a_tier_does_not_state_is_the_standard_band_in_proportion() -> None:
    price = tiered()["gpt-tiered"]
    # Flex states no long-context band: the standard band at flex's 0.5x.
    flex = price.rates_for(272_001, "flex").full()
    assert (flex.input, flex.cached_input, flex.output) == (
        2_000_000_000,
        100_000_000,
        7_500_000_000,
    )
    assert price.rates_for(272_001).output == 15_000_000_000
    usage = Usage(input_tokens=300_000, output_tokens=1_000, service_tier="batch")
    assert cost_of(usage, price) == 300_000 * 2_000 + 1_000 * 7_500


def test_fields_a_tier_does_not_state_follow_its_input_and_output_ratios() -> None:
    entry = {
        "input_cost_per_token": 1.5e-06,
        "output_cost_per_token": 9e-06,
        "output_cost_per_reasoning_token": 9e-06,
        "cache_read_input_token_cost": 1.5e-07,
        "cache_creation_input_token_cost": 3e-06,
        "input_cost_per_token_priority": 2.7e-06,
        "output_cost_per_token_priority": 1.62e-05,
    }
    price = parse_litellm({"g": entry}, "g.json").prices["g"]
    priority = price.rates_for(0, "priority")
    assert priority.reasoning == 16_200_000_000  # 1.8x, as output: not the standard 9
    assert priority.cached_input == 270_000_000  # 1.8x the standard cached input
    assert priority.cache_write == 5_400_000_000
    assert price.rates_for(0, "priority").input == 2_700_000_000


def test_a_tier_needs_both_input_and_output() -> None:
    assert tiered()["half-a-tier"].service_tiers == {}


def test_the_dearest_search_price_becomes_the_web_search_fee() -> None:
    prices = tiered()
    assert prices["gpt-tiered"].tool_fees == {"web_search": 25_000_000}
    assert prices["half-a-tier"].tool_fees == {"web_search": 14_000_000}
    usage = Usage(input_tokens=0, tool_calls=(("web_search", 2),))
    assert cost_of(usage, prices["gpt-tiered"]) == 50_000_000


def test_the_fixtures_partial_priority_band_is_not_a_tier(fixture_file: Path) -> None:
    claude = load_litellm_file(fixture_file).prices["anthropic/claude-test"]
    assert claude.service_tiers == {}
    assert claude.tool_fees == {}


@pytest.mark.parametrize(
    ("entry", "key", "problem"),
    [
        (
            {"input_cost_per_token_priority": "x", "output_cost_per_token_priority": 1e-6},
            "m.input_cost_per_token_priority",
            "must be a number, not str",
        ),
        (
            {"search_context_cost_per_query": {"search_context_size_low": -0.01}},
            "m.search_context_cost_per_query.search_context_size_low",
            "non-negative",
        ),
        (
            {"search_context_cost_per_query": "cheap"},
            "m.search_context_cost_per_query",
            "must be a number, not str",
        ),
    ],
)
def test_bad_tier_and_fee_values_name_the_key(
    entry: dict[str, Any], key: str, problem: str
) -> None:
    data = {"m": {"input_cost_per_token": 1e-6, "output_cost_per_token": 1e-6, **entry}}
    with pytest.raises(ConfigError) as caught:
        parse_litellm(data, "bad.json")
    assert caught.value.key == key
    assert problem in caught.value.problem


def test_the_audio_input_rate_is_read_and_kept_in_proportion_in_tiers() -> None:
    entry = {
        "input_cost_per_token": 3e-07,
        "output_cost_per_token": 2.5e-06,
        "input_cost_per_audio_token": 1e-06,
        "input_cost_per_token_flex": 1.5e-07,
        "output_cost_per_token_flex": 1.25e-06,
    }
    price = parse_litellm({"gemini/gemini-x": entry}, "prices.json").book.get("gemini/gemini-x")
    assert price is not None
    assert price.rates.audio_input == 1_000_000_000
    assert price.rates_for(1_000, "flex").audio_input == 500_000_000
    usage = Usage(input_tokens=3_000, audio_input_tokens=1_000, output_tokens=10)
    assert cost_of(usage, price) == 2_000 * 300 + 1_000 * 1_000 + 10 * 2_500
