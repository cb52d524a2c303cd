"""Normalized token usage: the one form every provider's numbers are read into (each
dialect's parser is in `spendgate.dialects`).

Normal form (every count is a number of tokens):

* ``input_tokens``: all input tokens, cached and cache-written ones included;
* ``cached_input_tokens``: the part of the input read from the provider's cache;
* ``cache_write_tokens``: the part of the input written to the cache (Anthropic);
  ``cache_write_1h_tokens`` is the part of that written with the 1-hour TTL;
* ``audio_input_tokens``: the part of the input that is audio (Gemini's
  ``promptTokensDetails``), billed at the audio input rate where it is not cached;
* ``output_tokens``: all output tokens, reasoning included;
* ``reasoning_tokens``: the part of the output spent on reasoning/thinking;
* ``service_tier``: the service tier the provider reports it used, lower-case (``default``,
  ``standard``, ``priority``, ``flex``, ``batch``, ``scale``, ``ultrafast``; Anthropic's
  ``speed: fast`` is the tier ``fast``), or None when it reported none. It chooses the rates
  (`spendgate.domain.pricing.Price.rates_for`); a tier a price does not list, ``default``
  and ``standard`` included, is billed at the standard rates;
* ``apart``: sampling steps of the request that the provider bills apart, each in this
  normal form (Anthropic's server-side compaction, a ``compaction`` entry of
  ``usage.iterations``). Their tokens are already in the counts above; each step's
  long-context tier is chosen by its own input, not by the request's summed input;
* ``tool_calls``: tools billed per call, as ``(name, calls)`` pairs, e.g.
  ``(("web_search", 2),)``. Names: ``web_search``, ``web_search_preview``, ``web_fetch``,
  ``file_search``, ``code_execution``, ``image_generation``
  (`spendgate.domain.pricing.TOOLS`).
"""

from __future__ import annotations

import dataclasses
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
    service_tier: str | None = None
    tool_calls: tuple[tuple[str, int], ...] = ()
    apart: tuple[Usage, ...] = ()
    audio_input_tokens: int = 0

    @property
    def uncached_input_tokens(self) -> int:
        return max(0, self.input_tokens - self.cached_input_tokens - self.cache_write_tokens)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def without_apart(self) -> Usage:
        """The counts of the main sampling step: these counts less those of `apart`."""
        if not self.apart:
            return self

        def rest(field: str) -> int:
            apart: int = sum(getattr(step, field) for step in self.apart)
            total: int = getattr(self, field)
            return max(0, total - apart)

        return dataclasses.replace(
            self,
            apart=(),
            input_tokens=rest("input_tokens"),
            output_tokens=rest("output_tokens"),
            cached_input_tokens=rest("cached_input_tokens"),
            cache_write_tokens=rest("cache_write_tokens"),
            cache_write_1h_tokens=rest("cache_write_1h_tokens"),
            reasoning_tokens=rest("reasoning_tokens"),
            audio_input_tokens=rest("audio_input_tokens"),
        )

    def in_tier(self, tier: str | None) -> Usage:
        """The same usage, served in ``tier`` (itself when it already says so: most answers
        name no tier, and `dataclasses.replace` costs microseconds on every request)."""
        return self if tier == self.service_tier else dataclasses.replace(self, service_tier=tier)


def count_field(mapping: Mapping[str, Any] | None, key: str) -> int:
    """A token count from a provider's usage object: a positive integer, else 0."""
    if not mapping:
        return 0
    value = mapping.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def sub_mapping(mapping: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    """A nested object of a usage object (``prompt_tokens_details``), or None."""
    value = mapping.get(key)
    return value if isinstance(value, Mapping) else None
