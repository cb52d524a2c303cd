"""OpenAI Responses (``POST /v1/responses``): typed events, usage only in the terminal
event's ``response``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from spendgate.dialects.agents import at_ceiling, responses_completed, rewrite_event
from spendgate.dialects.base import (
    Action,
    MeterBase,
    Prepared,
    StreamMeter,
    SurfaceSpec,
    error_text,
    load_object,
    sse_event,
)
from spendgate.dialects.hidden import HiddenInput
from spendgate.dialects.openai import (
    OPENAI,
    from_openai_responses,
    openai_service_tiers,
    reported_tier,
    responses_tool_calls,
    responses_usage_problem,
)
from spendgate.dialects.openai_hidden import responses_hidden
from spendgate.domain import tokens
from spendgate.domain.ledger import Surface
from spendgate.domain.usage import Usage
from spendgate.errors import InvalidRequest
from spendgate.upstream.sse import SseEvent

RESPONSES_MIN_CEILING = 16


class ResponsesSurface(SurfaceSpec):
    def end_turn(self, raw: bytes) -> bytes:
        return rewrite_event(raw, b'"incomplete"', responses_completed)

    def end_turn_waits(self, raw: bytes) -> bool:
        return b"response.output_item.done" in raw and b'"incomplete"' in raw

    def end_turn_all(self, events: Sequence[bytes]) -> bytes:
        """Items kept back incomplete are told completed only when the stream stopped at
        its ceiling (not for a content filter, nor a stream that broke off)."""
        if not any(at_ceiling(event) for event in events):
            return b"".join(events)
        return super().end_turn_all(events)

    def check(self, body: Mapping[str, Any]) -> None:
        super().check(body)
        if body.get("background") is True:
            raise InvalidRequest(
                "spendgate does not relay background responses: the provider would go on "
                "generating (and billing) after this request ends, past what its budget "
                "reserved. Send the request without 'background' (stream it to keep a long "
                "response alive).",
                param="background",
            )

    def input_counter(self, model: str, body: Mapping[str, Any]) -> tokens.TokenCount:
        return tokens.count_responses_input(model, body)

    def min_ceiling(self, body: Mapping[str, Any]) -> int:
        """OpenAI refuses a ``max_output_tokens`` below 16 (the OpenAPI spec's minimum)."""
        return RESPONSES_MIN_CEILING

    def service_tiers(
        self, body: Mapping[str, Any], account_default: str | None
    ) -> tuple[str | None, ...]:
        return openai_service_tiers(body, account_default)

    def hidden_input(self, body: Mapping[str, Any]) -> HiddenInput:
        return responses_hidden(body)

    def meter(self, prepared: Prepared, body: Mapping[str, Any]) -> StreamMeter:
        return ResponsesMeter()

    def parse_usage(self, usage: Mapping[str, Any]) -> Usage:
        return from_openai_responses(usage)

    def billed_as(self, usage: Usage, response: Mapping[str, Any]) -> Usage:
        return billed_responses(usage, response)

    def usage_problem(self, usage: Mapping[str, Any]) -> str | None:
        return responses_usage_problem(usage)

    def response_text(self, response: Mapping[str, Any]) -> str:
        pieces: list[str] = []
        for item in response.get("output") or ():
            for part in (item.get("content") or ()) if isinstance(item, dict) else ():
                if isinstance(part, dict):
                    pieces.append(str(part.get("text") or ""))
            kind = item.get("type") if isinstance(item, dict) else None
            field = _CALL_TEXT.get(kind) if isinstance(kind, str) else None
            if field is not None:
                pieces.append(str(item.get(field) or ""))
        return "".join(pieces)


def billed_responses(usage: Usage, response: Mapping[str, Any]) -> Usage:
    """The tier the response ran in and its billed tool calls (the response object echoes
    the request's ``tools``, which say whether a web search is the preview tool)."""
    return dataclasses.replace(
        usage,
        service_tier=reported_tier(response),
        tool_calls=responses_tool_calls(response, response),
    )


RESPONSES = ResponsesSurface(
    Surface.OPENAI_RESPONSES,
    OPENAI,
    "/v1/responses",
    streams=True,
    billed=True,
    ceiling_fields=("max_output_tokens",),
)

_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
# Events whose ``delta`` is text the model generated (billed as output): its answer, its
# reasoning, and what it writes into tool calls (a function's arguments, a custom tool's
# input such as Codex's apply_patch, an MCP call's arguments, code to run, a shell command).
_TEXT = frozenset(
    {
        "response.output_text.delta",
        "response.function_call_arguments.delta",
        "response.custom_tool_call_input.delta",
        "response.mcp_call_arguments.delta",
        "response.code_interpreter_call_code.delta",
        "response.shell_call_command.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_text.delta",
        "response.refusal.delta",
    }
)
# Output items and the field holding what the model wrote into them.
_CALL_TEXT = {
    "function_call": "arguments",
    "custom_tool_call": "input",
    "mcp_call": "arguments",
    "code_interpreter_call": "code",
}


class ResponsesMeter(MeterBase):
    """Typed events; usage only in the terminal event's ``response``."""

    def __init__(self) -> None:
        super().__init__()
        self._sequence = 0
        self._response: dict[str, Any] = {}
        self._terminal: Mapping[str, Any] = {}  # the last response object: tier, tool calls

    def feed(self, event: SseEvent) -> Action:
        payload = load_object(event.data)
        if payload is None:
            return Action.FORWARD
        kind = payload.get("type") or event.event
        sequence = payload.get("sequence_number")
        if isinstance(sequence, int):
            self._sequence = sequence
        if kind in _TEXT:
            delta = payload.get("delta")
            if isinstance(delta, str):
                self.generated.append(delta)
        elif kind == "response.created":
            self._note_response(payload.get("response"))
        elif kind in _TERMINAL:
            self._note_response(payload.get("response"))
            self.finished = True
            if kind == "response.failed":
                self.upstream_error = "response.failed"
            return Action.HOLD
        elif kind == "error":
            self.upstream_error = error_text(payload)
        return Action.FORWARD

    def _note_response(self, response: object) -> None:
        if not isinstance(response, dict):
            return
        self._response = {k: response[k] for k in ("id", "created_at", "model") if k in response}
        self._terminal = response
        if isinstance(response.get("model"), str):
            self.served_model = response["model"]
        if isinstance(response.get("usage"), dict):
            self._usage = response["usage"]

    def usage(self) -> Usage | None:
        usage = self._vetted(responses_usage_problem)
        if usage is None:
            return None
        return billed_responses(from_openai_responses(usage), self._terminal)

    def cut_events(self, usage: Usage) -> bytes:
        response = {
            "object": "response",
            **self._response,
            "status": "incomplete",
            "incomplete_details": {"reason": "max_output_tokens"},
            "output": [],
            "usage": {
                "input_tokens": usage.input_tokens,
                "input_tokens_details": {"cached_tokens": usage.cached_input_tokens},
                "output_tokens": usage.output_tokens,
                "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
                "total_tokens": usage.input_tokens + usage.output_tokens,
            },
        }
        event = {
            "type": "response.incomplete",
            "sequence_number": self._sequence + 1,
            "response": response,
        }
        return sse_event(event, "response.incomplete")

    def error_event(self, code: str, message: str) -> bytes:
        body = {
            "type": "error",
            "code": code,
            "message": message,
            "param": None,
            "sequence_number": self._sequence + 1,
        }
        return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"
