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

    def prepare(self, raw: bytes, body: dict[str, Any], upstream_model: str) -> Prepared:
        stream = self.streams and body.get("stream") is True
        changed = False
        if body.get("model") != upstream_model:
            body["model"] = upstream_model
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
)
RESPONSES = SurfaceSpec(
    Surface.OPENAI_RESPONSES,
    Dialect.OPENAI,
    "/v1/responses",
    streams=True,
    billed=True,
    usage_parser=usage_parsers.from_openai_responses,
    input_counter=tokens.count_responses_input,
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
