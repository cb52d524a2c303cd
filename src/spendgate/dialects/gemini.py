"""The Gemini dialect: ``POST /v1beta/models/{model}:generateContent``,
``:streamGenerateContent?alt=sse`` and free ``:countTokens`` (``/v1/`` too), its error
shape, model listing, ``usageMetadata`` and stream chunks (shared/CLIENTS.md §7).

The model is named in the path, not the body; the gateway key comes as ``x-goog-api-key``
or ``?key=`` (which never goes upstream). Errors: ``{"error": {"code", "message",
"status"}}`` with a gRPC status name (``RESOURCE_EXHAUSTED``), and a ``RetryInfo`` detail
when a wait helps. Usage: ``promptTokenCount`` includes ``cachedContentTokenCount``;
``thoughtsTokenCount`` is output outside ``candidatesTokenCount``; a tool-use prompt
(``toolUsePromptTokenCount``) is input; ``serviceTier`` (``priority``, ``flex``) is the tier
it was billed in. The output ceiling is
``generationConfig.maxOutputTokens`` and, on models that think, covers the thoughts too
(``thinkingConfig.thinkingBudget`` counts inside it). Streams are SSE chunks, each a whole
``GenerateContentResponse``; usage is cumulative and the last chunk has the totals and a
``finishReason``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from spendgate.dialects.base import (
    Action,
    DialectAdapter,
    MeterBase,
    Prepared,
    StreamMeter,
    SurfaceSpec,
    count_problem,
    load_object,
)
from spendgate.dialects.gemini_hidden import audio_tokens, gemini_hidden, gemini_may_hold_audio
from spendgate.dialects.hidden import HiddenInput, mappings
from spendgate.domain import tokens
from spendgate.domain.ledger import Surface
from spendgate.domain.models import Dialect, ModelRoute
from spendgate.domain.usage import Usage, count_field
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
    RequestTooLarge,
    ServiceUnavailable,
    StorageUnavailable,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from spendgate.upstream.framing import JSON_ARRAY, Framing
from spendgate.upstream.sse import SseEvent

# gRPC status names by HTTP status, for errors the table below does not name.
_BY_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    402: "RESOURCE_EXHAUSTED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "INVALID_ARGUMENT",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


# The methods of Gemini's models, after the colon of ``/v1/models/{model}:<method>``: an
# OpenAI fine-tuned model has colons too (``ft:gpt-4o-mini:org::9xZ1abCd``).
_METHODS = frozenset(
    {
        "generateContent",
        "streamGenerateContent",
        "countTokens",
        "embedContent",
        "batchEmbedContents",
        "batchGenerateContent",
        "predict",
        "predictLongRunning",
    }
)


class GeminiDialect(DialectAdapter):
    dialect = Dialect.GEMINI
    error_types: ClassVar[Mapping[type[GatewayError], str]] = {
        InvalidRequest: "INVALID_ARGUMENT",
        AuthenticationFailed: "UNAUTHENTICATED",
        PermissionDenied: "PERMISSION_DENIED",
        NotFound: "NOT_FOUND",
        RequestTooLarge: "INVALID_ARGUMENT",
        BudgetExceeded: "RESOURCE_EXHAUSTED",
        RateLimited: "RESOURCE_EXHAUSTED",
        BudgetBusy: "RESOURCE_EXHAUSTED",
        LoopDetected: "RESOURCE_EXHAUSTED",
        CircuitOpen: "UNAVAILABLE",
        UpstreamTimeout: "DEADLINE_EXCEEDED",
        UpstreamUnavailable: "UNAVAILABLE",
        ServiceUnavailable: "UNAVAILABLE",
        StorageUnavailable: "UNAVAILABLE",
    }

    def owns(self, path: str, headers: Mapping[str, str]) -> bool:
        if path.startswith("/v1beta/"):
            return True
        listing = path == "/v1/models" or path.startswith("/v1/models/")
        if listing and ("x-goog-api-key" in headers or "x-goog-api-client" in headers):
            return True  # google-genai lists and gets models on /v1/ with its own headers
        return path.startswith("/v1/models/") and path.rsplit(":", 1)[-1] in _METHODS

    def error_type(self, error: GatewayError) -> str:
        for klass in type(error).__mro__:
            if klass in self.error_types:
                return self.error_types[klass]
        status = self.error_status(error)
        return _BY_STATUS.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")

    def error_body(self, error: GatewayError, request_id: str | None) -> dict[str, Any]:
        status = self.error_status(error)
        inner: dict[str, Any] = {
            "code": status,
            "message": error.message,
            "status": self.error_type(error),
        }
        wait = getattr(error, "wait_s", None)
        if isinstance(wait, int | float) and getattr(error, "can_retry", False):
            inner["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{max(1, -(-int(wait * 1000) // 1000))}s",
                }
            ]
        return {"error": inner}

    def rate_headers(self, windows: Iterable[RateWindow]) -> dict[str, str]:
        return {}  # Gemini reports no rate-limit headers; spendgate's own x-spendgate-* stay

    def model_list(self, routes: Sequence[ModelRoute], aliases: Mapping[str, str]) -> Any:
        methods = ["generateContent", "streamGenerateContent", "countTokens"]
        models: list[dict[str, Any]] = [
            {
                "name": f"models/{route.name}",
                "displayName": route.name,
                "outputTokenLimit": route.max_output_tokens,
                "supportedGenerationMethods": methods,
            }
            for route in routes
            if route.dialect is Dialect.GEMINI
        ]
        models += [
            {
                "name": f"models/{alias}",
                "displayName": f"{alias} (now {model})",
                "supportedGenerationMethods": methods,
            }
            for alias, model in sorted(aliases.items())
        ]
        return {"models": models}

    def model_entry(self, listing: Any, name: str) -> Any | None:
        wanted = f"models/{name.removeprefix('models/')}"
        return next((entry for entry in listing["models"] if entry["name"] == wanted), None)


GEMINI = GeminiDialect()


# ---------------------------------------------------------------------------- usage


def from_gemini(usage: Mapping[str, Any]) -> Usage:
    """``usageMetadata`` in normal form: input is the prompt (cached tokens included) and
    any tool-use prompt; output is the candidates and the thoughts (reasoning)."""
    thoughts = count_field(usage, "thoughtsTokenCount")
    return Usage(
        input_tokens=count_field(usage, "promptTokenCount")
        + count_field(usage, "toolUsePromptTokenCount"),
        output_tokens=count_field(usage, "candidatesTokenCount") + thoughts,
        cached_input_tokens=count_field(usage, "cachedContentTokenCount"),
        reasoning_tokens=thoughts,
        audio_input_tokens=audio_tokens(usage),
    )


# ``serviceTier`` values that choose a tier other than the standard one.
_GEMINI_TIERS = frozenset({"priority", "flex"})


# The response header naming the tier that served (``standard``: Priority downgraded).
TIER_HEADER = "x-gemini-service-tier"


def _tier_name(value: object) -> str | None:
    """A Gemini service tier (``serviceTier``, `TIER_HEADER`) lower-case, without the
    ``SERVICE_TIER_`` prefix; None if it is not a string."""
    if not isinstance(value, str):
        return None
    return value.strip().lower().removeprefix("service_tier_")


def _tier(value: object) -> str | None:
    """A Gemini service tier as a price's tier name: ``priority`` or ``flex``; ``standard``,
    ``unspecified``, another name or none is None (the standard rates)."""
    tier = _tier_name(value)
    return tier if tier in _GEMINI_TIERS else None


def gemini_usage_problem(usage: Mapping[str, Any]) -> str | None:
    # Gemini leaves out counts that are zero: only the prompt's is always there.
    problem = count_problem(
        usage,
        ("promptTokenCount",),
        {},
        optional=(
            "candidatesTokenCount",
            "cachedContentTokenCount",
            "thoughtsTokenCount",
            "toolUsePromptTokenCount",
            "totalTokenCount",
        ),
    )
    if problem is None:
        cached = count_field(usage, "cachedContentTokenCount")
        if cached > count_field(usage, "promptTokenCount"):
            return "usage cachedContentTokenCount exceeds promptTokenCount"
    return problem


# ---------------------------------------------------------------------------- requests


# Google's JSON parser reads a field under its JSON name or its proto name alike
# (``generationConfig`` or ``generation_config``, ``maxOutputTokens`` or
# ``max_output_tokens``): the fields that decide the price are read, and the ceiling
# written, under whichever name the request used.
_PROTO_NAMES = {
    "generationConfig": "generation_config",
    "maxOutputTokens": "max_output_tokens",
    "candidateCount": "candidate_count",
    "thinkingConfig": "thinking_config",
    "thinkingBudget": "thinking_budget",
    "cachedContent": "cached_content",
    "serviceTier": "service_tier",
}


def _spelling(mapping: Mapping[str, Any], name: str) -> str:
    """The key ``mapping`` holds ``name`` under (its JSON name if neither is set)."""
    proto = _PROTO_NAMES[name]
    return proto if mapping.get(name) is None and mapping.get(proto) is not None else name


def _get(mapping: Mapping[str, Any], name: str) -> Any:
    return mapping.get(_spelling(mapping, name))


def _named_twice(mapping: object, *names: str) -> None:
    """Refuse a field set under both its names: which one the provider honours is not
    known, so the request cannot be priced."""
    if not isinstance(mapping, Mapping):
        return
    for name in names:
        if mapping.get(name) is not None and mapping.get(_PROTO_NAMES[name]) is not None:
            raise InvalidRequest(
                f"The request sets both '{name}' and '{_PROTO_NAMES[name]}': Gemini reads "
                "them as one field, so spendgate cannot tell which one would be honoured. "
                "Send one of them.",
                param=name,
            )


def _config(body: Mapping[str, Any]) -> Mapping[str, Any]:
    config = _get(body, "generationConfig")
    return config if isinstance(config, Mapping) else {}


def _thinking_budget(config: Mapping[str, Any]) -> tuple[str | None, int | None]:
    """The thinking budget's field (the SDK may write it snake_case) and value."""
    thinking = _get(config, "thinkingConfig")
    if not isinstance(thinking, Mapping):
        return None, None
    name = _spelling(thinking, "thinkingBudget")
    value = thinking.get(name)
    if value is None:
        return None, None
    return name, value if isinstance(value, int) and not isinstance(value, bool) else None


def _positive(config: Mapping[str, Any], name: str, most: int | None = None) -> int | None:
    value = _get(config, name)
    if value is None:
        return None
    bad = not isinstance(value, int) or isinstance(value, bool) or value < 1
    if bad or (most is not None and value > most):
        upper = f" from 1 to {most}" if most is not None else ""
        raise InvalidRequest(
            f"'generationConfig.{name}' must be a positive integer{upper}.",
            param=f"generationConfig.{name}",
        )
    return int(value)


@dataclass(frozen=True)
class GeminiSurface(SurfaceSpec):
    """One Gemini method on ``/v1beta/models/{model}:<method>`` (and ``/v1/``)."""

    model_in_path: bool = True
    key_in_query: bool = True

    @property
    def method(self) -> str:
        return self.path.rsplit(":", 1)[1]

    @property
    def routes(self) -> tuple[str, ...]:
        return (self.path, self.path.replace("/v1beta/", "/v1/", 1))

    def upstream_path(self, request_path: str) -> str:
        version = "/v1" if request_path.startswith("/v1/") else "/v1beta"
        return f"{version}/models/{{model}}:{self.method}"

    def asks_stream(self, body: Mapping[str, Any]) -> bool:
        return self.streams  # streamGenerateContent always streams

    def framing_for(self, query: Mapping[str, str]) -> Framing | None:
        """Without ``alt=sse`` Gemini streams one JSON array."""
        return JSON_ARRAY if self.streams and query.get("alt") != "sse" else None

    def input_counter(self, model: str, body: Mapping[str, Any]) -> tokens.TokenCount:
        return tokens.count_gemini_input(model, _request(body))

    def check(self, body: Mapping[str, Any]) -> None:
        _named_twice(body, "generationConfig", "cachedContent")
        config = _get(body, "generationConfig")
        if config is not None and not isinstance(config, Mapping):
            raise InvalidRequest("'generationConfig' must be an object.", param="generationConfig")
        config = _config(body)
        _named_twice(config, "maxOutputTokens", "candidateCount", "thinkingConfig")
        _named_twice(_get(config, "thinkingConfig"), "thinkingBudget")
        _positive(config, "maxOutputTokens")
        _positive(config, "candidateCount", most=8)
        name, budget = _thinking_budget(config)
        if name is not None and (budget is None or budget < -1):
            raise InvalidRequest(
                f"'generationConfig.thinkingConfig.{name}' must be an integer (-1: dynamic).",
                param=f"generationConfig.thinkingConfig.{name}",
            )

    def choices(self, body: Mapping[str, Any]) -> int:
        return _positive(_config(body), "candidateCount", most=8) or 1

    def requested_output(self, body: Mapping[str, Any]) -> tuple[int | None, int]:
        return _positive(_config(body), "maxOutputTokens"), self.choices(body)

    def set_ceiling(self, body: dict[str, Any], ceiling: int, *, legacy_field: bool) -> None:
        """``maxOutputTokens`` covers the thoughts too: a thinking budget above the
        ceiling is lowered to it, so the provider is never asked for more than is paid."""
        outer = _spelling(body, "generationConfig")
        config = dict(_config(body))
        config[_spelling(config, "maxOutputTokens")] = ceiling
        name, budget = _thinking_budget(config)
        if name is not None and budget is not None and budget > ceiling:
            thinking = _spelling(config, "thinkingConfig")
            config[thinking] = {**config[thinking], name: ceiling}
        body[outer] = config

    def hidden_input(self, body: Mapping[str, Any]) -> HiddenInput:
        return gemini_hidden(_request(body))

    def service_tiers(
        self, body: Mapping[str, Any], account_default: str | None
    ) -> tuple[str | None, ...]:
        """``serviceTier: priority`` or ``flex`` chooses that tier, ``standard`` the standard
        one; none (or ``unspecified``) the account's default."""
        asked = _get(body, "serviceTier")
        if _tier_name(asked) == "standard":
            return (None,)
        tier = _tier(asked)
        return (tier,) if tier is not None else (account_default,)

    def tier_reported(self, headers: Mapping[str, str]) -> str | None:
        return headers.get(TIER_HEADER)

    def served_in(self, usage: Usage, body: Mapping[str, Any], reported: str | None) -> Usage:
        """The tier `TIER_HEADER` names; else the one asked for; else the usage's own."""
        if reported is not None:
            return usage.in_tier(_tier(reported))
        asked = _tier(_get(body, "serviceTier"))
        return usage if asked is None else usage.in_tier(asked)

    def cache_writes(self, body: Mapping[str, Any]) -> tuple[bool, bool]:
        return False, False  # implicit caching writes for free; explicit caches are made apart

    def may_hold_audio(self, body: Mapping[str, Any]) -> bool:
        return gemini_may_hold_audio(body)

    def meter(self, prepared: Prepared, body: Mapping[str, Any]) -> StreamMeter:
        return GeminiMeter(array=prepared.framing is JSON_ARRAY)

    def usage_of(self, response: Mapping[str, Any]) -> tuple[Usage | None, str | None]:
        if not self.billed:
            return Usage(), None
        raw = response.get("usageMetadata")
        if not isinstance(raw, dict):
            return None, "no usageMetadata in the response"
        problem = gemini_usage_problem(raw)
        return (None, problem) if problem else (from_gemini(raw), None)

    def parse_usage(self, usage: Mapping[str, Any]) -> Usage:
        return from_gemini(usage)

    def usage_problem(self, usage: Mapping[str, Any]) -> str | None:
        return gemini_usage_problem(usage)

    def response_text(self, response: Mapping[str, Any]) -> str:
        return "".join(_candidate_texts(response.get("candidates")))


def _request(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """countTokens may wrap a whole request as ``generateContentRequest``."""
    inner = body.get("generateContentRequest")
    return inner if isinstance(inner, Mapping) else body


def _candidate_texts(candidates: object) -> Iterable[str]:
    for _, candidate in mappings(candidates):
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, Mapping) else None
        for _, part in mappings(parts):
            if isinstance(part.get("text"), str):
                yield part["text"]
            elif isinstance(part.get("functionCall"), Mapping):
                yield orjson.dumps(part["functionCall"]).decode()


_BASE = "/v1beta/models/{model}:"
GENERATE = GeminiSurface(
    Surface.GEMINI_GENERATE,
    GEMINI,
    _BASE + "generateContent",
    billed=True,
    ceiling_fields=("generationConfig.maxOutputTokens",),
)
STREAM_GENERATE = GeminiSurface(
    Surface.GEMINI_STREAM,
    GEMINI,
    _BASE + "streamGenerateContent",
    streams=True,
    billed=True,
    ceiling_fields=("generationConfig.maxOutputTokens",),
)
GEMINI_COUNT_TOKENS = GeminiSurface(Surface.GEMINI_COUNT_TOKENS, GEMINI, _BASE + "countTokens")


# ---------------------------------------------------------------------------- streams


def data_event(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\r\n\r\n"


class GeminiMeter(MeterBase):
    """Each chunk is a ``GenerateContentResponse``; its ``usageMetadata`` is cumulative.

    Gemini sends no terminal event: the chunk in which every candidate has a
    ``finishReason`` ends the stream, and it is held until the spend is durable; so does a
    chunk whose ``promptFeedback`` has a ``blockReason`` (the prompt was blocked: no
    candidate comes). A chunk after it shows it was not the end (every chunk says
    ``finishReason`` in some streams): what is held goes out, and the newer chunk is held
    in its place, so such a stream is relayed as it comes, not all at its end. ``array``:
    the stream is one JSON array (no ``alt=sse``), so what spendgate adds (an error, a
    clean cut) continues the array and closes it: an array closed before the stream
    finished has its ``]`` held (or, closing an array with no element, dropped), so that
    what spendgate adds goes inside it."""

    def __init__(self, *, array: bool = False) -> None:
        super().__init__()
        self.array = array
        self._opened = False  # (array) the "[" went out with the first element
        self._closed = False  # (array) the "]" came unfinished and is held
        self._open: set[int] = set()
        self._ended: set[int] = set()

    def feed(self, event: SseEvent) -> Action:
        if self.finished:
            chunk = load_object(event.data)
            self._read(chunk)  # (its usage is newer: cumulative)
            # a chunk of the answer, not the "]", a comment or an error: not the end yet
            more = chunk is not None and "error" not in chunk
            return Action.RELEASE if more else Action.HOLD
        if self.array and not event.data:  # the "]" (see `JsonArraySplitter`), unfinished
            if not self._opened:
                return Action.DROP  # "[]": what spendgate adds opens and closes the array
            self._closed = True
            return Action.HOLD
        self._opened = True
        chunk = load_object(event.data)
        if chunk is None:
            return Action.FORWARD
        error = chunk.get("error")
        if error is not None:
            self.upstream_error = _error_text(error)
            return Action.FORWARD
        feedback = chunk.get("promptFeedback")
        if isinstance(feedback, Mapping) and feedback.get("blockReason") and not self._open:
            self.finished = True  # a blocked prompt: no candidate will come
        self._read(chunk)
        for index, candidate in mappings(chunk.get("candidates")):
            number = candidate.get("index", index)
            number = number if isinstance(number, int) else index
            self._open.add(number)
            if candidate.get("finishReason"):
                self._ended.add(number)
        if self._open and self._open <= self._ended:
            self.finished = True
        if self.finished:
            return Action.HOLD
        return Action.FORWARD

    def _read(self, chunk: Mapping[str, Any] | None) -> None:
        """The model, usage and text of a chunk, also of those after the stream counts as
        finished: a chunk may say ``finishReason`` before the last (every chunk did in
        2024; a candidate may end before another's first chunk), and the usage charged is
        the last one sent."""
        if chunk is None or chunk.get("error") is not None:
            return
        if isinstance(chunk.get("modelVersion"), str):
            self.served_model = chunk["modelVersion"]
        if isinstance(chunk.get("usageMetadata"), dict):
            self._usage = chunk["usageMetadata"]
        for text in _candidate_texts(chunk.get("candidates")):
            self.generated.append(text)

    def usage(self) -> Usage | None:
        usage = self._vetted(gemini_usage_problem)
        return from_gemini(usage) if usage is not None else None

    def _frame(self, payload: Mapping[str, Any], *, close: bool = True) -> bytes:
        if not self.array:
            return data_event(payload)
        closer = b"]" if close else b""
        return (b",\r\n" if self._opened else b"[") + orjson.dumps(payload) + closer

    def error_event(self, code: str, message: str) -> bytes:
        error = {"error": {"code": 500, "message": message, "status": "INTERNAL"}}
        return self._frame(error, close=not self._closed)  # (the held "]" closes it)

    def cut_events(self, usage: Usage) -> bytes:
        candidates = [
            {
                "content": {"role": "model", "parts": [{"text": ""}]},
                "finishReason": "MAX_TOKENS",
                "index": index,
            }
            for index in sorted((self._open - self._ended) or {0})
        ]
        counts = {
            "promptTokenCount": usage.input_tokens,
            "candidatesTokenCount": usage.output_tokens,
            "totalTokenCount": usage.input_tokens + usage.output_tokens,
        }
        chunk: dict[str, Any] = {"candidates": candidates, "usageMetadata": counts}
        if self.served_model:
            chunk["modelVersion"] = self.served_model
        return self._frame(chunk)


def _error_text(error: object) -> str:
    if isinstance(error, dict):
        parts = [str(error.get(k)) for k in ("status", "code", "message") if error.get(k)]
        return ": ".join(parts)[:500] or "error"
    return str(error)[:500]
