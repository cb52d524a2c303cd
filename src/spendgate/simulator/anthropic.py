"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens`` (CLIENTS.md §6).

Server tools (web search, web fetch, code execution) are performed and billed as
`server_tools` describes; ``usage.service_tier`` follows `reporting`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson

from . import records, wire
from .reporting import anthropic_tier
from .server_tools import ToolUse, has_server_tools, plan_tool_uses, server_tool_usage, use_counts
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
from .validation_anthropic import check_anthropic

if TYPE_CHECKING:
    from collections.abc import Iterator

    from aiohttp import web

    from .context import Call

SIGNATURE = "EqQBCkYIBxgCKkBzaW11bGF0ZWQgdGhpbmtpbmcgc2lnbmF0dXJl"
_THINKING_SEED = 0x5BD1E995
COMPACTION_RATIO = 20  # a compaction writes a summary of 1/20 of what it read
_MID_STREAM_ERROR = wire.named_event(
    "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
)


def mid_stream_error(_sent: int) -> bytes:
    return _MID_STREAM_ERROR


def anthropic_usage(
    inputs: InputPlan,
    output_tokens: int,
    service_tier: str = "standard",
    server_tool_use: dict[str, int] | None = None,
) -> dict[str, Any]:
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
        "service_tier": service_tier,
        "server_tool_use": server_tool_use,
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
        self.uses = plan_tool_uses(call)
        results = sum(use.result_tokens for use in self.uses)
        queries = sum(use.query_tokens for use in self.uses)
        counted = anthropic_input_tokens(body)
        self.start_inputs = plan_input(counted, call.faults)
        self.inputs = replace(self.start_inputs, total=self.start_inputs.total + results)
        seed = prompt_seed(body.get("system"), body.get("messages"))
        limit = call.output_limit("max_tokens")
        limit = None if limit is None else max(1, limit - queries)
        self.plan = call.plan_output_for(seed, limit)
        self.output_total = self.plan.total + queries
        self.words = generate_text(seed, self.plan.text)
        self.thinking = generate_text(seed ^ _THINKING_SEED, self.plan.reasoning)
        self.tier = anthropic_tier(body.get("service_tier"), call.faults.service_tier)
        self.tool_usage = server_tool_usage(self.uses) if has_server_tools(body) else None
        self._account(results)

    def _account(self, results: int) -> None:
        record = self.call.record
        self.call.account(self.inputs, self.output_total)
        compaction = self.call.faults.compaction_tokens  # billed too, outside the top level
        record.input_tokens += compaction
        record.output_tokens += compaction // COMPACTION_RATIO
        record.tool_result_tokens = results
        record.server_tool_uses = use_counts(self.uses)
        record.service_tier = self.tier
        record.response_id = self.id

    def usage(self, inputs: InputPlan, output_tokens: int, final: bool) -> dict[str, Any]:
        tool_usage = self.tool_usage
        if tool_usage is not None and not final:
            tool_usage = dict.fromkeys(tool_usage, 0)
        usage = anthropic_usage(inputs, output_tokens, self.tier, tool_usage)
        compaction = self.call.faults.compaction_tokens
        if compaction:  # `usage.iterations`: the compaction's tokens are only there
            counts = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
            message = {"type": "message", "output_tokens": output_tokens}
            usage["iterations"] = [
                {
                    "type": "compaction",
                    "input_tokens": compaction,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": compaction // COMPACTION_RATIO,
                },
                {**message, **{key: usage[key] for key in counts}},
            ]
        return usage

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
        for use in self.uses:
            content.extend((use.use_block, use.result_block))
        if self.words or not (self.thinking or self.uses):
            content.append({"type": "text", "text": "".join(self.words)})
        message = self._message(content, _stop_reason(self.plan))
        usage = self.call.report_usage(self.usage(self.inputs, self.output_total, final=True))
        if usage is not None:
            message["usage"] = usage
        return message, usage

    def events(self) -> Iterator[Event]:
        message = self._message([], None)
        start_usage = self.call.report_usage(
            self.usage(self.start_inputs, min(1, self.output_total), final=False)
        )
        if start_usage is not None:
            message["usage"] = start_usage
        yield self._event("message_start", {"message": message}, usage=start_usage)
        index = 0
        if self.thinking:
            yield from self._thinking_block(index)
            index += 1
        for use in self.uses:
            yield from self._tool_blocks(index, use)
            index += 2
        if self.words or not (self.thinking or self.uses):
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

    def _tool_blocks(self, index: int, use: ToolUse) -> Iterator[Event]:
        """A ``server_tool_use`` block (its input streamed as JSON) and its result block."""
        yield self._block(index, {**use.use_block, "input": {}})
        arguments = orjson.dumps(use.use_block["input"]).decode()
        delta = {"type": "input_json_delta", "partial_json": arguments}
        yield self._delta(index, delta, use.query_tokens)
        yield self._event("content_block_stop", {"index": index})
        yield self._block(index + 1, use.result_block)
        yield self._event("content_block_stop", {"index": index + 1})

    def _text_block(self, index: int) -> Iterator[Event]:
        yield self._block(index, {"type": "text", "text": ""})
        if index == 0:
            yield self._event("ping", {})
        for text, count in chunk_text(self.words, self.call.options.tokens_per_chunk):
            yield self._delta(index, {"type": "text_delta", "text": text}, count)
        yield self._event("content_block_stop", {"index": index})

    def _delta_usage(self) -> dict[str, Any]:
        """``message_delta.usage``: cumulative; the input fields too once tools ran."""
        final = self.usage(self.inputs, self.output_total, final=True)
        delta_usage: dict[str, Any] = {"output_tokens": final["output_tokens"]}
        if self.call.options.anthropic_delta_full_usage or self.tool_usage is not None:
            for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
                delta_usage[key] = final[key]
        if self.tool_usage is not None:
            delta_usage["server_tool_use"] = final["server_tool_use"]
        if "iterations" in final:
            delta_usage["iterations"] = final["iterations"]
        return delta_usage

    def _message_delta(self, start_usage: dict[str, Any] | None) -> Event:
        fields: dict[str, Any] = {
            "delta": {"stop_reason": _stop_reason(self.plan), "stop_sequence": None}
        }
        if start_usage is None:
            return self._event("message_delta", fields)
        delta_usage = self.call.report_usage(self._delta_usage()) or {}
        fields["usage"] = delta_usage
        return self._event("message_delta", fields, usage={**start_usage, **delta_usage})


def _interleaved(call: Call) -> bool:
    return "interleaved-thinking" in call.request.headers.get("anthropic-beta", "")


async def messages(call: Call) -> web.StreamResponse:
    problem = check_anthropic(call.body, compat=call.faults.compat, interleaved=_interleaved(call))
    if problem:
        return call.refuse(problem)
    answer = _Message(call)
    if call.streaming:
        return await stream_events(call, answer.events(), mid_stream_error)
    message, usage = answer.final()
    call.record.usage_reported = usage
    call.record.output_tokens_sent = call.record.output_tokens
    call.record.finish(records.OK)
    return call.json(message)


async def count_tokens(call: Call) -> web.StreamResponse:
    problem = check_anthropic(call.body, need_max=False, compat=call.faults.compat)
    if problem:
        return call.refuse(problem)
    count = anthropic_input_tokens(call.body)
    call.record.input_tokens = count
    call.record.finish(records.OK)
    return call.json({"input_tokens": count})
