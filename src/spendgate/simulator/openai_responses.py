"""``POST /v1/responses`` and ``POST /v1/responses/input_tokens`` (CLIENTS.md §3)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import records, wire
from .streaming import Event, stream_events
from .tokens import (
    InputPlan,
    OutputPlan,
    chunk_text,
    generate_text,
    plan_input,
    prompt_seed,
    responses_input_tokens,
)
from .validation import check_responses

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from aiohttp import web

    from .context import Call

_ECHOED: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "prompt_cache_key": None,
    "reasoning": {"effort": None, "summary": None},
    "store": True,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}, "verbosity": "medium"},
    "tool_choice": "auto",
    "tools": [],
    "top_p": 1.0,
    "truncation": "disabled",
    "user": None,
}


def responses_usage(inputs: InputPlan, output: OutputPlan) -> dict[str, Any]:
    return {
        "input_tokens": inputs.total,
        "input_tokens_details": {
            "cached_tokens": inputs.cached,
            "cache_write_tokens": inputs.cache_write,
        },
        "output_tokens": output.total,
        "output_tokens_details": {"reasoning_tokens": output.reasoning},
        "total_tokens": inputs.total + output.total,
    }


def mid_stream_error(sent: int) -> bytes:
    return wire.named_event(
        "error",
        {
            "type": "error",
            "code": "server_error",
            "message": "The server had an error while processing your request. (simulated)",
            "param": None,
            "sequence_number": sent,
        },
    )


class _Response:
    """The planned answer of one Responses request, in both answer forms."""

    def __init__(self, call: Call) -> None:
        body = call.body
        self.call = call
        self.id = wire.new_id("resp_")
        self.message_id = wire.new_id("msg_")
        self.reasoning_id = wire.new_id("rs_")
        self.created = wire.now()
        self.inputs = plan_input(responses_input_tokens(body), call.faults)
        seed = prompt_seed(body.get("instructions"), body.get("input"))
        self.plan = call.plan_output_for(seed, call.output_limit("max_output_tokens"))
        self.words = generate_text(seed, self.plan.text)
        self.text = "".join(self.words)
        self.usage = None if call.faults.no_usage else responses_usage(self.inputs, self.plan)
        call.account(self.inputs, self.plan.total)

    @property
    def final_status(self) -> str:
        return "incomplete" if self.plan.truncated else "completed"

    def snapshot(self, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        body = self.call.body
        payload: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": None,
            "model": body["model"],
            "output": output,
            "service_tier": "default",
        }
        for key, default in _ECHOED.items():
            payload[key] = body.get(key, default)
        if status == "incomplete":
            payload["incomplete_details"] = {"reason": "max_output_tokens"}
        if status in ("completed", "incomplete") and self.usage is not None:
            payload["usage"] = self.usage
        elif status == "in_progress":
            payload["usage"] = None
        return payload

    def reasoning_item(self) -> dict[str, Any]:
        return {"id": self.reasoning_id, "type": "reasoning", "summary": []}

    def text_part(self, text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def message_item(self, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    def output(self) -> list[dict[str, Any]]:
        items = [self.reasoning_item()] if self.plan.reasoning else []
        items.append(self.message_item(self.final_status, [self.text_part(self.text)]))
        return items

    def final(self) -> dict[str, Any]:
        return self.snapshot(self.final_status, self.output())

    def events(self) -> Iterator[Event]:
        sequence = 0

        def event(kind: str, tokens: int = 0, **fields: Any) -> Event:
            nonlocal sequence
            payload = {"type": kind, "sequence_number": sequence, **fields}
            sequence += 1
            return Event(wire.named_event(kind, payload), tokens)

        yield event("response.created", response=self.snapshot("in_progress", []))
        yield event("response.in_progress", response=self.snapshot("in_progress", []))
        index = 0
        if self.plan.reasoning:
            item = self.reasoning_item()
            yield event("response.output_item.added", output_index=0, item=item)
            yield event("response.output_item.done", self.plan.reasoning, output_index=0, item=item)
            index = 1
        yield from self._message_events(event, index)
        final = self.final()
        done = event(f"response.{self.final_status}", response=final)
        yield Event(done.data, usage=self.usage)

    def _message_events(self, event: Callable[..., Event], index: int) -> Iterator[Event]:
        where = {"item_id": self.message_id, "output_index": index, "content_index": 0}
        item = self.message_item("in_progress", [])
        yield event("response.output_item.added", output_index=index, item=item)
        yield event("response.content_part.added", **where, part=self.text_part(""))
        for text, count in chunk_text(self.words, self.call.options.tokens_per_chunk):
            yield event("response.output_text.delta", count, **where, delta=text, logprobs=[])
        yield event("response.output_text.done", **where, text=self.text, logprobs=[])
        part = self.text_part(self.text)
        yield event("response.content_part.done", **where, part=part)
        item = self.message_item(self.final_status, [part])
        yield event("response.output_item.done", output_index=index, item=item)


async def create_response(call: Call) -> web.StreamResponse:
    problem = check_responses(call.body)
    if problem:
        return call.error(400, problem)
    answer = _Response(call)
    if call.body.get("stream") is True:
        return await stream_events(call, answer.events(), mid_stream_error)
    call.record.usage_reported = answer.usage
    call.record.output_tokens_sent = call.record.output_tokens
    call.record.finish(records.OK)
    return call.json(answer.final())


async def input_tokens(call: Call) -> web.StreamResponse:
    """``client.responses.input_tokens.count(...)``."""
    count = responses_input_tokens(call.body)
    call.record.input_tokens = count
    call.record.finish(records.OK)
    return call.json({"object": "response.input_tokens", "input_tokens": count})
