"""Deterministic token accounting and text generation.

Input tokens (the same function for every endpoint; no real tokenizer):

* a string counts ``ceil(len(text) / 4)`` tokens; a number 1 token; ``true``/``false``/
  ``null`` nothing;
* lists and objects count the sum of their values, walked recursively; the keys and the
  values of ``type``, ``role``, ``id``, ``cache_control``, ``detail``, ``signature`` and
  ``data`` (base64 payloads) are not counted;
* an image part (``image_url``, ``image``, ``input_image``) counts a flat 85 tokens;
* chat messages and Responses input items add 4 tokens each, Anthropic messages 3, and
  every conversation 3 more for priming the reply;
* tools count like any other value (names, descriptions, schema values);
* embedding inputs: each string ``ceil(len / 4)`` (at least 1), token arrays their length.

``x-sim-cached-tokens`` / ``x-sim-cache-write-tokens`` are parts of the input; when they
add up to more than the counted prompt, the prompt is taken to be exactly that long.

Output: a stream of common English words, one word = one token (each is a single
``o200k_base`` token, so OpenAI's tokenizer agrees with the simulator's count). Its length, unless
``x-sim-output-tokens`` sets it, is ``min + crc32(prompt) % (max - min + 1)`` tokens
(20..60 by default) plus the reasoning tokens, capped by the request's max; reasoning
(hidden) tokens come first and are part of that cap. Reasoning is only generated when
``x-sim-reasoning-tokens`` asks for it: OpenAI reports it in ``reasoning_tokens`` (and the
Responses API adds a ``reasoning`` output item), Anthropic streams a ``thinking`` block.
Chat ``n`` > 1 plans every choice separately (seed + choice index). Whatever the headers
and the request's max ask for, one request never generates more than
`MAX_GENERATED_TOKENS` tokens in all (split between the choices).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from .faults import Faults

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4
ANTHROPIC_MESSAGE_OVERHEAD = 3
REPLY_PRIMING = 3
MAX_GENERATED_TOKENS = 1_000_000
IMAGE_TOKENS = 85
IMAGE_TYPES = frozenset({"image_url", "image", "input_image"})
SKIPPED_KEYS = frozenset(
    {"type", "role", "id", "cache_control", "detail", "signature", "data", "tool_use_id"}
)

# Common English words, each exactly one token in o200k_base with its leading space, so that
# a gateway counting output with OpenAI's tokenizer gets the simulator's own count.
_VOCABULARY = (
    "the of and to in is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when if "
    "so no will more out up about into them can only other new some could time these two "
    "may first then do any like my now over such our man me even most made after also did "
    "many before must through back years where much your way well down should because each "
    "just those people how too little state good very make world still own see men work "
    "long here get both between life being under never day same another know while last "
    "might us great old year off come since against go came right used take three"
)
_WORDS: tuple[str, ...] = tuple(" " + word for word in _VOCABULARY.split())


def text_tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def value_tokens(value: object) -> int:
    """Tokens of any JSON value, by the rules in the module docstring."""
    if isinstance(value, str):
        return text_tokens(value)
    if isinstance(value, bool) or value is None:
        return 0
    if isinstance(value, int | float):
        return 1
    if isinstance(value, list):
        return sum(value_tokens(item) for item in value)
    if isinstance(value, dict):
        kind = value.get("type")
        if isinstance(kind, str) and kind in IMAGE_TYPES:  # a JSON schema's "type" is a dict
            return IMAGE_TOKENS
        return sum(value_tokens(v) for k, v in value.items() if k not in SKIPPED_KEYS)
    return 0


def _items_tokens(items: object, overhead: int) -> int:
    if isinstance(items, str):
        return overhead + text_tokens(items)
    if not isinstance(items, list):
        return 0
    return sum(overhead + value_tokens(item) for item in items)


def chat_input_tokens(body: dict[str, Any]) -> int:
    messages = _items_tokens(body.get("messages"), MESSAGE_OVERHEAD)
    tools = value_tokens(body.get("tools")) + value_tokens(body.get("functions"))
    return messages + tools + REPLY_PRIMING


def responses_input_tokens(body: dict[str, Any]) -> int:
    instructions = body.get("instructions")
    extra = MESSAGE_OVERHEAD + value_tokens(instructions) if instructions else 0
    items = _items_tokens(body.get("input"), MESSAGE_OVERHEAD)
    return items + extra + value_tokens(body.get("tools")) + REPLY_PRIMING


def anthropic_input_tokens(body: dict[str, Any]) -> int:
    system = body.get("system")
    extra = ANTHROPIC_MESSAGE_OVERHEAD + value_tokens(system) if system else 0
    messages = _items_tokens(body.get("messages"), ANTHROPIC_MESSAGE_OVERHEAD)
    return messages + extra + value_tokens(body.get("tools")) + REPLY_PRIMING


def prompt_seed(*parts: object) -> int:
    """A deterministic fingerprint of the prompt (independent of ``stream`` etc.)."""
    return zlib.crc32(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS))


def generate_text(seed: int, count: int) -> list[str]:
    """``count`` tokens of text, starting at a word chosen by ``seed``."""
    size = len(_WORDS)
    start = seed % size
    words = [_WORDS[(start + i) % size] for i in range(count)]
    if words:
        words[0] = words[0][1:]
    return words


def chunk_text(words: list[str], per_chunk: int) -> list[tuple[str, int]]:
    """Group tokens into stream deltas: (text, number of tokens in it)."""
    step = max(1, per_chunk)
    chunks = []
    for i in range(0, len(words), step):
        piece = words[i : i + step]
        chunks.append(("".join(piece), len(piece)))
    return chunks


@dataclass(frozen=True, slots=True)
class InputPlan:
    total: int
    cached: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0

    @property
    def cache_write(self) -> int:
        return self.cache_write_5m + self.cache_write_1h

    @property
    def uncached(self) -> int:
        """What Anthropic reports as ``input_tokens``."""
        return self.total - self.cached - self.cache_write


def plan_input(counted: int, faults: Faults) -> InputPlan:
    cached, w5m, w1h = faults.cached_tokens, faults.cache_write_tokens, faults.cache_write_1h_tokens
    return InputPlan(max(counted, cached + w5m + w1h), cached, w5m, w1h)


@dataclass(frozen=True, slots=True)
class OutputPlan:
    text: int
    reasoning: int
    truncated: bool

    @property
    def total(self) -> int:
        return self.text + self.reasoning


def plan_output(
    seed: int,
    limit: int | None,
    faults: Faults,
    low: int,
    high: int,
    ceiling: int = MAX_GENERATED_TOKENS,
) -> OutputPlan:
    """How many tokens to generate, and whether the request's max cut the answer.

    ``ceiling`` bounds what is generated whatever was asked (never reported as a cut)."""
    reasoning = faults.reasoning_tokens
    if faults.output_tokens is not None:
        wanted = faults.output_tokens
    else:
        wanted = low + seed % (max(high, low) - low + 1) + reasoning
    wanted = min(wanted, max(1, ceiling))
    truncated = limit is not None and wanted > limit and not faults.ignore_max
    total = limit if truncated and limit is not None else wanted
    reasoning = min(reasoning, total)
    return OutputPlan(total - reasoning, reasoning, truncated)
