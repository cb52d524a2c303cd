"""``POST /v1/chat/completions`` (CLIENTS.md §2)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import records, wire
from .reporting import openai_tier
from .streaming import Event, stream_events
from .tokens import (
    InputPlan,
    OutputPlan,
    chat_input_tokens,
    chunk_text,
    generate_text,
    plan_input,
    prompt_seed,
)
from .validation_openai import check_chat, lenient_limit

if TYPE_CHECKING:
    from collections.abc import Iterator

    from aiohttp import web

    from .context import Call

FINGERPRINT = "fp_simulator"
_MID_STREAM_ERROR = wire.data_event(
    {
        "error": {
            "message": "The server had an error while processing your request. (simulated)",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
)


def mid_stream_error(_sent: int) -> bytes:
    return _MID_STREAM_ERROR


def chat_usage(inputs: InputPlan, outputs: list[OutputPlan]) -> dict[str, Any]:
    completion = sum(plan.total for plan in outputs)
    return {
        "prompt_tokens": inputs.total,
        "completion_tokens": completion,
        "total_tokens": inputs.total + completion,
        "prompt_tokens_details": {
            "cached_tokens": inputs.cached,
            "audio_tokens": 0,
            "cache_write_tokens": inputs.cache_write,
        },
        "completion_tokens_details": {
            "reasoning_tokens": sum(plan.reasoning for plan in outputs),
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _finish_reason(plan: OutputPlan) -> str:
    return "length" if plan.truncated else "stop"


def output_limit(call: Call) -> int | None:
    """The chat output cap, as strict OpenAI or the ``x-sim-compat`` server reads it."""
    compat = call.faults.compat
    if "max-completion-or-max" in compat:
        return lenient_limit(call.body)
    if "max-tokens-only" in compat:
        return call.output_limit("max_tokens")
    return call.output_limit("max_completion_tokens", "max_tokens")


class _Chat:
    """Everything planned for one chat request, shared by both answer forms."""

    def __init__(self, call: Call) -> None:
        body = call.body
        self.call = call
        self.id = wire.new_id("chatcmpl-")
        self.model: str = body["model"]
        self.created = wire.now()
        limit = output_limit(call)
        seed = prompt_seed(body.get("messages"))
        self.inputs = plan_input(chat_input_tokens(body), call.faults)
        n = body.get("n") or 1
        self.plans = [call.plan_output_for(seed + i, limit, n) for i in range(n)]
        self.texts = [generate_text(seed + i, p.text) for i, p in enumerate(self.plans)]
        self.usage = call.report_usage(chat_usage(self.inputs, self.plans))
        self.tier = openai_tier(body.get("service_tier"), call.faults.service_tier)
        call.account(self.inputs, sum(plan.total for plan in self.plans))
        call.record.service_tier = self.tier
        call.record.response_id = self.id

    def completion(self) -> dict[str, Any]:
        choices: list[dict[str, Any]] = [
            {
                "index": i,
                "message": {
                    "role": "assistant",
                    "content": "".join(self.texts[i]),
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": _finish_reason(plan),
            }
            for i, plan in enumerate(self.plans)
        ]
        payload: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "service_tier": self.tier,
            "system_fingerprint": FINGERPRINT,
        }
        if self.usage is not None:
            payload["usage"] = self.usage
        return payload

    def _chunk(
        self,
        choices: list[dict[str, Any]],
        with_usage_key: bool,
        usage: dict[str, Any] | None = None,
    ) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "service_tier": self.tier,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
        }
        if with_usage_key:
            chunk["usage"] = usage
        return wire.data_event(chunk)

    def events(self, include_usage: bool) -> Iterator[Event]:
        role = {"role": "assistant", "content": "", "refusal": None}
        for i, plan in enumerate(self.plans):
            choice = {"index": i, "delta": role, "logprobs": None, "finish_reason": None}
            yield Event(self._chunk([choice], include_usage), plan.reasoning)
        chunked = [chunk_text(words, self.call.options.tokens_per_chunk) for words in self.texts]
        for step in range(max((len(chunks) for chunks in chunked), default=0)):
            for i, chunks in enumerate(chunked):
                if step < len(chunks):
                    text, count = chunks[step]
                    delta = {"content": text}
                    choice = {"index": i, "delta": delta, "logprobs": None, "finish_reason": None}
                    yield Event(self._chunk([choice], include_usage), count)
        for i, plan in enumerate(self.plans):
            reason = _finish_reason(plan)
            choice = {"index": i, "delta": {}, "logprobs": None, "finish_reason": reason}
            yield Event(self._chunk([choice], include_usage))
        if include_usage and self.usage is not None:
            yield Event(self._chunk([], True, self.usage), usage=self.usage)
        yield Event(wire.DONE_EVENT)


async def chat_completions(call: Call) -> web.StreamResponse:
    problem = check_chat(call.body, call.faults.compat)
    if problem:
        return call.refuse(problem)
    chat = _Chat(call)
    if call.streaming:
        options = call.body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return await stream_events(call, chat.events(include_usage), mid_stream_error)
    call.record.usage_reported = chat.usage
    call.record.output_tokens_sent = call.record.output_tokens
    call.record.finish(records.OK)
    return call.json(chat.completion())
