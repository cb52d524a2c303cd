"""Malformed bodies are refused like the real APIs refuse them: a 400 in the provider's
shape (never a 5xx), and nothing unbounded is allocated."""

from __future__ import annotations

import time
from typing import Any

import anthropic
import openai
import orjson
import pytest
from simhttp import Answer, Raw

from spendgate.simulator import parse_faults
from spendgate.simulator.thread import SimulatorThread
from spendgate.simulator.tokens import MAX_GENERATED_TOKENS, plan_output, value_tokens
from spendgate.simulator.validation import too_deep

CHAT: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
RESPONSES: dict[str, Any] = {"model": "gpt-4o-mini", "input": "hi"}
EMBED: dict[str, Any] = {"model": "text-embedding-3-small", "input": "hi"}
CLAUDE: dict[str, Any] = {
    "model": "claude-sonnet-4-6",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "hi"}],
}
# a Codex-style tool whose JSON schema has a property literally named "type"
SCHEMA_WITH_TYPE: dict[str, Any] = {
    "type": "object",
    "properties": {"type": {"type": "string"}, "path": {"type": "string"}},
    "required": ["type"],
}


def assert_openai_400(answer: Answer, param: str | None, code: str | None = None) -> None:
    assert answer.status == 400, answer.data
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    assert answer.headers["x-request-id"].startswith("req_")


def assert_anthropic_400(answer: Answer, fragment: str) -> None:
    assert answer.status == 400, answer.data
    body = answer.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert fragment in body["error"]["message"]
    assert body["request_id"] == answer.headers["request-id"]


CHAT_CASES: list[tuple[dict[str, Any], str | None, str | None]] = [
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "invalid_type"),
    ({"messages": [{"role": "user"}]}, "messages[0].content", "missing_required_parameter"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "invalid_value"),
    ({"messages": [7]}, "messages[0]", "invalid_type"),
    ({"messages": []}, "messages", "empty_array"),
    ({"messages": "hi"}, "messages", "invalid_type"),
    (
        {"messages": [{"role": "user", "content": [{"type": "video"}]}]},
        "messages[0].content[0].type",
        "invalid_value",
    ),
    ({"stream": "yes"}, "stream", "invalid_type"),
    ({"stream": "true"}, "stream", "invalid_type"),
    ({"stream": 1}, "stream", "invalid_type"),
    ({"stream": True, "stream_options": "usage"}, "stream_options", "invalid_type"),
    ({"tools": "get_weather"}, "tools", "invalid_type"),
    ({"tools": {"type": "function"}}, "tools", "invalid_type"),
    ({"tools": [{"type": "function"}]}, "tools[0].function", "invalid_type"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type", "invalid_value"),
    ({"max_tokens": 0}, "max_tokens", "integer_below_min_value"),
    ({"max_tokens": -5}, "max_tokens", "integer_below_min_value"),
    ({"max_tokens": 1.5}, "max_tokens", "invalid_type"),
    ({"max_tokens": "10"}, "max_tokens", "invalid_type"),
    ({"max_completion_tokens": 0}, "max_completion_tokens", "integer_below_min_value"),
    ({"max_completion_tokens": True}, "max_completion_tokens", "invalid_type"),
    ({"n": 0}, "n", "integer_below_min_value"),
    ({"n": 129}, "n", "integer_above_max_value"),
    ({"n": 10**12}, "n", "integer_above_max_value"),
    ({"n": "2"}, "n", "invalid_type"),
    ({"service_tier": "turbo"}, "service_tier", "invalid_value"),
    ({"model": 4}, "model", None),
]


@pytest.mark.parametrize(("change", "param", "code"), CHAT_CASES)
def test_chat_refusals(raw: Raw, change: dict[str, Any], param: str, code: str | None) -> None:
    assert_openai_400(raw.post("/v1/chat/completions", {**CHAT, **change}), param, code)


def test_chat_with_an_embedding_model_is_openais_404(raw: Raw, oai: openai.OpenAI) -> None:
    answer = raw.post("/v1/chat/completions", {**CHAT, "model": "text-embedding-3-small"})
    assert answer.status == 404
    assert answer.json()["error"]["message"].startswith("This is not a chat model")
    assert answer.json()["error"]["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="text-embedding-3-large", messages=CHAT["messages"])


RESPONSES_CASES: list[tuple[dict[str, Any], str | None, str | None]] = [
    ({"input": [1, 2]}, "input[0]", "invalid_type"),
    ({"input": 5}, "input", "invalid_type"),
    ({"input": [{"role": "user", "content": 5}]}, "input[0].content", "invalid_type"),
    ({"input": [{"role": "user", "content": [3]}]}, "input[0].content[0]", "invalid_type"),
    ({"input": [{"type": "item_reference"}]}, "input[0].id", "missing_required_parameter"),
    ({"stream": "true"}, "stream", "invalid_type"),
    ({"background": "yes"}, "background", "invalid_type"),
    ({"store": 0}, "store", "invalid_type"),
    ({"max_output_tokens": 0}, "max_output_tokens", "integer_below_min_value"),
    ({"max_output_tokens": 15}, "max_output_tokens", "integer_below_min_value"),
    ({"max_output_tokens": -3}, "max_output_tokens", "integer_below_min_value"),
    ({"max_output_tokens": 2.5}, "max_output_tokens", "invalid_type"),
    ({"tools": {}}, "tools", "invalid_type"),
    ({"tools": [5]}, "tools[0]", "invalid_type"),
    ({"model": "text-embedding-3-small"}, "model", "model_not_supported"),
    ({"service_tier": "cheap"}, "service_tier", "invalid_value"),
    ({"instructions": 5}, "instructions", "invalid_type"),
    ({"previous_response_id": 5}, "previous_response_id", "invalid_type"),
    ({"conversation": 5}, "conversation", "invalid_type"),
    ({"previous_response_id": "resp_1", "conversation": "conv_1"}, None, None),
    ({"background": True, "store": False}, "background", None),
]


@pytest.mark.parametrize(("change", "param", "code"), RESPONSES_CASES)
def test_responses_refusals(
    raw: Raw, change: dict[str, Any], param: str | None, code: str | None
) -> None:
    assert_openai_400(raw.post("/v1/responses", {**RESPONSES, **change}), param, code)


EMBEDDING_CASES: list[tuple[dict[str, Any], str | None, str | None]] = [
    ({"model": "gpt-4o-mini"}, "model", None),
    ({"dimensions": 5991993573}, "dimensions", "integer_above_max_value"),
    ({"dimensions": 1537}, "dimensions", "integer_above_max_value"),
    ({"model": "text-embedding-3-large", "dimensions": 3073}, "dimensions", None),
    ({"model": "text-embedding-ada-002", "dimensions": 8}, "dimensions", None),
    ({"dimensions": 0}, "dimensions", "integer_below_min_value"),
    ({"dimensions": "8"}, "dimensions", "invalid_type"),
    ({"encoding_format": "int8"}, "encoding_format", None),
    ({"input": ["a"] * 2049}, "input", None),
    ({"input": [[2**40]]}, "input", None),
    ({"input": [[-1]]}, "input", None),
    ({"input": [7, "x"]}, "input", None),
]


@pytest.mark.parametrize(("change", "param", "code"), EMBEDDING_CASES)
def test_embedding_refusals(
    raw: Raw, change: dict[str, Any], param: str | None, code: str | None
) -> None:
    assert_openai_400(raw.post("/v1/embeddings", {**EMBED, **change}), param, code)


def test_embedding_token_limits(raw: Raw) -> None:
    long_input = raw.post("/v1/embeddings", {**EMBED, "input": "abcd" * 8193})
    assert_openai_400(long_input, None, "context_length_exceeded")
    many = raw.post("/v1/embeddings", {**EMBED, "input": ["abcd" * 8000] * 40})
    assert_openai_400(many, None, "max_tokens_per_request")
    largest = raw.post(
        "/v1/embeddings", {**EMBED, "model": "text-embedding-3-large", "dimensions": 3072}
    )
    assert largest.status == 200
    assert len(largest.json()["data"][0]["embedding"]) == 3072


ANTHROPIC_CASES: list[tuple[dict[str, Any], str]] = [
    ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": [{"type": "video"}]}]}, "Input tag 'video'"),
    ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "discriminator 'type'"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]}, ".text"),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
    ({"messages": []}, "at least one message"),
    ({"messages": "hi"}, "messages: Input should be a valid list"),
    ({"system": 7}, "system"),
    ({"system": [{"type": "image"}]}, "system.0.type"),
    ({"system": [{"type": "text", "text": 1}]}, "system.0.text"),
    ({"thinking": {"type": "enabled", "budget_tokens": 100}}, "greater than or equal to 1024"),
    ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, "`max_tokens` must be greater"),
    (
        {"max_tokens": 2048, "thinking": {"type": "enabled", "budget_tokens": 2048}},
        "`max_tokens` must be greater",
    ),
    ({"thinking": {"type": "enabled", "budget_tokens": "2k"}}, "valid integer"),
    ({"thinking": {"type": "sometimes"}}, "thinking"),
    ({"stream": "yes"}, "stream: Input should be a valid boolean"),
    ({"stream": "true"}, "stream"),
    ({"stream": 1}, "stream"),
    ({"tools": "web_search"}, "tools: Input should be a valid list"),
    ({"tools": [5]}, "tools.0"),
    ({"tools": [{"name": "t"}]}, "tools.0.input_schema"),
    ({"tools": [{"type": "bogus"}]}, "Input tag 'bogus'"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 0}]}, "max_uses"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"max_tokens": "5"}, "max_tokens: Input should be a valid integer"),
    ({"max_tokens": 2.5}, "max_tokens"),
    ({"service_tier": "priority"}, "service_tier"),
    ({"model": None}, "model: Field required"),
    ({"model": 5}, "model"),
]


@pytest.mark.parametrize(("change", "fragment"), ANTHROPIC_CASES)
def test_anthropic_refusals(raw: Raw, change: dict[str, Any], fragment: str) -> None:
    assert_anthropic_400(raw.post("/v1/messages", {**CLAUDE, **change}), fragment)


def test_anthropic_refusals_reach_the_sdk(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=1024,
            messages=[{"role": "user", "content": "hi"}],
            thinking={"type": "enabled", "budget_tokens": 1024},
        )
    assert info.value.type == "invalid_request_error"
    assert "budget_tokens" in info.value.message


def test_interleaved_thinking_budget_may_exceed_max_tokens(raw: Raw) -> None:
    body = {**CLAUDE, "thinking": {"type": "enabled", "budget_tokens": 4096}}
    assert raw.post("/v1/messages", body).status == 400
    beta = "claude-code-20250219,interleaved-thinking-2025-05-14"
    assert raw.post("/v1/messages", body, anthropic_beta=beta).status == 200


def test_count_tokens_checks_the_body_but_not_max_tokens(raw: Raw) -> None:
    without_max = {k: v for k, v in CLAUDE.items() if k != "max_tokens"}
    assert raw.post("/v1/messages/count_tokens", without_max).status == 200
    bad = {**without_max, "system": 7}
    assert_anthropic_400(raw.post("/v1/messages/count_tokens", bad), "system")


def test_valid_extras_are_accepted(raw: Raw) -> None:
    thinking = {"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 1025}
    assert raw.post("/v1/messages", {**CLAUDE, **thinking}).status == 200
    adaptive = {"thinking": {"type": "adaptive"}, "service_tier": "standard_only"}
    assert raw.post("/v1/messages", {**CLAUDE, **adaptive}).status == 200
    blocks = [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}]
    assert raw.post("/v1/messages", {**CLAUDE, "system": blocks}).status == 200
    later = [{"role": "user", "content": "hi"}, {"role": "system", "content": "be brief"}]
    assert raw.post("/v1/messages", {**CLAUDE, "messages": later}).status == 200  # Claude Code
    assert raw.post("/v1/chat/completions", {**CHAT, "n": 128, "stream": None}).status == 200
    assistant = {"role": "assistant", "content": None, "tool_calls": []}
    assert raw.post("/v1/chat/completions", {**CHAT, "messages": [assistant]}).status == 200
    items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}]
    assert raw.post("/v1/responses", {**RESPONSES, "input": items}).status == 200


@pytest.mark.parametrize(
    "path", ["/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/messages"]
)
def test_too_deep_bodies_are_refused(raw: Raw, path: str) -> None:
    body = orjson.dumps({**CHAT, **RESPONSES, **CLAUDE})[:-1] + b',"metadata":'
    answer = raw.send("POST", path, raw=body + b"[" * 300 + b"]" * 300 + b"}")
    assert answer.status == 400
    assert "nested too deeply" in answer.data.decode()


def test_depth_is_counted_in_levels() -> None:
    assert too_deep([[[]]], limit=2)
    assert not too_deep([[[]]], limit=3)
    assert not too_deep({"a": {"b": 1}}, limit=2)
    assert too_deep({"a": {"b": {}}}, limit=2)
    nested = {"a": [[[1]]]}
    assert too_deep(nested, orjson.dumps(nested), limit=3)  # 4 brackets: walked
    assert not too_deep(nested, orjson.dumps(nested), limit=4)  # 4 brackets: not walked


def test_schema_properties_named_type_are_counted(raw: Raw, sim: SimulatorThread) -> None:
    """Codex sends tools whose JSON schema has a property named ``type``."""
    assert value_tokens(SCHEMA_WITH_TYPE) > 0
    codex_tool = {"type": "function", "name": "apply", "parameters": SCHEMA_WITH_TYPE}
    tools_body = {**RESPONSES, "tools": [codex_tool], "stream": True, "store": False}
    assert raw.post("/v1/responses", tools_body).status == 200
    chat_tool = {"type": "function", "function": {"name": "f", "parameters": SCHEMA_WITH_TYPE}}
    assert raw.post("/v1/chat/completions", {**CHAT, "tools": [chat_tool]}).status == 200
    claude_tool = {"name": "f", "input_schema": SCHEMA_WITH_TYPE}
    assert raw.post("/v1/messages", {**CLAUDE, "tools": [claude_tool]}).status == 200
    counted = raw.post("/v1/messages/count_tokens", {**CLAUDE, "tools": [claude_tool]})
    plain = raw.post("/v1/messages/count_tokens", CLAUDE)
    assert counted.json()["input_tokens"] > plain.json()["input_tokens"]


def test_generation_is_bounded() -> None:
    huge = parse_faults({"x-sim-output-tokens": "9" * 30, "x-sim-reasoning-tokens": "9" * 30})
    assert huge.output_tokens == 10**12
    plan = plan_output(seed=1, limit=None, faults=huge, low=20, high=60)
    assert plan.total == MAX_GENERATED_TOKENS
    assert not plan.truncated
    per_choice = plan_output(1, 10**15, huge, 20, 60, ceiling=MAX_GENERATED_TOKENS // 128)
    assert per_choice.total == MAX_GENERATED_TOKENS // 128


def test_huge_requests_stay_bounded(raw: Raw) -> None:
    started = time.perf_counter()
    answer = raw.post(
        "/v1/chat/completions",
        {**CHAT, "n": 100, "max_completion_tokens": 10**15},
        x_sim_output_tokens=str(10**15),
    )
    assert answer.status == 200
    usage = answer.json()["usage"]
    assert usage["completion_tokens"] == MAX_GENERATED_TOKENS
    claude = raw.post("/v1/messages", {**CLAUDE, "max_tokens": 10**15})
    assert claude.status == 200
    assert claude.json()["usage"]["output_tokens"] <= 60
    assert time.perf_counter() - started < 30
