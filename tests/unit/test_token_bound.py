"""The byte bound (`spendgate.domain.token_bound`) is never below the count: for any text
(any Unicode, lone surrogates included), in any body shape each surface counts, for a
model of each tokenizer family. Admission relies on it to reserve a large body's bound
instead of its count without ever reserving less (`spendgate.pipeline.bound_first`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from spendgate.domain import tokens
from spendgate.domain.token_bound import BYTE_BOUND, counting_with

MODELS = ("gpt-4o-mini", "gpt-4", "claude-sonnet-4-6", "gemini-2.5-pro", "some-house-model")
Counter = Callable[[str, Mapping[str, Any]], tokens.TokenCount]

texts = st.text(
    st.characters(blacklist_categories=()),  # every category, surrogates included
    max_size=400,
) | st.sampled_from(["", "=" * 1000, "a" * 999, "🙂" * 50, "\ud800x", " ".join(["hello"] * 80)])


def chat(text: str, other: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": other},
            {"role": "user", "content": [{"type": "text", "text": text}]},
            {"role": "assistant", "content": text, "name": other[:8]},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "description": other}}],
    }


def responses(text: str, other: str) -> dict[str, Any]:
    return {
        "instructions": other,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}],
    }


def anthropic(text: str, other: str) -> dict[str, Any]:
    return {
        "system": other,
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
    }


def gemini(text: str, other: str) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": text}, {"text": other}]}]}


SHAPES: tuple[tuple[Counter, Callable[[str, str], dict[str, Any]]], ...] = (
    (tokens.count_chat_input, chat),
    (tokens.count_responses_input, responses),
    (tokens.count_anthropic_input, anthropic),
    (tokens.count_gemini_input, gemini),
    (tokens.count_embedding_input, lambda text, other: {"input": [text, other]}),
)


@settings(max_examples=60, deadline=None)
@given(text=texts, other=texts, model=st.sampled_from(MODELS), shape=st.sampled_from(SHAPES))
def test_the_byte_bound_is_never_below_the_count(
    text: str, other: str, model: str, shape: tuple[Counter, Callable[[str, str], Any]]
) -> None:
    count, make = shape
    body = make(text, other)
    exact = count(model, body)
    with counting_with(BYTE_BOUND):
        bound = count(model, body)
    assert bound.tokens >= exact.tokens
    assert count(model, body) == exact  # the block changed only what ran inside it


def test_the_bound_loads_no_encoding_and_counts_bytes() -> None:
    assert BYTE_BOUND.count("o200k_base", "héllo") == 6
    assert BYTE_BOUND.count("o200k_base", "\ud800") == 3
    assert not BYTE_BOUND._tokenizers
    with counting_with(BYTE_BOUND):
        bounded = tokens.count_chat_input("gpt-4o-mini", chat("x" * 10_000, ""))
    assert not BYTE_BOUND._tokenizers  # walked with lengths: no tokenizer ran
    assert bounded.tokens >= 10_000 * 2  # the text twice, a token per byte
