"""``POST /v1/responses`` and ``POST /v1/responses/input_tokens`` (CLIENTS.md §3).

Responses are stored (unless ``store: false``) and billed with the server-side context
they name, as `responses_state` describes; ``background: true`` runs them as jobs
(`background`). The reported ``service_tier`` follows `reporting`. A ``tool_choice`` that
names a custom tool (``{"type": "custom", "name": "apply_patch"}``, Codex's freeform
tools) is answered with a ``custom_tool_call`` whose ``input`` is the generated text,
streamed as ``response.custom_tool_call_input.delta`` events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import records, wire
from .background import start_job
from .reporting import openai_tier
from .responses_state import Context, remember, resolve_context
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
from .validation import Problem
from .validation_openai import check_responses

if TYPE_CHECKING:
    from collections.abc import Iterator

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
FINAL_STATUSES = frozenset({"completed", "incomplete", "cancelled", "failed"})


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


mid_stream_error = wire.responses_error_event


class ResponseAnswer:
    """The planned answer of one Responses request, in every answer form."""

    def __init__(self, call: Call, context: Context) -> None:
        body = call.body
        self.call = call
        self.id = wire.new_id("resp_")
        self.message_id = wire.new_id("msg_")
        self.reasoning_id = wire.new_id("rs_")
        self.created = wire.now()
        self.background = body.get("background") is True
        self.context = context
        self.own_input = responses_input_tokens(body) + context.references
        self.inputs = plan_input(self.own_input + context.tokens, call.faults)
        seed = prompt_seed(body.get("instructions"), body.get("input"))
        self.plan = call.plan_output_for(seed, call.output_limit("max_output_tokens"))
        self.words = generate_text(seed, self.plan.text)
        self.text = "".join(self.words)
        self.usage = call.report_usage(responses_usage(self.inputs, self.plan))
        self.tier = openai_tier(body.get("service_tier"), call.faults.service_tier)
        choice = body.get("tool_choice")
        self.custom_tool: str | None = None
        if isinstance(choice, dict) and choice.get("type") == "custom":
            self.custom_tool = str(choice.get("name") or "custom")
        self.call_id = wire.new_id("call_")
        self._sequence = 0
        self._account()

    def _account(self) -> None:
        record = self.call.record
        self.call.account(self.inputs, self.plan.total)
        record.context_input_tokens = self.context.tokens + self.context.references
        record.service_tier = self.tier
        record.response_id = self.id
        record.response_status = "queued" if self.background else self.final_status

    @property
    def final_status(self) -> str:
        stopped = self.plan.truncated or self.call.faults.incomplete_reason
        return "incomplete" if stopped else "completed"

    def snapshot(
        self, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        body = self.call.body
        payload: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "background": self.background,
            "error": None,
            "incomplete_details": None,
            "model": body["model"],
            "output": output,
            "service_tier": self.tier,
        }
        for key, default in _ECHOED.items():
            payload[key] = body.get(key, default)
        if self.context.conversation is not None:
            payload["conversation"] = {"id": self.context.conversation.id}
        if status == "incomplete":
            reason = self.call.faults.incomplete_reason or "max_output_tokens"
            payload["incomplete_details"] = {"reason": reason}
        if status not in FINAL_STATUSES:
            payload["usage"] = None
        elif usage is not None:
            payload["usage"] = usage
        return payload

    def reasoning_item(self) -> dict[str, Any]:
        return {"id": self.reasoning_id, "type": "reasoning", "summary": []}

    def text_part(self, text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def message_item(self, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
        if self.custom_tool is not None:
            text = "".join(str(part.get("text", "")) for part in content)
            return self.tool_call_item(status, text)
        return {
            "id": self.message_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    def tool_call_item(self, status: str, text: str) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "type": "custom_tool_call",
            "status": status,
            "call_id": self.call_id,
            "name": self.custom_tool,
            "input": text,
        }

    def output(self, generated: int | None = None, status: str | None = None) -> list[Any]:
        """The output items; only the first ``generated`` tokens' worth after a cancel."""
        plan = self.plan
        done = plan.total if generated is None else min(generated, plan.total)
        reasoning = min(done, plan.reasoning)
        items = [self.reasoning_item()] if reasoning else []
        text = self.text if done == plan.total else "".join(self.words[: done - reasoning])
        item_status = status or self.final_status
        items.append(self.message_item(item_status, [self.text_part(text)]))
        return items

    def partial_usage(self, generated: int) -> dict[str, Any] | None:
        """The usage of a job cancelled after ``generated`` output tokens."""
        reasoning = min(generated, self.plan.reasoning)
        partial = OutputPlan(min(generated, self.plan.total) - reasoning, reasoning, False)
        return self.call.report_usage(responses_usage(self.inputs, partial))

    def final(self) -> dict[str, Any]:
        return self.snapshot(self.final_status, self.output(), self.usage)

    def _event(self, kind: str, tokens: int = 0, **fields: Any) -> Event:
        payload = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return Event(wire.named_event(kind, payload), tokens)

    def events(self) -> Iterator[Event]:
        yield from self.opening()
        yield from self.progress()

    def opening(self) -> Iterator[Event]:
        """``response.created`` (and ``response.queued`` for a background response)."""
        first = "queued" if self.background else "in_progress"
        yield self._event("response.created", response=self.snapshot(first, []))
        if self.background:
            yield self._event("response.queued", response=self.snapshot("queued", []))

    def progress(self) -> Iterator[Event]:
        """From ``response.in_progress`` to the terminal event."""
        yield self._event("response.in_progress", response=self.snapshot("in_progress", []))
        index = 0
        if self.plan.reasoning:
            item = self.reasoning_item()
            yield self._event("response.output_item.added", output_index=0, item=item)
            yield self._event(
                "response.output_item.done", self.plan.reasoning, output_index=0, item=item
            )
            index = 1
        yield from self._message_events(index)
        done = self._event(f"response.{self.final_status}", response=self.final())
        yield Event(done.data, usage=self.usage)

    def _tool_call_events(self, index: int) -> Iterator[Event]:
        event = self._event
        where: dict[str, Any] = {"item_id": self.message_id, "output_index": index}
        item = self.tool_call_item("in_progress", "")
        yield event("response.output_item.added", output_index=index, item=item)
        for text, count in chunk_text(self.words, self.call.options.tokens_per_chunk):
            yield event("response.custom_tool_call_input.delta", count, **where, delta=text)
        yield event("response.custom_tool_call_input.done", **where, input=self.text)
        item = self.tool_call_item(self.final_status, self.text)
        yield event("response.output_item.done", output_index=index, item=item)

    def _message_events(self, index: int) -> Iterator[Event]:
        if self.custom_tool is not None:
            yield from self._tool_call_events(index)
            return
        event = self._event
        where: dict[str, Any] = {
            "item_id": self.message_id,
            "output_index": index,
            "content_index": 0,
        }
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


def _plan(call: Call) -> ResponseAnswer | Problem:
    problem = check_responses(call.body, call.faults.compat)
    if problem:
        return problem
    context = resolve_context(call)
    if isinstance(context, Problem):
        return context
    return ResponseAnswer(call, context)


async def create_response(call: Call) -> web.StreamResponse:
    answer = _plan(call)
    if isinstance(answer, Problem):
        return call.refuse(answer)
    if answer.background:
        return await start_job(call, answer)
    remember(call, answer, answer.final())
    if call.streaming:
        return await stream_events(call, answer.events(), mid_stream_error)
    call.record.usage_reported = answer.usage
    call.record.output_tokens_sent = call.record.output_tokens
    call.record.finish(records.OK)
    return call.json(answer.final())


async def input_tokens(call: Call) -> web.StreamResponse:
    """``client.responses.input_tokens.count(...)`` (the stored context included)."""
    context = resolve_context(call)
    if isinstance(context, Problem):
        return call.refuse(context)
    count = responses_input_tokens(call.body) + context.references + context.tokens
    call.record.input_tokens = count
    call.record.context_input_tokens = context.references + context.tokens
    call.record.finish(records.OK)
    return call.json({"object": "response.input_tokens", "input_tokens": count})
