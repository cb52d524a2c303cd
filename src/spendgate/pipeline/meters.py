"""Meters read a relayed stream event by event: they find the provider's usage, remember
what was generated (for an estimate when usage never comes), and tell the relay what to
do with each event. Pure: no IO.

Actions:

* ``FORWARD``: send the event to the client now;
* ``DROP``: never send it (the usage chunk spendgate asked for but the client did not);
* ``HOLD``: the terminal event (``[DONE]``, ``message_stop``, ``response.completed``): sent
  only after the ledger row is durable, so a client never sees the end of a response whose
  spend could still be lost.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Protocol

import orjson

from spendgate.domain import usage as usage_parsers
from spendgate.domain.usage import Usage
from spendgate.upstream.sse import SseEvent


class Action(Enum):
    FORWARD = "forward"
    DROP = "drop"
    HOLD = "hold"


class StreamMeter(Protocol):
    served_model: str | None
    upstream_error: str | None
    finished: bool

    def feed(self, event: SseEvent) -> Action: ...

    def usage(self) -> Usage | None: ...

    def generated_text(self) -> str: ...

    def error_event(self, code: str, message: str) -> bytes: ...

    def pieces(self) -> list[str]:
        """The generated text so far, in the pieces it arrived in (appended to, never edited)."""
        ...

    def cut_events(self, usage: Usage) -> bytes:
        """The dialect's clean ending for a stream spendgate stops at the output ceiling."""
        ...


def _sse(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


def _load(data: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


class ChatMeter:
    """OpenAI Chat Completions: ``data:`` chunks, usage in a ``choices: []`` chunk, ``[DONE]``."""

    def __init__(self, *, client_wants_usage: bool) -> None:
        self.client_wants_usage = client_wants_usage
        self.served_model: str | None = None
        self.upstream_error: str | None = None
        self.finished = False
        self._usage: dict[str, Any] | None = None
        self._pieces: list[str] = []
        self._first: dict[str, Any] = {}
        self._indices: set[int] = set()

    def feed(self, event: SseEvent) -> Action:
        if event.data == b"[DONE]":
            self.finished = True
            return Action.HOLD
        chunk = _load(event.data)
        if chunk is None:
            return Action.FORWARD
        if "error" in chunk:
            self.upstream_error = _error_text(chunk["error"])
            return Action.FORWARD
        if self.served_model is None and isinstance(chunk.get("model"), str):
            self.served_model = chunk["model"]
            self._first = {k: chunk[k] for k in ("id", "created", "model") if k in chunk}
        usage = chunk.get("usage")
        choices = chunk.get("choices")
        if isinstance(usage, dict):
            self._usage = usage
            if not self.client_wants_usage and not choices:
                return Action.DROP
        if isinstance(choices, list):
            self._collect(choices)
        return Action.FORWARD

    def _collect(self, choices: list[Any]) -> None:
        for choice in choices:
            if isinstance(choice, dict) and isinstance(choice.get("index"), int):
                self._indices.add(choice["index"])
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            for key in ("content", "refusal", "reasoning_content"):
                text = delta.get(key)
                if isinstance(text, str) and text:
                    self._pieces.append(text)
            for call in delta.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    self._pieces.append(str(function.get("name") or ""))
                    self._pieces.append(str(function.get("arguments") or ""))

    def usage(self) -> Usage | None:
        return usage_parsers.from_openai_chat(self._usage) if self._usage else None

    def generated_text(self) -> str:
        return "".join(self._pieces)

    def pieces(self) -> list[str]:
        return self._pieces

    def error_event(self, code: str, message: str) -> bytes:
        body = {"error": {"message": message, "type": "api_error", "param": None, "code": code}}
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def cut_events(self, usage: Usage) -> bytes:
        head = {"object": "chat.completion.chunk", **self._first}
        finals: list[dict[str, Any]] = [
            {"index": i, "delta": {}, "logprobs": None, "finish_reason": "length"}
            for i in sorted(self._indices or {0})
        ]
        out = _sse({**head, "choices": finals, "usage": None})
        if self.client_wants_usage:
            counts = {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
            }
            out += _sse({**head, "choices": [], "usage": counts})
        return out + b"data: [DONE]\n\n"


_RESPONSES_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_RESPONSES_TEXT = frozenset(
    {
        "response.output_text.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_text.delta",
        "response.refusal.delta",
    }
)


class ResponsesMeter:
    """OpenAI Responses: typed events; usage only in the terminal event's ``response``."""

    def __init__(self) -> None:
        self.served_model: str | None = None
        self.upstream_error: str | None = None
        self.finished = False
        self._usage: dict[str, Any] | None = None
        self._pieces: list[str] = []
        self._sequence = 0
        self._response: dict[str, Any] = {}

    def feed(self, event: SseEvent) -> Action:
        payload = _load(event.data)
        if payload is None:
            return Action.FORWARD
        kind = payload.get("type") or event.event
        sequence = payload.get("sequence_number")
        if isinstance(sequence, int):
            self._sequence = sequence
        if kind in _RESPONSES_TEXT:
            delta = payload.get("delta")
            if isinstance(delta, str):
                self._pieces.append(delta)
        elif kind == "response.created":
            self._note_response(payload.get("response"))
        elif kind in _RESPONSES_TERMINAL:
            self._note_response(payload.get("response"))
            self.finished = True
            if kind == "response.failed":
                self.upstream_error = "response.failed"
            return Action.HOLD
        elif kind == "error":
            self.upstream_error = _error_text(payload)
        return Action.FORWARD

    def _note_response(self, response: object) -> None:
        if not isinstance(response, dict):
            return
        self._response = {k: response[k] for k in ("id", "created_at", "model") if k in response}
        if isinstance(response.get("model"), str):
            self.served_model = response["model"]
        if isinstance(response.get("usage"), dict):
            self._usage = response["usage"]

    def usage(self) -> Usage | None:
        return usage_parsers.from_openai_responses(self._usage) if self._usage else None

    def generated_text(self) -> str:
        return "".join(self._pieces)

    def pieces(self) -> list[str]:
        return self._pieces

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
        return _sse(event, "response.incomplete")

    def error_event(self, code: str, message: str) -> bytes:
        body = {
            "type": "error",
            "code": code,
            "message": message,
            "param": None,
            "sequence_number": self._sequence + 1,
        }
        return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"


class AnthropicMeter:
    """Anthropic Messages: usage in ``message_start``, overwritten by ``message_delta``."""

    def __init__(self) -> None:
        self.served_model: str | None = None
        self.upstream_error: str | None = None
        self.finished = False
        self._usage: dict[str, Any] | None = None
        self._pieces: list[str] = []
        self._open_block: int | None = None

    def feed(self, event: SseEvent) -> Action:
        kind = event.event
        if kind == "ping":
            return Action.FORWARD
        if kind == "message_stop":
            self.finished = True
            return Action.HOLD
        payload = _load(event.data)
        if payload is None:
            return Action.FORWARD
        kind = kind or payload.get("type")
        if kind == "content_block_delta":
            self._collect(payload.get("delta"))
        elif kind == "content_block_start":
            self._open_block = payload.get("index") if isinstance(payload.get("index"), int) else 0
        elif kind == "content_block_stop":
            self._open_block = None
        elif kind == "message_start":
            message = payload.get("message")
            if isinstance(message, dict):
                if isinstance(message.get("model"), str):
                    self.served_model = message["model"]
                if isinstance(message.get("usage"), dict):
                    self._usage = message["usage"]
        elif kind == "message_delta":
            update = payload.get("usage")
            if isinstance(update, dict):
                self._usage = usage_parsers.merge_anthropic(self._usage or {}, update)
        elif kind == "error":
            self.upstream_error = _error_text(payload.get("error"))
        return Action.FORWARD

    def _collect(self, delta: object) -> None:
        if not isinstance(delta, dict):
            return
        for key in ("text", "partial_json", "thinking"):
            text = delta.get(key)
            if isinstance(text, str) and text:
                self._pieces.append(text)

    def usage(self) -> Usage | None:
        return usage_parsers.from_anthropic(self._usage) if self._usage else None

    def pieces(self) -> list[str]:
        return self._pieces

    def cut_events(self, usage: Usage) -> bytes:
        out = b""
        if self._open_block is not None:
            out += _sse(
                {"type": "content_block_stop", "index": self._open_block}, "content_block_stop"
            )
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
            "usage": {"output_tokens": usage.output_tokens},
        }
        return out + _sse(delta, "message_delta") + _sse({"type": "message_stop"}, "message_stop")

    def generated_text(self) -> str:
        return "".join(self._pieces)

    def error_event(self, code: str, message: str) -> bytes:
        body = {"type": "error", "error": {"type": "api_error", "message": message}}
        return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"


def _error_text(error: object) -> str:
    if isinstance(error, dict):
        parts = [str(error.get(k)) for k in ("type", "code", "message") if error.get(k)]
        return ": ".join(parts)[:500] or "error"
    return str(error)[:500]
