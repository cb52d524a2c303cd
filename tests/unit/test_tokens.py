"""Offline token counting: exact for OpenAI encodings, an upper bound for everything else."""

from __future__ import annotations

import ast
import base64
import math
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from spendgate.dialects.anthropic import MESSAGES
from spendgate.domain import tokens
from spendgate.domain.tokens import (
    ANTHROPIC_IMAGE_TOKENS,
    ANTHROPIC_TOOLS_SYSTEM_TOKENS,
    ESTIMATE_FACTOR_PERCENT,
    OPENAI_IMAGE_LOW_DETAIL_TOKENS,
    OPENAI_IMAGE_MAX_TOKENS,
    REPLY_PRIMING_TOKENS,
    TOKENS_PER_MESSAGE,
    UNKNOWN_ATTACHMENT_TOKENS,
    TokenCount,
    TokenizerFamily,
    count_anthropic_input,
    count_chat_input,
    count_embedding_input,
    count_output_text,
    count_responses_input,
    count_text,
    counting_model,
    encoding_for_model,
    token_counter,
    tokenizer_family,
)

# Counted once with bpe_openai; the ids match tiktoken's (shared/CLIENTS.md §10).
KNOWN = [
    ("Hello, world!", 4, 4),
    ("The quick brown fox jumps over the lazy dog.", 10, 10),
    ("Größenwahn 東京 🚀", 8, 11),
    ("def add(a, b):\n    return a + b\n", 12, 12),
    ("hello <|endoftext|> world", 9, 8),
]
TEXTS = [text for text, _, _ in KNOWN] + [
    "=" * 1_000,
    "a" * 1_000,
    "日本語のテキストはトークンが多い。" * 20,
    "SELECT id, name FROM users WHERE created_at > now() - interval '1 day';\n" * 10,
    "",
]


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-5.1-codex", "o200k_base"),
        ("gpt-5.6", "o200k_base"),
        ("gpt-6.1-sol", "o200k_base"),
        ("gpt-6-astra-law", "o200k_base"),
        ("gpt-7-nova", "o200k_base"),
        ("gpt-10", "o200k_base"),
        ("openai/gpt-6-luna", "o200k_base"),
        ("o1", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("codex-mini-latest", "o200k_base"),
        ("openai/GPT-4o", "o200k_base"),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("text-embedding-ada-002", "cl100k_base"),
        ("claude-sonnet-4-5", None),
        ("claude-opus-5-5", None),
        ("gemini-2.5-pro", None),
        ("gemini-3.8-flash", None),
        ("omni-moderation-latest", None),
        ("llama-3-70b", None),
    ],
)
def test_encoding_for_model(model: str, encoding: str | None) -> None:
    assert encoding_for_model(model) == encoding


def _catalog_models() -> list[tuple[str, str]]:
    """(name, family) of every model and alias in the built-in catalog."""
    text = resources.files("spendgate.pricing").joinpath("catalog.yaml").read_text("utf-8")
    document = yaml.safe_load(text)
    return [
        (name, entry["family"])
        for key, entry in document["models"].items()
        for name in (key, *entry.get("aliases", ()))
    ]


@pytest.mark.parametrize(("model", "family"), _catalog_models())
def test_every_catalog_model_has_a_counting_rule(model: str, family: str) -> None:
    """OpenAI's models are counted exactly, by pattern, so a new generation is too; Claude
    and Gemini get the documented upper bound."""
    count = count_text(model, "Hello, world! Größenwahn 東京")
    assert count.tokens > 0
    expected = {
        "openai": {TokenizerFamily.O200K},
        "openai-chat": {TokenizerFamily.O200K},
        "openai-embedding": {TokenizerFamily.O200K, TokenizerFamily.CL100K},
        "anthropic": {TokenizerFamily.ANTHROPIC},
        "google": {TokenizerFamily.GEMINI},
    }[family]
    assert tokenizer_family(model) in expected, f"{model} falls to {tokenizer_family(model)}"
    if family.startswith("openai"):
        assert encoding_for_model(model) is not None, f"{model} has no exact encoding"
        assert count.exact
    else:
        assert family in ("anthropic", "google")
        assert encoding_for_model(model) is None
        assert not count.exact
        assert count.tokens >= count_text("gpt-4o", "Hello, world! Größenwahn 東京").tokens


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("gpt-6.1-sol", TokenizerFamily.O200K),
        ("gpt-6-astra-law", TokenizerFamily.O200K),
        ("gpt-5.3-codex", TokenizerFamily.O200K),
        ("o3-pro", TokenizerFamily.O200K),
        ("codex-mini-latest", TokenizerFamily.O200K),
        ("azure/gpt-7", TokenizerFamily.O200K),
        ("gpt-3.5-turbo", TokenizerFamily.CL100K),
        ("claude-opus-5-5", TokenizerFamily.ANTHROPIC),
        ("claude-fable-5-1", TokenizerFamily.ANTHROPIC),
        ("anthropic/claude-sonnet-4-6", TokenizerFamily.ANTHROPIC),
        ("anthropic.claude-opus-4-5-20251101-v1:0", TokenizerFamily.ANTHROPIC),
        ("us.anthropic.claude-haiku-4-5-20251001-v1:0", TokenizerFamily.ANTHROPIC),
        ("claude-3-5-haiku", TokenizerFamily.ANTHROPIC),
        ("gemini-3.8-flash", TokenizerFamily.GEMINI),
        ("gemini/gemini-2.5-pro", TokenizerFamily.GEMINI),
        ("gemma-3-27b", TokenizerFamily.GEMINI),
        ("llama-3-70b", TokenizerFamily.UNKNOWN),
        ("research", TokenizerFamily.UNKNOWN),
        ("omni-moderation-latest", TokenizerFamily.UNKNOWN),
    ],
)
def test_tokenizer_family_by_pattern(model: str, family: TokenizerFamily) -> None:
    assert tokenizer_family(model) is family


@pytest.mark.parametrize(
    ("gateway", "upstream", "counted"),
    [
        ("research", "gpt-6.1-sol", "gpt-6.1-sol"),  # a house name: its upstream counts
        ("gpt-4o", "prod-4o-eastus", "gpt-4o"),  # an Azure deployment name: the known name
        ("gpt-4o", "llama-3-70b", "gpt-4o"),  # unknown upstream, known gateway name
        ("claude-opus-5-5", "claude-opus-5-5", "claude-opus-5-5"),
        ("fast", "llama-3-70b", "llama-3-70b"),  # neither known: the upper bound
    ],
)
def test_counting_model_prefers_the_upstream_model(
    gateway: str, upstream: str, counted: str
) -> None:
    assert counting_model(gateway, upstream) == counted


def test_a_new_openai_generation_is_counted_exactly_not_bounded() -> None:
    """Issue 12 item 6: gpt-6 counted with the x1.75 bound reserved 27,471 input tokens
    for 14,980 real. By pattern it is o200k_base, exact."""
    text = "The quick brown fox jumps over the lazy dog. " * 300
    exact = count_text("gpt-4o", text)
    assert count_text("gpt-6.1-sol", text) == exact
    assert count_text("research", text).tokens >= exact.tokens * ESTIMATE_FACTOR_PERCENT // 100


def test_the_catalog_walk_sees_every_family() -> None:
    families = {family for _, family in _catalog_models()}
    assert {"openai", "openai-chat", "openai-embedding", "anthropic", "google"} <= families


@pytest.mark.parametrize(("text", "o200k", "cl100k"), KNOWN)
def test_known_exact_counts(text: str, o200k: int, cl100k: int) -> None:
    assert count_text("gpt-4o", text) == TokenCount(o200k, exact=True)
    assert count_text("gpt-4", text) == TokenCount(cl100k, exact=True)


def test_special_token_text_is_ordinary_text() -> None:
    assert count_text("gpt-5", "<|endoftext|>").tokens > 1
    assert count_text("gpt-4", "<|endoftext|><|fim_prefix|>").tokens > 2


def test_odd_text_never_raises() -> None:
    assert count_text("gpt-4o", "").tokens == 0
    assert count_text("gpt-4o", "a\ud800b").tokens >= 2  # a lone surrogate from JSON
    assert count_text("claude-sonnet-4-5", "a\udfffb").tokens >= 2
    # Longer than tiktoken-style encoders accept (1M characters, 200k tokens).
    assert count_text("gpt-4o", "word " * 300_000).tokens == 300_001


@pytest.mark.parametrize("text", TEXTS)
def test_estimate_is_an_upper_bound_of_o200k(text: str) -> None:
    exact = token_counter().count("o200k_base", text)
    for model in ("claude-sonnet-4-5", "gemini-2.5-flash", "some-local-model"):
        estimate = count_text(model, text)
        assert not estimate.exact
        assert estimate.tokens >= exact
        assert estimate.tokens >= math.ceil(exact * ESTIMATE_FACTOR_PERCENT / 100)
        assert estimate.tokens >= math.ceil(len(text.encode()) / 4)


def test_the_byte_floor_covers_text_o200k_compresses_well() -> None:
    assert token_counter().count("o200k_base", "=" * 1_000) == 16
    assert count_text("claude-haiku-4-5", "=" * 1_000).tokens == 250


def test_output_text_counts_like_text() -> None:
    assert count_output_text("gpt-4o", "Hello, world!") == TokenCount(4, exact=True)
    assert not count_output_text("claude-opus-4-5", "Hello, world!").exact


def test_the_counter_is_shared_and_preloads() -> None:
    counter = token_counter()
    assert token_counter() is counter
    counter.preload()
    assert counter.count("cl100k_base", "Hello, world!") == 4


# ------------------------------------------------------------------ OpenAI chat

SYSTEM = {"role": "system", "content": "You are terse."}  # 1 + 4 tokens
USER = {"role": "user", "content": "Hello, world!"}  # 1 + 4 tokens


def chat(*messages: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": list(messages), **extra}


def test_chat_messages_follow_the_cookbook() -> None:
    expected = 2 * TOKENS_PER_MESSAGE + (1 + 4) + (1 + 4) + REPLY_PRIMING_TOKENS
    assert count_chat_input("gpt-4o", chat(SYSTEM, USER)) == TokenCount(expected, exact=True)
    named = {**USER, "name": "ann"}
    assert count_chat_input("gpt-4o", chat(named)).tokens == (
        TOKENS_PER_MESSAGE + 1 + 4 + count_text("gpt-4o", "ann").tokens + 1 + REPLY_PRIMING_TOKENS
    )


def test_chat_text_parts_count_like_strings() -> None:
    parts = {"role": "user", "content": [{"type": "text", "text": "Hello, world!"}]}
    assert count_chat_input("gpt-4o", chat(parts)) == count_chat_input("gpt-4o", chat(USER))


@pytest.mark.parametrize(
    ("model", "detail", "image_tokens"),
    [
        ("gpt-4o", "low", OPENAI_IMAGE_LOW_DETAIL_TOKENS),
        ("gpt-4o", "high", OPENAI_IMAGE_MAX_TOKENS),
        ("gpt-4o", None, OPENAI_IMAGE_MAX_TOKENS),
        ("gpt-4o-mini", "high", 2_833 + 8 * 5_667),
        ("gpt-4.1-nano", "low", 3_779),
    ],
)
def test_chat_images_are_counted_at_their_most(
    model: str, detail: str | None, image_tokens: int
) -> None:
    image: dict[str, Any] = {"url": "https://example.com/cat.png"}
    if detail:
        image["detail"] = detail
    message = {
        "role": "user",
        "content": [
            {"type": "text", "text": "Hello, world!"},
            {"type": "image_url", "image_url": image},
        ],
    }
    count = count_chat_input(model, chat(message))
    assert count.tokens == count_chat_input(model, chat(USER)).tokens + image_tokens
    assert not count.exact


def test_chat_tools_and_schemas_count_as_json_text() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    plain = count_chat_input("gpt-4o", chat(USER)).tokens
    with_tools = count_chat_input("gpt-4o", chat(USER, tools=[tool]))
    assert with_tools.tokens > plain + 10
    assert not with_tools.exact
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    assert count_chat_input("gpt-4o", chat(USER, response_format=schema)).tokens > plain
    assert count_chat_input("gpt-4o", chat(USER, response_format={"type": "text"})).tokens == plain


def test_chat_audio_and_files_count_by_size() -> None:
    audio = base64.b64encode(b"\0" * 5_000).decode()
    pdf = "data:application/pdf;base64," + base64.b64encode(b"%PDF" * 250).decode()
    message = {
        "role": "user",
        "content": [
            {"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}},
            {"type": "file", "file": {"file_data": pdf, "filename": "a.pdf"}},
            {"type": "file", "file": {"file_id": "file-123"}},
        ],
    }
    base = TOKENS_PER_MESSAGE + 1 + REPLY_PRIMING_TOKENS
    assert count_chat_input("gpt-4o", chat(message)) == TokenCount(
        base + 100 + 1_000 + UNKNOWN_ATTACHMENT_TOKENS, exact=False
    )


def test_chat_tool_calls_are_counted() -> None:
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
        ],
    }
    result = {"role": "tool", "tool_call_id": "c1", "content": "42"}
    count = count_chat_input("gpt-4o", chat(USER, call, result))
    assert count.tokens > count_chat_input("gpt-4o", chat(USER)).tokens + 2 * TOKENS_PER_MESSAGE


def test_chat_for_other_models_is_an_upper_bound() -> None:
    exact = count_chat_input("gpt-4o", chat(SYSTEM, USER))
    estimate = count_chat_input("gemini-2.5-flash", chat(SYSTEM, USER))
    assert not estimate.exact
    assert estimate.tokens > exact.tokens


# ------------------------------------------------------------------ OpenAI Responses


def test_responses_string_input_and_instructions() -> None:
    body = {"model": "gpt-5", "instructions": "You are terse.", "input": "Hello, world!"}
    expected = 4 + TOKENS_PER_MESSAGE + 4 + REPLY_PRIMING_TOKENS
    assert count_responses_input("gpt-5", body) == TokenCount(expected, exact=True)


def test_responses_items() -> None:
    body = {
        "model": "gpt-5",
        "input": [
            {"role": "user", "content": "Hello, world!"},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Hello, world!"},
                    {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
                ],
            },
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "42"},
        ],
        "tools": [{"type": "function", "name": "f", "parameters": {}}],
    }
    count = count_responses_input("gpt-5", body)
    floor = 2 * (TOKENS_PER_MESSAGE + 1 + 4) + OPENAI_IMAGE_LOW_DETAIL_TOKENS + REPLY_PRIMING_TOKENS
    assert count.tokens > floor + 1
    assert not count.exact


def test_responses_with_server_side_state_is_inexact() -> None:
    body = {"model": "gpt-5", "input": "Hello, world!", "previous_response_id": "resp_1"}
    count = count_responses_input("gpt-5", body)
    assert count == TokenCount(TOKENS_PER_MESSAGE + 4 + REPLY_PRIMING_TOKENS, exact=False)


# ------------------------------------------------------------------ Anthropic


def test_anthropic_text_is_estimated_from_o200k() -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "Hello, world!"}],
    }
    count = count_anthropic_input("claude-sonnet-4-5", body)
    system, hello = (
        count_text("claude-sonnet-4-5", t).tokens for t in ("You are terse.", "Hello, world!")
    )
    assert count == TokenCount(system + TOKENS_PER_MESSAGE + hello, exact=False)


def test_anthropic_blocks_images_documents_and_tools() -> None:
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
    }
    pdf = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "A" * 4_000},
    }
    body = {
        "system": [
            {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hello, world!"}, image, pdf]},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Let me look.", "signature": "sig"},
                    {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "x"}},
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [image]}],
            },
        ],
        "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
    }
    count = count_anthropic_input("claude-sonnet-4-5", body)
    fixed = (
        2 * ANTHROPIC_IMAGE_TOKENS + 3_000 + ANTHROPIC_TOOLS_SYSTEM_TOKENS + 3 * TOKENS_PER_MESSAGE
    )
    assert count.tokens > fixed
    assert not count.exact
    without_tools = count_anthropic_input("claude-sonnet-4-5", {**body, "tools": []})
    assert count.tokens - without_tools.tokens > ANTHROPIC_TOOLS_SYSTEM_TOKENS


def test_anthropic_defined_tools_count_the_definitions_anthropic_bills() -> None:
    """``{"type": "bash_20250124", "name": "bash"}`` is a few tokens of JSON, but Anthropic
    bills its own definition of the tool: 245 input tokens for bash, 700 for the text
    editor, 735 for computer use plus its system prompt (up to 499). The worst case must
    hold them, or a hard budget pays for more input than it reserved."""
    bare = {"messages": [{"role": "user", "content": "List the files."}]}
    custom = {"name": "lookup", "input_schema": {"type": "object"}}
    defined = [
        {"type": "bash_20250124", "name": "bash"},
        {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
        {
            "type": "computer_20250124",
            "name": "computer",
            "display_width_px": 1024,
            "display_height_px": 768,
        },
    ]
    with_custom = MESSAGES.input_counter("claude-sonnet-4-6", {**bare, "tools": [custom]})
    with_defined = MESSAGES.input_counter("claude-sonnet-4-6", {**bare, "tools": defined})
    without = MESSAGES.input_counter("claude-sonnet-4-6", bare)
    billed_extra = ANTHROPIC_TOOLS_SYSTEM_TOKENS + 245 + 700 + 735 + 499
    assert with_defined.tokens - without.tokens >= billed_extra
    assert not with_defined.exact
    assert with_custom.tokens - without.tokens < billed_extra  # a custom tool: its JSON


# ------------------------------------------------------------------ Embeddings


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ("Hello, world!", 4),
        (["Hello, world!", "Hello, world!"], 8),
        ([1, 2, 3], 3),
        ([[1, 2, 3], [4, 5]], 5),
        ([], 0),
    ],
)
def test_embedding_inputs(inputs: Any, expected: int) -> None:
    body = {"model": "text-embedding-3-small", "input": inputs}
    assert count_embedding_input("text-embedding-3-small", body) == TokenCount(expected, exact=True)


# ------------------------------------------------------------------ robustness

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["type", "text", "content", "role", "image_url", "source", "input", "x"]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(value=json_values, model=st.sampled_from(["gpt-4o", "claude-haiku-4-5", "gpt-4"]))
def test_counting_never_raises_on_odd_bodies(value: Any, model: str) -> None:
    body = {
        "messages": value,
        "input": value,
        "system": value,
        "tools": value,
        "instructions": value,
    }
    for counter in (
        count_chat_input,
        count_responses_input,
        count_anthropic_input,
        count_embedding_input,
    ):
        assert counter(model, body).tokens >= 0


def test_huge_integers_in_tools_do_not_break_counting() -> None:
    assert count_chat_input("gpt-4o", chat(USER, tools=[{"big": 10**30}])).tokens > 0


def test_module_imports_nothing_that_does_io() -> None:
    tree = ast.parse(Path(tokens.__file__).read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert not imported & {"os", "socket", "urllib", "http", "httpx", "aiohttp", "requests"}
