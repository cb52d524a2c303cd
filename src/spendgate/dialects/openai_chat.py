"""OpenAI Chat Completions (``POST /v1/chat/completions``): ``n`` choices, two ceiling
fields, usage in a ``choices: []`` chunk that spendgate asks for when the client did not
(``stream_options.include_usage``) and then drops before it reaches that client."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import orjson

from spendgate.dialects.agents import chat_stop, rewrite_event
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
    chat_usage_problem,
    from_openai_chat,
    openai_service_tiers,
    reported_tier,
)
from spendgate.dialects.openai_hidden import chat_hidden
from spendgate.domain import tokens
from spendgate.domain.ledger import Surface
from spendgate.domain.usage import Usage
from spendgate.errors import InvalidRequest
from spendgate.upstream.sse import SseEvent


class ChatSurface(SurfaceSpec):
    def end_turn(self, raw: bytes) -> bytes:
        return rewrite_event(raw, b'"length"', chat_stop)

    def input_counter(self, model: str, body: Mapping[str, Any]) -> tokens.TokenCount:
        return tokens.count_chat_input(model, body)

    def choices(self, body: Mapping[str, Any]) -> int:
        choices = body.get("n", 1)
        if choices is None:
            return 1
        if not isinstance(choices, int) or isinstance(choices, bool) or not 1 <= choices <= 128:
            raise InvalidRequest("'n' must be an integer from 1 to 128", param="n")
        return choices

    def ceiling_targets(self, body: Mapping[str, Any], *, legacy_field: bool) -> list[str]:
        targets = super().ceiling_targets(body, legacy_field=legacy_field)
        # OpenAI-compatible servers (vLLM, Ollama) may know only the older field.
        if legacy_field and "max_tokens" not in targets:
            targets.append("max_tokens")
        return targets

    def adjust_stream(self, body: dict[str, Any]) -> bool:
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise InvalidRequest("stream_options must be an object", param="stream_options")
        if options and options.get("include_usage") is True:
            return True
        body["stream_options"] = {**(options or {}), "include_usage": True}
        return False

    def service_tiers(
        self, body: Mapping[str, Any], account_default: str | None
    ) -> tuple[str | None, ...]:
        return openai_service_tiers(body, account_default)

    def hidden_input(self, body: Mapping[str, Any]) -> HiddenInput:
        return chat_hidden(body)

    def meter(self, prepared: Prepared, body: Mapping[str, Any]) -> StreamMeter:
        return ChatMeter(client_wants_usage=prepared.client_wants_usage)

    def parse_usage(self, usage: Mapping[str, Any]) -> Usage:
        return from_openai_chat(usage)

    def usage_problem(self, usage: Mapping[str, Any]) -> str | None:
        return chat_usage_problem(usage)

    def billed_as(self, usage: Usage, response: Mapping[str, Any]) -> Usage:
        return usage.in_tier(reported_tier(response))

    def served_in(self, usage: Usage, body: Mapping[str, Any], reported: str | None) -> Usage:
        """A search model searches the web before it answers, once per request: a body with
        ``web_search_options`` that was answered (it read input) is billed one web search
        call, as its worst case reserved (`spendgate.dialects.openai_hidden`). Chat answers
        report no tool calls of their own."""
        if body.get("web_search_options") is None or usage.input_tokens <= 0:
            return usage
        if any(tool == "web_search" for tool, _ in usage.tool_calls):
            return usage
        return dataclasses.replace(usage, tool_calls=(*usage.tool_calls, ("web_search", 1)))

    def response_text(self, response: Mapping[str, Any]) -> str:
        pieces: list[str] = []
        for choice in response.get("choices") or ():
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict):
                pieces.append(str(message.get("content") or ""))
                pieces.extend(str(c) for c in message.get("tool_calls") or ())
        return "".join(pieces)


CHAT = ChatSurface(
    Surface.OPENAI_CHAT,
    OPENAI,
    "/v1/chat/completions",
    streams=True,
    billed=True,
    ceiling_fields=("max_completion_tokens", "max_tokens"),
)


class ChatMeter(MeterBase):
    """``data:`` chunks, usage in a ``choices: []`` chunk, ``[DONE]`` at the end."""

    def __init__(self, *, client_wants_usage: bool) -> None:
        self.client_wants_usage = client_wants_usage
        super().__init__()
        self.service_tier: str | None = None
        self._tier_seen: object = None  # the last chunk's raw ``service_tier``
        self._first: dict[str, Any] = {}
        self._indices: set[int] = set()

    def feed(self, event: SseEvent) -> Action:
        if event.data == b"[DONE]":
            self.finished = True
            return Action.HOLD
        chunk = load_object(event.data)
        if chunk is None:
            return Action.FORWARD
        if "error" in chunk:
            self.upstream_error = error_text(chunk["error"])
            return Action.FORWARD
        tier = chunk.get("service_tier")
        if tier != self._tier_seen:  # read again only when a chunk names another (rarely)
            self._tier_seen = tier
            if self.service_tier is None:
                self.service_tier = reported_tier(chunk)
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
        generated = self.generated
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index")
            if isinstance(index, int):
                self._indices.add(index)
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            if len(delta) == 1:  # most chunks: {"content": "..."}
                text = delta.get("content")
                if isinstance(text, str):
                    generated.append(text)
                    continue
            for key in ("content", "refusal", "reasoning_content"):
                text = delta.get(key)
                if isinstance(text, str) and text:
                    self.generated.append(text)
            for call in delta.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    self.generated.append(str(function.get("name") or ""))
                    self.generated.append(str(function.get("arguments") or ""))

    def usage(self) -> Usage | None:
        usage = self._vetted(chat_usage_problem)
        if usage is None:
            return None
        return from_openai_chat(usage).in_tier(self.service_tier)

    def error_event(self, code: str, message: str) -> bytes:
        body = {"error": {"message": message, "type": "api_error", "param": None, "code": code}}
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def cut_events(self, usage: Usage) -> bytes:
        head = {"object": "chat.completion.chunk", **self._first}
        finals: list[dict[str, Any]] = [
            {"index": i, "delta": {}, "logprobs": None, "finish_reason": "length"}
            for i in sorted(self._indices or {0})
        ]
        out = sse_event({**head, "choices": finals, "usage": None})
        if self.client_wants_usage:
            counts = {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
            }
            out += sse_event({**head, "choices": [], "usage": counts})
        return out + b"data: [DONE]\n\n"
