"""Property: whatever the body, the simulator answers 2xx or a provider-shaped 4xx, never 5xx."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from simhttp import Answer, Raw

SCHEMA = {"type": "object", "properties": {"type": {"type": "string"}}}
CODEX_TOOL = {"type": "function", "name": "shell", "parameters": SCHEMA}
CHAT_TOOL = {"type": "function", "function": {"name": "f", "parameters": SCHEMA}}
CLAUDE_TOOLS = [
    {"name": "f", "input_schema": SCHEMA},
    {"type": "web_search_20250305", "name": "web_search", "max_uses": 2},
    {"type": "web_fetch_20250910", "name": "web_fetch", "max_content_tokens": 100},
    {"type": "code_execution_20250825", "name": "code_execution"},
]
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _part(kinds: list[str]) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries({"type": st.sampled_from(kinds)}, optional={"text": json_values})


def _messages(roles: list[str], kinds: list[str]) -> st.SearchStrategy[Any]:
    content = st.one_of(json_values, st.lists(_part(kinds) | json_values, max_size=3))
    message = st.fixed_dictionaries({"role": st.sampled_from(roles)}, optional={"content": content})
    return st.lists(message | json_values, max_size=3)


PLAUSIBLE: dict[str, list[Any]] = {
    "stream": [True, False, "true", 1, None],
    "n": [1, 2, 128, 0, 129],
    "max_tokens": [1, 16, 10**9, 0, -1, 1024],
    "max_completion_tokens": [1, 16, 0, 2.5],
    "max_output_tokens": [1, 16, 0],
    "tools": [[CHAT_TOOL], [CODEX_TOOL], CLAUDE_TOOLS, "x", []],
    "service_tier": ["auto", "default", "flex", "priority", "standard_only", "x"],
    "stream_options": [{"include_usage": True}, "x"],
    "background": [True, False],
    "store": [True, False],
    "previous_response_id": ["resp_missing", 5],
    "conversation": ["conv_missing", {"id": "conv_missing"}, 5],
    "thinking": [
        {"type": "enabled", "budget_tokens": 1024},
        {"type": "enabled", "budget_tokens": 10**6},
        {"type": "adaptive"},
        {"type": "enabled"},
    ],
    "system": ["be brief", [{"type": "text", "text": "x"}], 7, [{"type": "image"}]],
    "dimensions": [8, 1536, 5991993573, 0, "8"],
    "encoding_format": ["float", "base64", "x"],
    "input": ["hi", [1, 2], [[1, 2]], ["a", "b"], [{"role": "user", "content": "x"}], []],
    "model": ["gpt-4o-mini", "text-embedding-3-small", "claude-sonnet-4-6", 4, ""],
}


def _value(field: str) -> st.SearchStrategy[Any]:
    plausible = PLAUSIBLE.get(field)
    return json_values if plausible is None else st.sampled_from(plausible) | json_values


def bodies(base: dict[str, Any], fields: list[str], **special: Any) -> st.SearchStrategy[Any]:
    """``base`` with some fields dropped, some replaced by plausible or random values."""
    changes = st.fixed_dictionaries({}, optional={f: _value(f) for f in fields} | special)
    dropped = st.sets(st.sampled_from(sorted(base)), max_size=2)
    return st.builds(
        lambda change, gone: {k: v for k, v in base.items() if k not in gone} | change,
        changes,
        dropped,
    )


def assert_sane(answer: Answer, anthropic_shape: bool) -> None:
    event(f"status {answer.status}")  # --hypothesis-show-statistics
    assert answer.status < 500, answer.data[:500]
    if answer.status < 400:
        return
    body = answer.json()
    if anthropic_shape:
        assert body["type"] == "error"
        assert set(body["error"]) == {"type", "message"}
    else:
        assert set(body["error"]) == {"message", "type", "param", "code"}


CHAT_FIELDS = ["stream", "n", "max_tokens", "max_completion_tokens", "tools", "service_tier"]
CHAT_FIELDS += ["stream_options", "model", "messages", "functions"]
CHAT_BASE = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
CHAT_MESSAGES = _messages(["user", "system", "assistant", "tool", "x"], ["text", "image_url", "x"])


@FUZZ
@given(body=bodies(CHAT_BASE, CHAT_FIELDS, messages=CHAT_MESSAGES))
def test_fuzz_chat(raw: Raw, body: dict[str, Any]) -> None:
    assert_sane(raw.post("/v1/chat/completions", body), anthropic_shape=False)


RESPONSES_FIELDS = ["stream", "input", "max_output_tokens", "tools", "service_tier", "model"]
RESPONSES_FIELDS += ["background", "store", "previous_response_id", "conversation"]
RESPONSES_FIELDS += ["instructions", "text", "metadata"]
RESPONSES_BASE = {"model": "gpt-4o-mini", "input": "hi"}
RESPONSES_INPUT = _messages(["user", "assistant", "developer"], ["input_text", "item_reference"])


@FUZZ
@given(body=bodies(RESPONSES_BASE, RESPONSES_FIELDS, input=RESPONSES_INPUT))
def test_fuzz_responses(raw: Raw, body: dict[str, Any]) -> None:
    assert_sane(raw.post("/v1/responses", body), anthropic_shape=False)
    assert_sane(raw.post("/v1/responses/input_tokens", body), anthropic_shape=False)


EMBED_FIELDS = ["model", "input", "dimensions", "encoding_format", "user"]
EMBED_BASE = {"model": "text-embedding-3-small", "input": "hi"}


@FUZZ
@given(body=bodies(EMBED_BASE, EMBED_FIELDS))
def test_fuzz_embeddings(raw: Raw, body: dict[str, Any]) -> None:
    assert_sane(raw.post("/v1/embeddings", body), anthropic_shape=False)


CLAUDE_FIELDS = ["model", "messages", "max_tokens", "stream", "system", "tools", "thinking"]
CLAUDE_FIELDS += ["service_tier", "metadata", "tool_choice"]
CLAUDE_BASE = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "hi"}],
}
CLAUDE_MESSAGES = _messages(
    ["user", "assistant", "system"], ["text", "image", "tool_result", "web_search_tool_result", "x"]
)


@FUZZ
@given(body=bodies(CLAUDE_BASE, CLAUDE_FIELDS, messages=CLAUDE_MESSAGES))
def test_fuzz_messages(raw: Raw, body: dict[str, Any]) -> None:
    assert_sane(raw.post("/v1/messages", body), anthropic_shape=True)
    assert_sane(raw.post("/v1/messages/count_tokens", body), anthropic_shape=True)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/embeddings",
        "/v1/messages",
        "/v1/conversations",
    ],
)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=64) | json_values.map(orjson.dumps))
def test_fuzz_raw_bytes(raw: Raw, path: str, data: bytes) -> None:
    assert_sane(raw.send("POST", path, raw=data), anthropic_shape=path == "/v1/messages")
