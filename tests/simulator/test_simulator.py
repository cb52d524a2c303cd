"""The simulator driven by the real `openai` and `anthropic` SDKs (happy paths)."""

from __future__ import annotations

import base64
import math
from typing import Any

import anthropic
import openai
import pytest

from spendgate.simulator.thread import SimulatorThread

MESSAGES: list[Any] = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "Tell me about spend limits."},
]
CLAUDE_MESSAGES: list[Any] = [{"role": "user", "content": "Tell me about spend limits."}]


def words(text: str) -> int:
    """Generated text is one token per word."""
    return len(text.split())


def test_chat_non_stream(sim: SimulatorThread, oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    usage = completion.usage
    assert usage is not None
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.choices[0].finish_reason == "stop"
    content = completion.choices[0].message.content or ""
    assert 20 <= words(content) <= 60
    assert usage.completion_tokens == words(content)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 0
    record = sim.records[-1]
    assert completion._request_id == record.request_id
    assert record.request_id.startswith("req_")
    assert record.path == "/v1/chat/completions"
    assert record.headers["authorization"] == "Bearer sk-upstream"
    assert record.body["messages"] == MESSAGES
    assert record.raw_body.startswith(b"{")
    assert record.usage_reported == usage.model_dump(exclude_none=True)
    assert record.completed
    assert not record.stream
    assert record.output_tokens == usage.completion_tokens
    assert record.input_tokens == usage.prompt_tokens


def test_chat_is_deterministic(oai: openai.OpenAI) -> None:
    first = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    second = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.usage == second.usage


def test_chat_n_choices(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, n=3)
    assert [choice.index for choice in completion.choices] == [0, 1, 2]
    total = sum(words(choice.message.content or "") for choice in completion.choices)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == total


def test_chat_stream_with_usage(sim: SimulatorThread, oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert sim.wait_idle()
    *content_chunks, usage_chunk = chunks
    assert content_chunks[0].choices[0].delta.role == "assistant"
    assert content_chunks[-1].choices[0].finish_reason == "stop"
    assert all(chunk.usage is None for chunk in content_chunks)
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    text = "".join(chunk.choices[0].delta.content or "" for chunk in content_chunks)
    assert usage_chunk.usage.completion_tokens == words(text)
    record = sim.records[-1]
    assert record.stream
    assert record.completed
    assert record.chunks_sent == len(chunks) + 1  # + data: [DONE]
    assert record.usage_reported == usage_chunk.usage.model_dump(exclude_none=True)
    assert record.output_tokens_sent == record.output_tokens == words(text)


def test_chat_stream_without_usage(sim: SimulatorThread, oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)
    record = sim.records[-1]
    assert record.usage_reported is None
    assert record.output_tokens > 0


def test_chat_stream_helper(oai: openai.OpenAI) -> None:
    with oai.chat.completions.stream(
        model="gpt-4o-mini", messages=MESSAGES, stream_options={"include_usage": True}
    ) as stream:
        final = stream.get_final_completion()
    content = final.choices[0].message.content or ""
    assert final.usage is not None
    assert final.usage.completion_tokens == words(content)
    assert final.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("field", ["max_completion_tokens", "max_tokens"])
def test_chat_max_tokens_cut(oai: openai.OpenAI, field: str) -> None:
    limit: dict[str, Any] = {field: 7}
    completion = oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, **limit)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 7
    assert words(completion.choices[0].message.content or "") == 7


def test_chat_stream_max_tokens_cut(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        max_completion_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5


def test_responses_non_stream(sim: SimulatorThread, oai: openai.OpenAI) -> None:
    response = oai.responses.create(model="gpt-4o-mini", input="hello", instructions="be brief")
    assert response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.usage is not None
    assert response.usage.output_tokens == words(response.output_text)
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert response.usage.input_tokens_details.cached_tokens == 0
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    assert response._request_id == sim.records[-1].request_id
    assert sim.records[-1].usage_reported == response.usage.model_dump(exclude_none=True)


def test_responses_max_output_tokens(oai: openai.OpenAI) -> None:
    response = oai.responses.create(model="gpt-4o-mini", input="hello", max_output_tokens=16)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None
    assert response.usage.output_tokens == 16 == words(response.output_text)


EXPECTED_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def test_responses_stream(sim: SimulatorThread, oai: openai.OpenAI) -> None:
    events = list(oai.responses.create(model="gpt-4o-mini", input="hello", stream=True))
    assert sim.wait_idle()
    kinds = [event.type for event in events]
    deltas = kinds.count("response.output_text.delta")
    assert deltas > 1
    collapsed = [k for i, k in enumerate(kinds) if k != "response.output_text.delta" or i == 4]
    assert collapsed == EXPECTED_EVENTS
    assert [event.sequence_number for event in events] == list(range(len(events)))
    completed = events[-1]
    assert completed.type == "response.completed"
    usage = completed.response.usage
    assert usage is not None
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert usage.output_tokens == words(text)
    assert sim.records[-1].usage_reported == usage.model_dump(exclude_none=True)
    assert sim.records[-1].chunks_sent == len(events)


def test_responses_stream_helper(oai: openai.OpenAI) -> None:
    with oai.responses.stream(model="gpt-4o-mini", input="hello") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert final.output_text == text
    assert final.usage is not None
    assert final.usage.output_tokens == words(text)


def test_responses_stream_incomplete(oai: openai.OpenAI) -> None:
    events = list(
        oai.responses.create(model="gpt-4o-mini", input="hi", max_output_tokens=16, stream=True)
    )
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.usage is not None
    assert last.response.usage.output_tokens == 16


def test_responses_stream_incomplete_for_a_content_filter(oai: openai.OpenAI) -> None:
    headers = {"x-sim-incomplete-reason": "content_filter", "x-sim-output-tokens": "9"}
    events = list(
        oai.responses.create(model="o4-mini", input="hi", stream=True, extra_headers=headers)
    )
    done = [e for e in events if e.type == "response.output_item.done"]
    assert [e.item.status for e in done] == ["incomplete"]  # type: ignore[union-attr]
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "content_filter"
    assert last.response.usage is not None
    assert last.response.usage.output_tokens == 9


def test_responses_input_tokens(oai: openai.OpenAI) -> None:
    counted = oai.responses.input_tokens.count(model="gpt-4o-mini", input="hello")
    created = oai.responses.create(model="gpt-4o-mini", input="hello")
    assert created.usage is not None
    assert counted.input_tokens == created.usage.input_tokens


def test_embeddings_base64_default(sim: SimulatorThread, oai: openai.OpenAI) -> None:
    result = oai.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])
    assert sim.records[-1].body["encoding_format"] == "base64"
    assert [item.index for item in result.data] == [0, 1]
    vector = result.data[0].embedding
    assert len(vector) == 1536
    assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-4)
    assert result.usage.prompt_tokens == result.usage.total_tokens == 3  # ceil(5/4) + 1
    again = oai.embeddings.create(model="text-embedding-3-small", input="alpha")
    assert again.data[0].embedding == vector
    raw = sim.records[-1]
    assert raw.usage_reported == {"prompt_tokens": 2, "total_tokens": 2}


def test_embeddings_float_dimensions_tokens(oai: openai.OpenAI) -> None:
    floats = oai.embeddings.create(
        model="text-embedding-3-small", input="alpha", encoding_format="float", dimensions=8
    )
    assert len(floats.data[0].embedding) == 8
    encoded = oai.embeddings.create(
        model="text-embedding-3-small", input="alpha", encoding_format="base64", dimensions=8
    )
    packed = base64.b64decode(str(encoded.data[0].embedding))
    assert len(packed) == 8 * 4
    tokens = oai.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3], [4, 5]])
    assert tokens.usage.prompt_tokens == 5


def test_models(oai: openai.OpenAI) -> None:
    ids = [model.id for model in oai.models.list()]
    assert "gpt-4o-mini" in ids


def test_anthropic_non_stream(sim: SimulatorThread, claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model="claude-sonnet-4-6", max_tokens=1000, system="be brief", messages=CLAUDE_MESSAGES
    )
    assert message.id.startswith("msg_")
    assert message.stop_reason == "end_turn"
    block = message.content[0]
    assert block.type == "text"
    assert message.usage.output_tokens == words(block.text)
    assert message.usage.cache_read_input_tokens == 0
    record = sim.records[-1]
    assert message._request_id == record.request_id
    assert record.usage_reported is not None
    assert record.usage_reported.items() <= message.usage.model_dump().items()
    assert record.input_tokens == message.usage.input_tokens


def test_anthropic_max_tokens(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model="claude-sonnet-4-6", max_tokens=3, messages=CLAUDE_MESSAGES
    )
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3


def test_anthropic_stream_final_message(sim: SimulatorThread, claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="claude-sonnet-4-6", max_tokens=1000, messages=CLAUDE_MESSAGES
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert sim.wait_idle()
    assert final.content[0].type == "text"
    assert final.content[0].text == text
    assert final.usage.output_tokens == words(text)
    assert final.stop_reason == "end_turn"
    record = sim.records[-1]
    assert record.stream
    assert record.completed
    assert record.usage_reported is not None
    assert record.usage_reported["output_tokens"] == final.usage.output_tokens
    assert record.usage_reported["input_tokens"] == final.usage.input_tokens


def test_anthropic_raw_stream_events(claude: anthropic.Anthropic) -> None:
    events = list(
        claude.messages.create(
            model="claude-sonnet-4-6", max_tokens=1000, messages=CLAUDE_MESSAGES, stream=True
        )
    )
    kinds = [event.type for event in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start = events[0]
    assert start.type == "message_start"
    assert start.message.usage.output_tokens == 1


def test_anthropic_thinking_block(claude: anthropic.Anthropic) -> None:
    headers = {"x-sim-reasoning-tokens": "12"}
    with claude.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=2000,
        messages=CLAUDE_MESSAGES,
        extra_headers=headers,
    ) as stream:
        final = stream.get_final_message()
    thinking, text = final.content
    assert thinking.type == "thinking"
    assert words(thinking.thinking) == 12
    assert text.type == "text"
    assert final.usage.output_tokens == 12 + words(text.text)


def test_anthropic_count_tokens(claude: anthropic.Anthropic) -> None:
    counted = claude.messages.count_tokens(model="claude-sonnet-4-6", messages=CLAUDE_MESSAGES)
    message = claude.messages.create(
        model="claude-sonnet-4-6", max_tokens=50, messages=CLAUDE_MESSAGES
    )
    assert counted.input_tokens == message.usage.input_tokens > 0
