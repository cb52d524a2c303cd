"""How a clamped answer's ceiling stop is told to a coding agent (`spendgate.dialects.agents`):
each dialect's stop rewritten, in stream events (LF or CRLF framed) and whole answers, and
everything else left byte for byte."""

from __future__ import annotations

import orjson
import pytest

from spendgate.dialects import CHAT, MESSAGES, RESPONSES
from spendgate.dialects.agents import CLAUDE_CODE, CODEX, coding_agent


def event(name: str | None, data: dict[str, object], sep: bytes = b"\n") -> bytes:
    head = f"event: {name}".encode() + sep if name else b""
    return head + b"data: " + orjson.dumps(data) + sep + sep


def data_of(raw: bytes) -> dict[str, object]:
    [line] = [line for line in raw.splitlines() if line.startswith(b"data:")]
    return orjson.loads(line[5:])  # type: ignore[no-any-return]


@pytest.mark.parametrize("sep", [b"\n", b"\r\n"])
def test_messages_stream_stop_becomes_end_turn(sep: bytes) -> None:
    delta = {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {}}
    told = MESSAGES.end_turn(event("message_delta", delta, sep))
    assert told.startswith(b"event: message_delta\n")
    assert data_of(told)["delta"] == {"stop_reason": "end_turn"}
    untouched = event(
        "message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}
    )
    assert MESSAGES.end_turn(untouched) is untouched
    text = event(
        "content_block_delta", {"type": "content_block_delta", "delta": {"text": "max_tokens"}}
    )
    assert MESSAGES.end_turn(text) == text  # the word in the text is not a stop


def test_whole_answers_are_rewritten_too() -> None:
    answer = orjson.dumps({"type": "message", "stop_reason": "max_tokens", "content": []})
    assert orjson.loads(MESSAGES.end_turn(answer))["stop_reason"] == "end_turn"
    chat = orjson.dumps({"choices": [{"index": 0, "finish_reason": "length"}]})
    assert orjson.loads(CHAT.end_turn(chat))["choices"][0]["finish_reason"] == "stop"
    response = orjson.dumps(
        {
            "status": "incomplete",
            "incomplete_details": {"reason": "max_output_tokens"},
            "output": [{"type": "message", "status": "incomplete"}],
        }
    )
    told = orjson.loads(RESPONSES.end_turn(response))
    assert told["status"] == "completed"
    assert told["incomplete_details"] is None
    assert told["output"][0]["status"] == "completed"


def test_responses_stream_incomplete_becomes_completed() -> None:
    final = {
        "type": "response.incomplete",
        "response": {
            "status": "incomplete",
            "incomplete_details": {"reason": "max_output_tokens"},
            "output": [{"type": "message", "status": "incomplete"}],
        },
    }
    told = RESPONSES.end_turn(event("response.incomplete", final))
    assert told.startswith(b"event: response.completed\n")
    data = data_of(told)
    assert data["type"] == "response.completed"
    assert data["response"] == {
        "status": "completed",
        "incomplete_details": None,
        "output": [{"type": "message", "status": "completed"}],
    }
    done = {
        "type": "response.output_item.done",
        "item": {"type": "message", "status": "incomplete"},
    }
    assert data_of(RESPONSES.end_turn(event("response.output_item.done", done)))["item"] == {
        "type": "message",
        "status": "completed",
    }
    other = {"status": "incomplete", "incomplete_details": {"reason": "content_filter"}}
    raw = orjson.dumps(other)
    assert RESPONSES.end_turn(raw) == raw  # only the ceiling's stop
    filtered = event("response.incomplete", {"type": "response.incomplete", "response": other})
    assert RESPONSES.end_turn(filtered) == filtered  # streamed: not told as completed either


def test_the_agents_are_recognised_by_their_headers() -> None:
    assert coding_agent({"user-agent": "claude-cli/2.1.328 (external, sdk-cli)"}) == CLAUDE_CODE
    assert coding_agent({"x-app": "cli"}) == CLAUDE_CODE
    assert coding_agent({"originator": "codex_exec"}) == CODEX
    assert coding_agent({"user-agent": "codex_exec/0.169.0 (Linux)"}) == CODEX
    assert coding_agent({"user-agent": "OpenAI/Python 1.109.0"}) is None
    assert coding_agent({}) is None


def test_responses_items_kept_back_are_told_by_the_stream_end() -> None:
    """An incomplete item's ``response.output_item.done`` comes before the terminal event:
    it waits for it, and is told completed only when that event stopped at the ceiling."""
    item = event(
        "response.output_item.done",
        {"type": "response.output_item.done", "item": {"type": "message", "status": "incomplete"}},
    )
    assert RESPONSES.end_turn_waits(item)
    assert not RESPONSES.end_turn_waits(event("response.output_text.delta", {"delta": "x"}))
    assert not CHAT.end_turn_waits(item)

    def final(reason: str) -> bytes:
        response = {"status": "incomplete", "incomplete_details": {"reason": reason}}
        return event("response.incomplete", {"type": "response.incomplete", "response": response})

    filtered = [item, final("content_filter")]
    assert RESPONSES.end_turn_all(filtered) == b"".join(filtered)
    assert RESPONSES.end_turn_all([item]) == item  # broke off: no stop to tell
    told = RESPONSES.end_turn_all([item, final("max_output_tokens")])
    assert told.count(b'"status":"completed"') == 2
    assert b"event: response.completed\n" in told
