"""One ledger row per request that reached an upstream."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum


class Surface(Enum):
    OPENAI_CHAT = "openai.chat"
    OPENAI_RESPONSES = "openai.responses"
    OPENAI_EMBEDDINGS = "openai.embeddings"
    OPENAI_INPUT_TOKENS = "openai.input_tokens"
    ANTHROPIC_MESSAGES = "anthropic.messages"
    ANTHROPIC_COUNT_TOKENS = "anthropic.count_tokens"
    GEMINI_GENERATE = "gemini.generate_content"
    GEMINI_STREAM = "gemini.stream_generate_content"
    GEMINI_COUNT_TOKENS = "gemini.count_tokens"


@dataclass(frozen=True, slots=True)
class LedgerRow:
    request_id: str
    ts: datetime  # when the request arrived, UTC
    surface: str
    key_id: str
    user: str | None
    service: str | None
    team: str | None
    org: str | None
    tags: tuple[str, ...]
    requested_model: str
    served_model: str
    provider: str
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_nanos: int
    status: int
    latency_ms: float
    ttfb_ms: float | None
    streamed: bool
    client_disconnected: bool
    usage_estimated: bool
    upstream_request_id: str | None = None
    error: str | None = None
    output_ceiling: int | None = None  # the output ceiling reserved for (per choice)
    clamped_from: int | None = None  # the ceiling the request asked for, when spendgate lowered it
    unreconciled: bool = False  # charged at its reservation: the gateway died before settling
    session_id: str | None = None  # the client's session (Claude Code, Codex, x-spendgate-session)
    retry_count: int = 0  # the SDK's retry number (x-stainless-retry-count) or the session's
    blocked_by: str | None = None  # a refused request: the budget or limit that stopped it
    would_cost_nanos: int = 0  # a refused request: what its worst case would have cost
    shadow_blocks: tuple[str, ...] = ()  # shadow limits this request would have hit
    # Routing (docs/routing.md). requested_model is the name the client sent.
    routed_model: str | None = None  # the gateway model that served and priced it
    route_rule: str | None = None  # the rule that chose routed_model (None: asked by name)
    route_kind: str | None = None  # alias, rewrite or downgrade
    baseline_model: str | None = None  # the model it asked for, after its alias
    baseline_cost_nanos: int | None = None  # the same usage at baseline_model's prices
    shadow_rule: str | None = None  # a shadow rule that would have routed it elsewhere
    shadow_model: str | None = None  # ... to this model
    shadow_cost_nanos: int | None = None  # ... at this cost
    attempt: int = 0  # 0, or which fallback attempt of the request this row is
    fallback_from: str | None = None  # the model whose failure led to this attempt
    # Why the provider's usage was not believed (charged an estimate instead), if it was not.
    usage_problem: str | None = None
    settled_above: tuple[str, ...] = ()  # budgets charged more than this request reserved
    service_tier: str | None = None  # the service tier the provider says it used
    tool_calls: tuple[tuple[str, int], ...] = ()  # billed server-tool calls, per tool
    # A refused request, for a realistic estimate of what it would have cost
    # (`spendgate.domain.refusals`): its content's fingerprint (retries of it match), its
    # input at the real input rate, and the output rate (all choices) and ceiling per choice.
    fingerprint: str | None = None
    would_input_nanos: int = 0
    would_output_rate: int = 0  # nano-dollars per million output tokens, times choices
    would_ceiling: int = 0  # output tokens per choice the request asked for at most
