"""The OpenAI dialect: its error shape, ``x-ratelimit-*`` headers, model listing and usage
objects, and the surfaces that need no stream (embeddings, input token counting). Chat
Completions and Responses have modules of their own (`openai_chat`, `openai_responses`).

Errors: ``{"error": {"message", "type", "param", "code"}}`` (shared/CLIENTS.md §0.9).
Rate limits: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, resets as Go-style
durations (``6m0s``, ``1s``, ``12ms``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from spendgate.dialects.base import DialectAdapter, SurfaceSpec, count_problem
from spendgate.domain import tokens
from spendgate.domain.ledger import Surface
from spendgate.domain.models import Dialect, ModelRoute
from spendgate.domain.usage import Usage, count_field, sub_mapping
from spendgate.errors import (
    AuthenticationFailed,
    BudgetBusy,
    BudgetExceeded,
    GatewayError,
    InvalidRequest,
    LoopDetected,
    NotFound,
    PermissionDenied,
    RateLimited,
    RateWindow,
    RequestTooLarge,
)


def go_duration(seconds: float) -> str:
    """``0.012`` -> ``12ms``; ``360`` -> ``6m0s``; ``3725.5`` -> ``1h2m5.5s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    out = f"{hours}h" if hours else ""
    if hours or minutes:
        out += f"{minutes}m"
    return out + f"{secs}s"


class OpenAiDialect(DialectAdapter):
    dialect = Dialect.OPENAI
    error_types: ClassVar[Mapping[type[GatewayError], str]] = {
        InvalidRequest: "invalid_request_error",
        AuthenticationFailed: "invalid_request_error",
        PermissionDenied: "permission_error",
        NotFound: "invalid_request_error",
        RequestTooLarge: "invalid_request_error",
        BudgetExceeded: "insufficient_quota",
        RateLimited: "requests",
        BudgetBusy: "requests",
        LoopDetected: "requests",
    }

    def owns(self, path: str, headers: Mapping[str, str]) -> bool:
        return True  # the default: every path no other dialect claims

    def error_type(self, error: GatewayError) -> str:
        if isinstance(error, RateLimited) and error.tokens:
            return "tokens"
        return super().error_type(error)

    def error_body(self, error: GatewayError, request_id: str | None) -> dict[str, Any]:
        return {
            "error": {
                "message": error.message,
                "type": self.error_type(error),
                "param": error.param,
                "code": error.code,
            }
        }

    def rate_headers(self, windows: Iterable[RateWindow]) -> dict[str, str]:
        out: dict[str, str] = {}
        for window in windows:
            name = window.kind
            out[f"x-ratelimit-limit-{name}"] = str(window.limit)
            out[f"x-ratelimit-remaining-{name}"] = str(max(0, window.remaining))
            wait = (window.resets_at - window.now).total_seconds()
            out[f"x-ratelimit-reset-{name}"] = go_duration(wait)
        return out

    def model_list(self, routes: Sequence[ModelRoute], aliases: Mapping[str, str]) -> Any:
        data = [
            {"id": route.name, "object": "model", "created": 0, "owned_by": route.primary.provider}
            for route in routes
        ]
        data += [
            {"id": alias, "object": "model", "created": 0, "owned_by": "spendgate"}
            for alias in sorted(aliases)
        ]
        return {"object": "list", "data": data}


OPENAI = OpenAiDialect()


# ---------------------------------------------------------------------------- usage


def from_openai_chat(usage: Mapping[str, Any]) -> Usage:
    """``CompletionUsage`` of chat completions and embeddings. OpenAI's ``prompt_tokens``
    already include cached tokens and ``completion_tokens`` include reasoning."""
    prompt_details = sub_mapping(usage, "prompt_tokens_details")
    completion_details = sub_mapping(usage, "completion_tokens_details")
    return Usage(
        input_tokens=count_field(usage, "prompt_tokens"),
        output_tokens=count_field(usage, "completion_tokens"),
        cached_input_tokens=count_field(prompt_details, "cached_tokens"),
        cache_write_tokens=count_field(prompt_details, "cache_write_tokens"),
        reasoning_tokens=count_field(completion_details, "reasoning_tokens"),
    )


def from_openai_responses(usage: Mapping[str, Any]) -> Usage:
    """``ResponseUsage`` of the Responses API."""
    input_details = sub_mapping(usage, "input_tokens_details")
    output_details = sub_mapping(usage, "output_tokens_details")
    return Usage(
        input_tokens=count_field(usage, "input_tokens"),
        output_tokens=count_field(usage, "output_tokens"),
        cached_input_tokens=count_field(input_details, "cached_tokens"),
        cache_write_tokens=count_field(input_details, "cache_write_tokens"),
        reasoning_tokens=count_field(output_details, "reasoning_tokens"),
    )


def chat_usage_problem(usage: Mapping[str, Any]) -> str | None:
    return count_problem(
        usage,
        ("prompt_tokens", "completion_tokens"),
        {
            "prompt_tokens_details": ("cached_tokens", "cache_write_tokens"),
            "completion_tokens_details": ("reasoning_tokens",),
        },
    )


def embeddings_usage_problem(usage: Mapping[str, Any]) -> str | None:
    return count_problem(usage, ("prompt_tokens",), {})


def responses_usage_problem(usage: Mapping[str, Any]) -> str | None:
    return count_problem(
        usage,
        ("input_tokens", "output_tokens"),
        {
            "input_tokens_details": ("cached_tokens", "cache_write_tokens"),
            "output_tokens_details": ("reasoning_tokens",),
        },
    )


# ---------------------------------------------------------------------------- surfaces


class EmbeddingsSurface(SurfaceSpec):
    """``POST /v1/embeddings``: input only, no output to reserve or stream."""

    def input_counter(self, model: str, body: Mapping[str, Any]) -> tokens.TokenCount:
        return tokens.count_embedding_input(model, body)

    def parse_usage(self, usage: Mapping[str, Any]) -> Usage:
        return from_openai_chat(usage)

    def usage_problem(self, usage: Mapping[str, Any]) -> str | None:
        return embeddings_usage_problem(usage)


EMBEDDINGS = EmbeddingsSurface(Surface.OPENAI_EMBEDDINGS, OPENAI, "/v1/embeddings", billed=True)
RESPONSES_INPUT_TOKENS = SurfaceSpec(
    Surface.OPENAI_INPUT_TOKENS, OPENAI, "/v1/responses/input_tokens"
)


_OPENAI_TIERS = {
    "priority": "priority",
    "fast": "priority",
    "ultrafast": "ultrafast",
    "flex": "flex",
}


def openai_service_tiers(
    body: Mapping[str, Any], account_default: str | None
) -> tuple[str | None, ...]:
    """``service_tier``: ``priority`` (or ``fast``), ``ultrafast``, ``flex`` choose a tier;
    ``default`` the standard one; ``auto`` or none the account's default."""
    asked = body.get("service_tier")
    if asked == "default":
        return (None,)
    if isinstance(asked, str) and asked in _OPENAI_TIERS:
        return (_OPENAI_TIERS[asked],)
    return (account_default,)


# Output items of built-in tools billed per call -> the fee they are billed under.
_FEE_ITEMS = {"web_search_call": "web_search", "file_search_call": "file_search"}


def responses_tool_calls(
    response: Mapping[str, Any], body: Mapping[str, Any]
) -> tuple[tuple[str, int], ...]:
    """Billed tool calls of a Responses answer: its ``web_search_call`` and
    ``file_search_call`` output items (a web search billed as the preview tool when the
    request declared that one)."""
    preview = any(
        isinstance(tool, Mapping) and str(tool.get("type", "")).startswith("web_search_preview")
        for tool in body.get("tools") or ()
    )
    counts: dict[str, int] = {}
    for item in response.get("output") or ():
        kind = item.get("type") if isinstance(item, Mapping) else None
        fee = _FEE_ITEMS.get(kind) if isinstance(kind, str) else None
        if fee == "web_search" and preview:
            fee = "web_search_preview"
        if fee is not None:
            counts[fee] = counts.get(fee, 0) + 1
    return tuple(sorted(counts.items()))


def reported_tier(document: Mapping[str, Any]) -> str | None:
    """The tier an OpenAI answer says it ran in (``default`` is the standard one)."""
    tier = document.get("service_tier")
    if not isinstance(tier, str) or tier.lower() in ("default", "auto"):
        return None
    return "priority" if tier.lower() == "fast" else tier.lower()
