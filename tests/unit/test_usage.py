"""Each provider's usage numbers, read into one normal form (shared/CLIENTS.md §0.16)."""

from __future__ import annotations

from typing import Any, cast

import orjson
import pytest

from spendgate.dialects.anthropic import from_anthropic, merge_anthropic
from spendgate.dialects.openai import from_openai_chat, from_openai_responses
from spendgate.domain.usage import Usage
from spendgate.pipeline.exchange import Exchange
from spendgate.pipeline.usage_check import implausible


def test_openai_chat_usage_keeps_cached_and_reasoning_inside_the_totals() -> None:
    usage = from_openai_chat(
        {
            "prompt_tokens": 19,
            "completion_tokens": 20,
            "total_tokens": 39,
            "prompt_tokens_details": {
                "cached_tokens": 3,
                "audio_tokens": 0,
                "cache_write_tokens": 2,
            },
            "completion_tokens_details": {"reasoning_tokens": 2, "audio_tokens": 0},
        }
    )
    assert usage == Usage(
        input_tokens=19,
        output_tokens=20,
        cached_input_tokens=3,
        cache_write_tokens=2,
        reasoning_tokens=2,
    )
    assert usage.uncached_input_tokens == 14
    assert usage.total_tokens == 39


def test_embeddings_usage_has_no_completion() -> None:
    assert from_openai_chat({"prompt_tokens": 16, "total_tokens": 16}) == Usage(input_tokens=16)


def test_openai_responses_usage() -> None:
    usage = from_openai_responses(
        {
            "input_tokens": 36,
            "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
            "output_tokens": 87,
            "output_tokens_details": {"reasoning_tokens": 5},
            "total_tokens": 123,
        }
    )
    assert usage == Usage(
        input_tokens=36, output_tokens=87, cached_input_tokens=4, reasoning_tokens=5
    )


def test_anthropic_input_excludes_the_cache_fields_so_they_are_added_back() -> None:
    usage = from_anthropic(
        {
            "input_tokens": 25,
            "cache_creation_input_tokens": 11,
            "cache_read_input_tokens": 7,
            "cache_creation": {"ephemeral_5m_input_tokens": 5, "ephemeral_1h_input_tokens": 6},
            "output_tokens": 15,
            "service_tier": "standard",
            "server_tool_use": None,
        }
    )
    assert usage == Usage(
        input_tokens=43,
        output_tokens=15,
        cached_input_tokens=7,
        cache_write_tokens=11,
        cache_write_1h_tokens=6,
    )
    assert usage.uncached_input_tokens == 25


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"prompt_tokens": None, "completion_tokens": "12"},
        {"prompt_tokens": True, "completion_tokens": -4},
        {"prompt_tokens": 1.5, "prompt_tokens_details": None, "completion_tokens_details": []},
    ],
)
def test_missing_or_malformed_numbers_read_as_zero(raw: dict[str, Any]) -> None:
    assert from_openai_chat(raw) == Usage()


def test_anthropic_stream_usage_is_cumulative() -> None:
    start = {
        "input_tokens": 25,
        "cache_creation_input_tokens": 11,
        "cache_read_input_tokens": 7,
        "output_tokens": 1,
    }
    first = merge_anthropic(start, {"output_tokens": 8})
    final = merge_anthropic(first, {"output_tokens": 15, "input_tokens": None})
    # message_delta overwrites; it does not add, and None keeps the earlier value.
    assert final == {**start, "output_tokens": 15}
    assert from_anthropic(final).output_tokens == 15
    assert from_anthropic(final).input_tokens == 43
    assert start["output_tokens"] == 1  # inputs are not mutated


def test_anthropic_delta_may_restate_input() -> None:
    merged = merge_anthropic(
        {"input_tokens": 25, "output_tokens": 1}, {"input_tokens": 30, "output_tokens": 9}
    )
    assert from_anthropic(merged) == Usage(input_tokens=30, output_tokens=9)


def test_usage_defaults_are_not_estimates() -> None:
    assert not Usage().estimated
    assert Usage(estimated=True).estimated


def test_usage_in_a_tier() -> None:
    usage = Usage(input_tokens=10, output_tokens=5)
    assert usage.in_tier(None) is usage  # most answers name no tier: nothing to copy
    flex = usage.in_tier("flex")
    assert flex == Usage(input_tokens=10, output_tokens=5, service_tier="flex")
    assert flex.in_tier(None) == usage


@pytest.mark.parametrize(
    "usage",
    [
        Usage(input_tokens=10, output_tokens=5, cache_write_1h_tokens=2**64),
        Usage(input_tokens=10, output_tokens=5, reasoning_tokens=2**64),
        Usage(input_tokens=10, output_tokens=5, audio_input_tokens=2**64),
        from_anthropic(
            orjson.loads(  # as the gateway reads it: an int up to 2**64 - 1, past it a float
                b'{"input_tokens": 10, "output_tokens": 5,'
                b' "server_tool_use": {"web_search_requests": 18446744073709551615}}'
            )
        ),
    ],
    ids=["cache-1h", "reasoning", "audio", "server-tool-calls"],
)
def test_an_absurd_count_of_any_kind_is_not_believed(usage: Usage) -> None:
    """Only the four main counts were vetted: a provider billing 2**64 - 1 web searches
    (or 1-hour cache writes) was believed, priced past what any store holds (2**63 - 1
    nanos), and its row could be written nowhere. Absurd counts are checked before the
    exchange is looked at, so none is needed here."""
    problem = implausible(usage, cast(Exchange, None))
    assert problem is not None
    assert "is impossible" in problem
