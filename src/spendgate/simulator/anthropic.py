"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens`` (CLIENTS.md §6)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import records, wire
from .streaming import Event, stream_events
from .tokens import (
    InputPlan,
    OutputPlan,
    anthropic_input_tokens,
    chunk_text,
    generate_text,
    plan_input,
    prompt_seed,
)
from .validation import check_anthropic

if TYPE_CHECKING:
    from collections.abc import Iterator

    from aiohttp import web

    from .context import Call

SIGNATURE = "EqQBCkYIBxgCKkBzaW11bGF0ZWQgdGhpbmtpbmcgc2lnbmF0dXJl"
_THINKING_SEED = 0x5BD1E995
_MID_STREAM_ERROR = wire.named_event(
    "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
)


def mid_stream_error(_sent: int) -> bytes:
    return _MID_STREAM_ERROR


def anthropic_usage(inputs: InputPlan, output_tokens: int) -> dict[str, Any]:
    """Anthropic ``usage``: ``input_tokens`` excludes both cache fields (CLIENTS.md §0.16)."""
    return {
        "input_tokens": inputs.uncached,
        "cache_creation_input_tokens": inputs.cache_write,
        "cache_read_input_tokens": inputs.cached,
        "cache_creation": {
            "ephemeral_5m_input_tokens": inputs.cache_write_5m,
            "ephemeral_1h_input_tokens": inputs.cache_write_1h,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
        "server_tool_use": None,
    }


def _stop_reason(plan: OutputPlan) -> str:
    return "max_tokens" if plan.truncated else "end_turn"


class _Message:
    """The planned answer of one Messages request, in both answer forms."""

    def __init__(self, call: Call) -> None:
        body = call.body
        self.call = call
        self.id = wire.new_id("msg_")
        self.model: str = body["model"]
        self.inputs = plan_input(anthropic_input_tokens(body), call.faults)
        seed = prompt_seed(body.get("system"), body.get("messages"))
        self.plan = call.plan_output_for(seed, call.output_limit("max_tokens"))
        self.words = generate_text(seed, self.plan.text)
        self.thinking = generate_text(seed ^ _THINKING_SEED, self.plan.reasoning)
        self.no_usage = call.faults.no_usage
        call.account(self.inputs, self.plan.total)

    def _message(self, content: list[dict[str, Any]], stop: str | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
        }

    def final(self) -> tuple[dict[str, Any], dict[str, Any] | None]:
        content: list[dict[str, Any]] = []
        if self.thinking:
            thinking = "".join(self.thinking)
            content.append({"type": "thinking", "thinking": thinking, "signature": SIGNATURE})
        if self.words or not self.thinking:
            content.append({"type": "text", "text": "".join(self.words)})
        message = self._message(content, _stop_reason(self.plan))
        if self.no_usage:
            return message, None
        usage = anthropic_usage(self.inputs, self.plan.total)
        message["usage"] = usage
        return message, usage

    def events(self) -> Iterator[Event]:
        message = self._message([], None)
        start_usage = None
        if not self.no_usage:
            start_usage = anthropic_usage(self.inputs, min(1, self.plan.total))
            message["usage"] = start_usage
        yield self._event("message_start", {"message": message}, usage=start_usage)
        index = 0
        if self.thinking:
            yield from self._thinking_block(index)
            index += 1
        if self.words or not self.thinking:
            yield from self._text_block(index)
        yield self._message_delta(start_usage)
        yield self._event("message_stop", {})

    def _event(
        self, kind: str, fields: dict[str, Any], tokens: int = 0, usage: Any = None
    ) -> Event:
        return Event(wire.named_event(kind, {"type": kind, **fields}), tokens, usage)

    def _delta(self, index: int, delta: dict[str, Any], tokens: int = 0) -> Event:
        return self._event("content_block_delta", {"index": index, "delta": delta}, tokens)

    def _block(self, index: int, block: dict[str, Any]) -> Event:
        return self._event("content_block_start", {"index": index, "content_block": block})

    def _thinking_block(self, index: int) -> Iterator[Event]:
        yield self._block(index, {"type": "thinking", "thinking": "", "signature": ""})
        yield self._event("ping", {})
        per_chunk = self.call.options.tokens_per_chunk
        for text, count in chunk_text(self.thinking, per_chunk):
            yield self._delta(index, {"type": "thinking_delta", "thinking": text}, count)
        yield self._delta(index, {"type": "signature_delta", "signature": SIGNATURE})
        yield self._event("content_block_stop", {"index": index})

    def _text_block(self, index: int) -> Iterator[Event]:
        yield self._block(index, {"type": "text", "text": ""})
        if index == 0:
            yield self._event("ping", {})
        for text, count in chunk_text(self.words, self.call.options.tokens_per_chunk):
            yield self._delta(index, {"type": "text_delta", "text": text}, count)
        yield self._event("content_block_stop", {"index": index})

    def _message_delta(self, start_usage: dict[str, Any] | None) -> Event:
        fields: dict[str, Any] = {
            "delta": {"stop_reason": _stop_reason(self.plan), "stop_sequence": None}
        }
        if start_usage is None:
            return self._event("message_delta", fields)
        delta_usage: dict[str, Any] = {"output_tokens": self.plan.total}
        if self.call.options.anthropic_delta_full_usage:
            for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
                delta_usage[key] = start_usage[key]
        fields["usage"] = delta_usage
        return self._event("message_delta", fields, usage={**start_usage, **delta_usage})


async def messages(call: Call) -> web.StreamResponse:
    problem = check_anthropic(call.body)
    if problem:
        return call.error(400, problem)
    answer = _Message(call)
    if call.body.get("stream") is True:
        return await stream_events(call, answer.events(), mid_stream_error)
    message, usage = answer.final()
    call.record.usage_reported = usage
    call.record.output_tokens_sent = call.record.output_tokens
    call.record.finish(records.OK)
    return call.json(message)


async def count_tokens(call: Call) -> web.StreamResponse:
    problem = check_anthropic(call.body, need_max=False)
    if problem:
        return call.error(400, problem)
    count = anthropic_input_tokens(call.body)
    call.record.input_tokens = count
    call.record.finish(records.OK)
    return call.json({"input_tokens": count})
