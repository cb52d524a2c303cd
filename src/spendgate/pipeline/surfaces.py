"""The API surfaces spendgate serves, and what each must change in a request.

A surface knows its dialect, how to prepare the body for upstream (only the fields
spendgate must set change; everything else passes through untouched), where usage lives
in a response, and how to estimate usage when the provider reports none. Pure: no IO.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from spendgate.domain import tokens
from spendgate.domain import usage as usage_parsers
from spendgate.domain.ledger import Surface
from spendgate.domain.usage import Usage
from spendgate.errors import Dialect, InvalidRequest
from spendgate.pipeline.meters import AnthropicMeter, ChatMeter, ResponsesMeter, StreamMeter


@dataclass(frozen=True, slots=True)
class Prepared:
    body: bytes  # what goes upstream
    stream: bool
    client_wants_usage: bool


@dataclass(frozen=True, slots=True)
class SurfaceSpec:
    surface: Surface
    dialect: Dialect
    path: str
    streams: bool
    billed: bool
    usage_parser: Callable[[Mapping[str, Any]], Usage] | None
    input_counter: Callable[[str, Mapping[str, Any]], tokens.TokenCount]
    ceiling_fields: tuple[str, ...] = ()  # where the request states its output ceiling

    def requested_output(self, body: Mapping[str, Any]) -> tuple[int | None, int]:
        """The output ceiling per choice the request states (None: none), and its choices."""
        ceiling = None
        for name in self.ceiling_fields:
            value = body.get(name)
            if value is not None:
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise InvalidRequest(f"'{name}' must be a non-negative integer", param=name)
                ceiling = value
                break
        choices = body.get("n", 1) if self.surface is Surface.OPENAI_CHAT else 1
        if choices is None:
            choices = 1
        if not isinstance(choices, int) or isinstance(choices, bool) or not 1 <= choices <= 128:
            raise InvalidRequest("'n' must be an integer from 1 to 128", param="n")
        return ceiling, choices

    def min_ceiling(self, body: Mapping[str, Any]) -> int:
        """The lowest output ceiling the upstream accepts for this body."""
        thinking = body.get("thinking")
        enabled = isinstance(thinking, dict) and thinking.get("type") == "enabled"
        if self.surface is Surface.ANTHROPIC_MESSAGES and enabled:
            return 1025  # budget_tokens >= 1024 must stay below max_tokens
        return 1

    def set_ceiling(self, body: dict[str, Any], ceiling: int, *, legacy_field: bool) -> None:
        """Write the output ceiling where the request had it (or the surface's usual field)."""
        present = [name for name in self.ceiling_fields if body.get(name) is not None]
        if present:
            field = present[0]
        elif self.surface is Surface.OPENAI_CHAT and legacy_field:
            field = "max_tokens"  # OpenAI-compatible servers (vLLM, Ollama) know this one
        else:
            field = self.ceiling_fields[0]
        body[field] = ceiling
        thinking = body.get("thinking")
        budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
        if isinstance(thinking, dict) and isinstance(budget, int) and budget >= ceiling:
            body["thinking"] = {**thinking, "budget_tokens": max(1024, ceiling - 1)}

    def prepare(
        self,
        raw: bytes,
        body: dict[str, Any],
        upstream_model: str,
        *,
        ceiling: int | None = None,
        legacy_field: bool = False,
    ) -> Prepared:
        stream = self.streams and body.get("stream") is True
        changed = False
        if body.get("model") != upstream_model:
            body["model"] = upstream_model
            changed = True
        if ceiling is not None and self.ceiling_fields:
            self.set_ceiling(body, ceiling, legacy_field=legacy_field)
            changed = True
        client_wants_usage = True
        if stream and self.surface is Surface.OPENAI_CHAT:
            options = body.get("stream_options")
            if options is not None and not isinstance(options, dict):
                raise InvalidRequest("stream_options must be an object", param="stream_options")
            client_wants_usage = bool(options and options.get("include_usage") is True)
            if not client_wants_usage:
                body["stream_options"] = {**(options or {}), "include_usage": True}
                changed = True
        return Prepared(
            body=orjson.dumps(body) if changed else raw,
            stream=stream,
            client_wants_usage=client_wants_usage,
        )

    def meter(self, prepared: Prepared) -> StreamMeter:
        if self.surface is Surface.OPENAI_CHAT:
            return ChatMeter(client_wants_usage=prepared.client_wants_usage)
        if self.surface is Surface.OPENAI_RESPONSES:
            return ResponsesMeter()
        return AnthropicMeter()

    def usage_of(self, response: Mapping[str, Any]) -> Usage | None:
        if self.usage_parser is None:
            return Usage()
        raw = response.get("usage")
        return self.usage_parser(raw) if isinstance(raw, dict) else None

    def estimate(self, model: str, body: Mapping[str, Any], output_text: str) -> Usage:
        """An upper-bound estimate, marked as such, for when the provider reported nothing."""
        if not self.billed:
            return Usage(estimated=True)
        input_tokens = self.input_counter(model, body).tokens
        output_tokens = tokens.count_output_text(model, output_text).tokens if output_text else 0
        return Usage(input_tokens=input_tokens, output_tokens=output_tokens, estimated=True)


def _no_input(model: str, body: Mapping[str, Any]) -> tokens.TokenCount:
    return tokens.TokenCount(tokens=0, exact=True)


CHAT = SurfaceSpec(
    Surface.OPENAI_CHAT,
    Dialect.OPENAI,
    "/v1/chat/completions",
    streams=True,
    billed=True,
    usage_parser=usage_parsers.from_openai_chat,
    input_counter=tokens.count_chat_input,
    ceiling_fields=("max_completion_tokens", "max_tokens"),
)
RESPONSES = SurfaceSpec(
    Surface.OPENAI_RESPONSES,
    Dialect.OPENAI,
    "/v1/responses",
    streams=True,
    billed=True,
    usage_parser=usage_parsers.from_openai_responses,
    input_counter=tokens.count_responses_input,
    ceiling_fields=("max_output_tokens",),
)
EMBEDDINGS = SurfaceSpec(
    Surface.OPENAI_EMBEDDINGS,
    Dialect.OPENAI,
    "/v1/embeddings",
    streams=False,
    billed=True,
    usage_parser=usage_parsers.from_openai_chat,
    input_counter=tokens.count_embedding_input,
)
MESSAGES = SurfaceSpec(
    Surface.ANTHROPIC_MESSAGES,
    Dialect.ANTHROPIC,
    "/v1/messages",
    streams=True,
    billed=True,
    usage_parser=usage_parsers.from_anthropic,
    input_counter=tokens.count_anthropic_input,
    ceiling_fields=("max_tokens",),
)
COUNT_TOKENS = SurfaceSpec(
    Surface.ANTHROPIC_COUNT_TOKENS,
    Dialect.ANTHROPIC,
    "/v1/messages/count_tokens",
    streams=False,
    billed=False,
    usage_parser=None,
    input_counter=_no_input,
)

RESPONSES_INPUT_TOKENS = SurfaceSpec(
    Surface.OPENAI_INPUT_TOKENS,
    Dialect.OPENAI,
    "/v1/responses/input_tokens",
    streams=False,
    billed=False,
    usage_parser=None,
    input_counter=_no_input,
)


def response_text(surface: Surface, response: Mapping[str, Any]) -> str:
    """The generated text of a non-streamed response, for estimating its output tokens."""
    pieces: list[str] = []
    if surface is Surface.OPENAI_CHAT:
        for choice in response.get("choices") or ():
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict):
                pieces.append(str(message.get("content") or ""))
                pieces.extend(str(c) for c in message.get("tool_calls") or ())
    elif surface is Surface.OPENAI_RESPONSES:
        for item in response.get("output") or ():
            for part in (item.get("content") or ()) if isinstance(item, dict) else ():
                if isinstance(part, dict):
                    pieces.append(str(part.get("text") or ""))
            if isinstance(item, dict) and item.get("type") == "function_call":
                pieces.append(str(item.get("arguments") or ""))
    elif surface is Surface.ANTHROPIC_MESSAGES:
        for block in response.get("content") or ():
            if isinstance(block, dict):
                pieces.append(str(block.get("text") or block.get("thinking") or ""))
                if block.get("type") == "tool_use":
                    pieces.append(orjson.dumps(block.get("input")).decode())
    return "".join(pieces)
