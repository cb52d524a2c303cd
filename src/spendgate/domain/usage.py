"""Normalized token usage, and the parsers that read each provider's own numbers.

Normal form (every count is a number of tokens):

* ``input_tokens``: all input tokens, cached and cache-written ones included;
* ``cached_input_tokens``: the part of the input read from the provider's cache;
* ``cache_write_tokens``: the part of the input written to the cache (Anthropic);
  ``cache_write_1h_tokens`` is the part of that written with the 1-hour TTL;
* ``output_tokens``: all output tokens, reasoning included;
* ``reasoning_tokens``: the part of the output spent on reasoning/thinking.

OpenAI's ``prompt_tokens`` already include cached tokens and ``completion_tokens`` include
reasoning; Anthropic's ``input_tokens`` exclude both cache fields (shared/CLIENTS.md §0.16).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False

    @property
    def uncached_input_tokens(self) -> int:
        return max(0, self.input_tokens - self.cached_input_tokens - self.cache_write_tokens)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def _int(mapping: Mapping[str, Any] | None, key: str) -> int:
    if not mapping:
        return 0
    value = mapping.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _mapping(value: object) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def from_openai_chat(usage: Mapping[str, Any]) -> Usage:
    """``CompletionUsage`` of chat completions and embeddings."""
    prompt_details = _mapping(usage.get("prompt_tokens_details"))
    completion_details = _mapping(usage.get("completion_tokens_details"))
    return Usage(
        input_tokens=_int(usage, "prompt_tokens"),
        output_tokens=_int(usage, "completion_tokens"),
        cached_input_tokens=_int(prompt_details, "cached_tokens"),
        cache_write_tokens=_int(prompt_details, "cache_write_tokens"),
        reasoning_tokens=_int(completion_details, "reasoning_tokens"),
    )


def from_openai_responses(usage: Mapping[str, Any]) -> Usage:
    """``ResponseUsage`` of the Responses API."""
    input_details = _mapping(usage.get("input_tokens_details"))
    output_details = _mapping(usage.get("output_tokens_details"))
    return Usage(
        input_tokens=_int(usage, "input_tokens"),
        output_tokens=_int(usage, "output_tokens"),
        cached_input_tokens=_int(input_details, "cached_tokens"),
        cache_write_tokens=_int(input_details, "cache_write_tokens"),
        reasoning_tokens=_int(output_details, "reasoning_tokens"),
    )


def from_anthropic(usage: Mapping[str, Any]) -> Usage:
    """Anthropic ``usage``: input excludes the cache fields, so add them back."""
    cache_creation = _mapping(usage.get("cache_creation"))
    uncached = _int(usage, "input_tokens")
    cache_read = _int(usage, "cache_read_input_tokens")
    cache_write = _int(usage, "cache_creation_input_tokens")
    return Usage(
        input_tokens=uncached + cache_read + cache_write,
        output_tokens=_int(usage, "output_tokens"),
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=_int(cache_creation, "ephemeral_1h_input_tokens"),
    )


def merge_anthropic(current: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``message_delta`` usage is cumulative: its fields overwrite those of ``message_start``."""
    merged = dict(current)
    for key, value in update.items():
        if value is not None:
            merged[key] = value
    return merged
