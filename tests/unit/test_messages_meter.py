"""The Anthropic Messages stream meter: which server tool calls a stream that ended early
is charged for (the closing ``message_delta``, which alone counts them, never came)."""

from __future__ import annotations

from typing import Any

from spendgate.dialects.anthropic import MessagesMeter
from spendgate.dialects.base import sse_event
from spendgate.upstream.sse import EventSplitter

START_USAGE = {
    "input_tokens": 20,
    "output_tokens": 1,
    "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
}


def feed(meter: MessagesMeter, *events: dict[str, Any]) -> None:
    splitter = EventSplitter()
    for event in events:
        for parsed in splitter.feed(sse_event(event, event["type"])):
            meter.feed(parsed)


def block(index: int, content_block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": content_block}


def use(index: int, name: str) -> dict[str, Any]:
    return block(index, {"type": "server_tool_use", "id": f"u{index}", "name": name, "input": {}})


def result(index: int, kind: str, content: Any) -> dict[str, Any]:
    return block(index, {"type": kind, "tool_use_id": f"u{index - 1}", "content": content})


def started() -> MessagesMeter:
    meter = MessagesMeter()
    message = {"type": "message", "model": "claude-sonnet-4-6", "usage": START_USAGE}
    feed(meter, {"type": "message_start", "message": message})
    return meter


def test_a_call_is_charged_once_its_result_went_by_and_not_when_it_failed() -> None:
    meter = started()
    feed(
        meter,
        use(0, "web_search"),
        result(1, "web_search_tool_result", [{"type": "web_search_result", "url": "u"}]),
        use(2, "web_fetch"),
        result(3, "web_fetch_tool_result", {"type": "web_fetch_result", "url": "u"}),
        use(4, "web_search"),  # failed: not billed
        result(
            5,
            "web_search_tool_result",
            {"type": "web_search_tool_result_error", "error_code": "max_uses_exceeded"},
        ),
        use(6, "web_search"),  # cut before its result: not known to have run
    )
    usage = meter.usage()
    assert usage is not None
    assert usage.tool_calls == (("web_search", 1), ("web_fetch", 1))
    assert usage.input_tokens == 20


def test_the_closing_count_is_the_bill_once_it_came() -> None:
    meter = started()
    found = [{"type": "web_search_result", "url": "u"}]
    delta_usage = {"output_tokens": 40, "server_tool_use": {"web_search_requests": 3}}
    feed(
        meter,
        use(0, "web_search"),
        result(1, "web_search_tool_result", found),
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": delta_usage},
        {"type": "message_stop"},
    )
    usage = meter.usage()
    assert meter.finished
    assert usage is not None
    assert usage.tool_calls == (("web_search", 3),)  # the provider's count, not ours
    assert usage.output_tokens == 40


def test_results_without_any_usage_are_still_counted() -> None:
    meter = MessagesMeter()
    found = [{"type": "web_search_result", "url": "u"}]
    feed(meter, use(0, "web_search"), result(1, "web_search_tool_result", found))
    usage = meter.usage()
    assert usage is not None
    assert usage.tool_calls == (("web_search", 1),)
    assert usage.input_tokens == usage.output_tokens == 0  # (the relay estimates those)
