"""The Anthropic dialect: Messages (``POST /v1/messages``, ``?beta=true`` included) and
free token counting, its error shape, ``anthropic-ratelimit-*`` headers, model listing,
usage objects and stream events.

Errors: ``{"type": "error", "error": {"type", "message"}, "request_id"}``; a budget refusal
and a request cap are ``402 billing_error`` (never 400: Claude Code replays a 400 five
times; on a 413 it prints its own "Request too large" text instead of ours). Rate limits:
``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}``, resets as RFC 3339 times.
Usage: ``input_tokens`` excludes both cache fields (shared/CLIENTS.md §0.16), so the
normal form adds them back; ``message_delta`` usage is cumulative.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC
from typing import Any, ClassVar

import orjson

from spendgate.dialects.agents import messages_end_turn, rewrite_event
from spendgate.dialects.anthropic_hidden import messages_hidden, other_model
from spendgate.dialects.base import (
    Action,
    DialectAdapter,
    MeterBase,
    Prepared,
    StreamMeter,
    SurfaceSpec,
    count_problem,
    error_text,
    load_object,
    sse_event,
)
from spendgate.dialects.hidden import HiddenInput
from spendgate.domain import tokens
from spendgate.domain.ledger import Surface
from spendgate.domain.models import Dialect, ModelRoute
from spendgate.domain.usage import Usage, count_field, sub_mapping
from spendgate.errors import (
    AuthenticationFailed,
    BudgetBusy,
    BudgetExceeded,
    CircuitOpen,
    GatewayError,
    InvalidRequest,
    LoopDetected,
    NotFound,
    PermissionDenied,
    RateLimited,
    RateWindow,
    RequestCapExceeded,
    RequestTooLarge,
    ServiceUnavailable,
    StorageUnavailable,
    UpstreamTimeout,
)
from spendgate.upstream.sse import SseEvent

_CREATED = "1970-01-01T00:00:00Z"


class AnthropicDialect(DialectAdapter):
    dialect = Dialect.ANTHROPIC
    error_types: ClassVar[Mapping[type[GatewayError], str]] = {
        InvalidRequest: "invalid_request_error",
        AuthenticationFailed: "authentication_error",
        PermissionDenied: "permission_error",
        NotFound: "not_found_error",
        RequestTooLarge: "request_too_large",
        RequestCapExceeded: "billing_error",
        BudgetExceeded: "billing_error",
        RateLimited: "rate_limit_error",
        BudgetBusy: "rate_limit_error",
        LoopDetected: "rate_limit_error",
        CircuitOpen: "overloaded_error",
        UpstreamTimeout: "timeout_error",
        ServiceUnavailable: "overloaded_error",
        StorageUnavailable: "overloaded_error",
    }
    # 529 overloaded_error with x-should-retry: false is what Claude Code shows at once,
    # with the message, after one request (CLIENTS.md §8.1); a 503 it retries. A request
    # cap is 402: on a 413 Claude Code prints its own "Request too large" text instead.
    statuses: ClassVar[Mapping[type[GatewayError], int]] = {
        BudgetExceeded: 402,
        RequestCapExceeded: 402,
        CircuitOpen: 529,
    }
    request_id_header = "request-id"

    def owns(self, path: str, headers: Mapping[str, str]) -> bool:
        if path.startswith("/v1/messages"):
            return True
        listing = path == "/v1/models" or path.startswith("/v1/models/")
        return listing and "anthropic-version" in headers

    def error_body(self, error: GatewayError, request_id: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "error",
            "error": {"type": self.error_type(error), "message": error.message},
        }
        if request_id:
            body["request_id"] = request_id
        return body

    def rate_headers(self, windows: Iterable[RateWindow]) -> dict[str, str]:
        out: dict[str, str] = {}
        for window in windows:
            name = window.kind
            out[f"anthropic-ratelimit-{name}-limit"] = str(window.limit)
            out[f"anthropic-ratelimit-{name}-remaining"] = str(max(0, window.remaining))
            stamp = window.resets_at.astimezone(UTC).replace(microsecond=0).isoformat()
            out[f"anthropic-ratelimit-{name}-reset"] = stamp.replace("+00:00", "Z")
        return out

    def model_list(self, routes: Sequence[ModelRoute], aliases: Mapping[str, str]) -> Any:
        data: list[dict[str, Any]] = [
            {"type": "model", "id": r.name, "display_name": r.name, "created_at": _CREATED}
            for r in routes
            if r.dialect is Dialect.ANTHROPIC
        ]
        data += [
            {
                "type": "model",
                "id": alias,
                "display_name": f"{alias} (now {model})",
                "created_at": _CREATED,
            }
            for alias, model in sorted(aliases.items())
        ]
        return {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }


ANTHROPIC = AnthropicDialect()


# Server tool calls billed per call, as ``usage.server_tool_use`` counts them.
_SERVER_TOOL_COUNTS = (("web_search", "web_search_requests"), ("web_fetch", "web_fetch_requests"))
# The result block of each: a call is billed once it returned a result (not an error).
_RESULT_BLOCKS = {f"{tool}_tool_result": tool for tool, _ in _SERVER_TOOL_COUNTS}


def from_anthropic(usage: Mapping[str, Any]) -> Usage:
    """Anthropic ``usage``: input excludes the cache fields, so add them back; and a
    server-side compaction's tokens are billed but only reported in ``iterations`` (its
    ``compaction`` entries are outside the top-level counts), so add those too. Each
    compaction is a sampling step of its own, billed at the long-context tier of its own
    input: it is kept apart (`Usage.apart`)."""
    iterations = usage.get("iterations")
    compactions = tuple(
        _counts(entry)
        for entry in (iterations if isinstance(iterations, list) else ())
        if isinstance(entry, Mapping) and entry.get("type") == "compaction"
    )
    server_tools = sub_mapping(usage, "server_tool_use")
    calls = tuple(
        (tool, count)
        for tool, field in _SERVER_TOOL_COUNTS
        if (count := count_field(server_tools, field))
    )
    top = _counts(usage)
    parts = (top, *compactions)

    def total(field: str) -> int:
        return sum(getattr(part, field) for part in parts)

    return Usage(
        input_tokens=total("input_tokens"),
        output_tokens=total("output_tokens"),
        cached_input_tokens=total("cached_input_tokens"),
        cache_write_tokens=total("cache_write_tokens"),
        cache_write_1h_tokens=total("cache_write_1h_tokens"),
        service_tier=_tier(usage),
        tool_calls=calls,
        apart=compactions,
    )


def _counts(usage: Mapping[str, Any]) -> Usage:
    """The token counts of one sampling step's ``usage`` (the top level, or an entry of
    ``iterations``) in normal form."""
    cache_read = count_field(usage, "cache_read_input_tokens")
    cache_write = count_field(usage, "cache_creation_input_tokens")
    return Usage(
        input_tokens=count_field(usage, "input_tokens") + cache_read + cache_write,
        output_tokens=count_field(usage, "output_tokens"),
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=count_field(
            sub_mapping(usage, "cache_creation"), "ephemeral_1h_input_tokens"
        ),
    )


def _tier(usage: Mapping[str, Any]) -> str | None:
    """``speed: fast`` is billed as a tier of its own; ``standard`` is no tier."""
    if usage.get("speed") == "fast":
        return "fast"
    tier = usage.get("service_tier")
    return tier.lower() if isinstance(tier, str) and tier.lower() != "standard" else None


def messages_usage_problem(usage: Mapping[str, Any]) -> str | None:
    return count_problem(
        usage,
        ("input_tokens", "output_tokens"),
        {"cache_creation": ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens")},
        optional=("cache_read_input_tokens", "cache_creation_input_tokens"),
    )


def merge_anthropic(current: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``message_delta`` usage is cumulative: its fields overwrite those of ``message_start``."""
    merged = dict(current)
    for key, value in update.items():
        if value is not None:
            merged[key] = value
    return merged


# ---------------------------------------------------------------------------- surfaces

THINKING_MIN_CEILING = 1025  # budget_tokens >= 1024 must stay below max_tokens

# Anthropic-defined client tools: the body names only their type, and Anthropic bills a
# definition of its own for each as input tokens (its tool documentation: bash 245, the
# text editor 700, computer use 735 and a system prompt of up to 499), on top of the
# tool-use system prompt every request with tools gets.
DEFINED_TOOL_TOKENS = (("bash_", 245), ("text_editor_", 700), ("computer_", 735 + 499))


def defined_tool_tokens(body: Mapping[str, Any]) -> int:
    """The input tokens of the Anthropic-defined tools a Messages body names."""
    tools = body.get("tools")
    total = 0
    for tool in tools if isinstance(tools, list) else ():
        kind = tool.get("type") if isinstance(tool, dict) else None
        if isinstance(kind, str):
            total += next((n for prefix, n in DEFINED_TOOL_TOKENS if kind.startswith(prefix)), 0)
    return total


def _thinking(body: Mapping[str, Any]) -> dict[str, Any] | None:
    thinking = body.get("thinking")
    return thinking if isinstance(thinking, dict) else None


def _cache_marks(value: object) -> Iterator[Mapping[str, Any]]:
    """Every ``cache_control`` object in a body (top level, system, tools, messages)."""
    if isinstance(value, Mapping):
        mark = value.get("cache_control")
        if isinstance(mark, Mapping):
            yield mark
        for key, inner in value.items():
            if key != "cache_control" and isinstance(inner, list | Mapping):
                yield from _cache_marks(inner)
    elif isinstance(value, list):
        for inner in value:
            if isinstance(inner, list | Mapping):
                yield from _cache_marks(inner)


class MessagesSurface(SurfaceSpec):
    def end_turn(self, raw: bytes) -> bytes:
        return rewrite_event(raw, b'"max_tokens"', messages_end_turn)

    def check(self, body: Mapping[str, Any]) -> None:
        """Also refuse a body that lets another model serve or advise it (`other_model`):
        its worst case and its charge are the requested model's, so the other model's
        tokens would be reserved and charged at the wrong price, or not at all, whatever
        models the key may use."""
        super().check(body)
        found = other_model(body)
        if found is not None:
            field, what = found
            raise InvalidRequest(
                f"'{field}' asks for {what}. spendgate prices and authorizes one model per "
                "request, so it cannot reserve or charge that model's tokens: send the "
                "request without it (an operator can declare fallback models in spendgate's "
                "own configuration, models.<name>.fallbacks).",
                param=field,
            )

    def input_counter(self, model: str, body: Mapping[str, Any]) -> tokens.TokenCount:
        counted = tokens.count_anthropic_input(model, body)
        defined = defined_tool_tokens(body)
        if not defined:
            return counted
        return tokens.TokenCount(tokens=counted.tokens + defined, exact=False)

    def min_ceiling(self, body: Mapping[str, Any]) -> int:
        thinking = _thinking(body)
        return THINKING_MIN_CEILING if thinking and thinking.get("type") == "enabled" else 1

    def set_ceiling(self, body: dict[str, Any], ceiling: int, *, legacy_field: bool) -> None:
        body["max_tokens"] = ceiling
        thinking = _thinking(body)
        budget = thinking.get("budget_tokens") if thinking else None
        if thinking is not None and isinstance(budget, int) and budget >= ceiling:
            body["thinking"] = {**thinking, "budget_tokens": max(1024, ceiling - 1)}

    def hidden_input(self, body: Mapping[str, Any]) -> HiddenInput:
        return messages_hidden(body)

    def service_tiers(
        self, body: Mapping[str, Any], account_default: str | None
    ) -> tuple[str | None, ...]:
        """``speed: fast`` is a tier of its own; ``service_tier: standard_only`` keeps the
        standard one; otherwise the account's default (priority capacity, if it has any)."""
        if body.get("speed") == "fast":
            return ("fast",)
        if body.get("service_tier") == "standard_only":
            return (None,)
        return (account_default,)

    def cache_writes(self, body: Mapping[str, Any]) -> tuple[bool, bool]:
        """Anthropic writes the cache only where the body asks (``cache_control``), for an
        hour only with ``ttl: "1h"``."""
        marks = list(_cache_marks(body))
        return bool(marks), any(mark.get("ttl") == "1h" for mark in marks)

    def meter(self, prepared: Prepared, body: Mapping[str, Any]) -> StreamMeter:
        return MessagesMeter()

    def parse_usage(self, usage: Mapping[str, Any]) -> Usage:
        return from_anthropic(usage)

    def usage_problem(self, usage: Mapping[str, Any]) -> str | None:
        return messages_usage_problem(usage)

    def response_text(self, response: Mapping[str, Any]) -> str:
        pieces: list[str] = []
        for block in response.get("content") or ():
            if isinstance(block, dict):
                pieces.append(str(block.get("text") or block.get("thinking") or ""))
                if block.get("type") == "tool_use":
                    pieces.append(orjson.dumps(block.get("input")).decode())
        return "".join(pieces)


MESSAGES = MessagesSurface(
    Surface.ANTHROPIC_MESSAGES,
    ANTHROPIC,
    "/v1/messages",
    streams=True,
    billed=True,
    ceiling_fields=("max_tokens",),
)
COUNT_TOKENS = SurfaceSpec(Surface.ANTHROPIC_COUNT_TOKENS, ANTHROPIC, "/v1/messages/count_tokens")


class MessagesMeter(MeterBase):
    """Usage in ``message_start``, overwritten by ``message_delta``; ``message_stop`` ends."""

    def __init__(self) -> None:
        super().__init__()
        self._open_block: int | None = None
        self._tool_uses: dict[str, int] = {}  # server tool calls relayed with a result

    def feed(self, event: SseEvent) -> Action:
        kind = event.event
        if kind == "ping":
            return Action.FORWARD
        if kind == "message_stop":
            self.finished = True
            return Action.HOLD
        payload = load_object(event.data)
        if payload is None:
            return Action.FORWARD
        kind = kind or payload.get("type")
        if kind == "content_block_delta":
            self._collect(payload.get("delta"))
        elif kind == "content_block_start":
            self._open_block = payload.get("index") if isinstance(payload.get("index"), int) else 0
            self._tool_result(payload.get("content_block"))
        elif kind == "content_block_stop":
            self._open_block = None
        elif kind == "message_start":
            self._start(payload.get("message"))
        elif kind == "message_delta":
            update = payload.get("usage")
            if isinstance(update, dict):
                self._usage = merge_anthropic(self._usage or {}, update)
        elif kind == "error":
            self.upstream_error = error_text(payload.get("error"))
        return Action.FORWARD

    def _start(self, message: object) -> None:
        if not isinstance(message, dict):
            return
        if isinstance(message.get("model"), str):
            self.served_model = message["model"]
        if isinstance(message.get("usage"), dict):
            self._usage = message["usage"]

    def _collect(self, delta: object) -> None:
        if not isinstance(delta, dict):
            return
        for key in ("text", "partial_json", "thinking"):
            text = delta.get(key)
            if isinstance(text, str) and text:
                self.generated.append(text)

    def _tool_result(self, block: object) -> None:
        """A server tool's result block (``web_search_tool_result``): the call ran, and is
        billed, unless its content is an error (Anthropic bills no failed search)."""
        if not isinstance(block, dict):
            return
        tool = _RESULT_BLOCKS.get(str(block.get("type")))
        content = block.get("content")
        failed = isinstance(content, dict) and "error" in str(content.get("type"))
        if tool is not None and not failed:
            self._tool_uses[tool] = self._tool_uses.get(tool, 0) + 1

    def usage(self) -> Usage | None:
        """The last usage seen. A stream that ended early (cut, broken, its client gone)
        never got the closing ``message_delta`` that counts the server tool calls: those
        whose results it relayed are billed all the same, so they are counted here."""
        usage = self._vetted(messages_usage_problem)
        parsed = from_anthropic(usage) if usage is not None else None
        if self.finished or not self._tool_uses:
            return parsed
        calls = dict(parsed.tool_calls) if parsed is not None else {}
        for tool, count in self._tool_uses.items():
            calls[tool] = max(calls.get(tool, 0), count)
        counted = tuple((tool, calls[tool]) for tool, _ in _SERVER_TOOL_COUNTS if calls.get(tool))
        return dataclasses.replace(parsed or Usage(), tool_calls=counted)

    def cut_events(self, usage: Usage) -> bytes:
        out = b""
        if self._open_block is not None:
            stop = {"type": "content_block_stop", "index": self._open_block}
            out += sse_event(stop, "content_block_stop")
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
            "usage": {"output_tokens": usage.output_tokens},
        }
        stop_event = sse_event({"type": "message_stop"}, "message_stop")
        return out + sse_event(delta, "message_delta") + stop_event

    def error_event(self, code: str, message: str) -> bytes:
        body = {"type": "error", "error": {"type": "api_error", "message": message}}
        return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"
