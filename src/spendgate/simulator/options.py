"""Settings of the fake upstream provider."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MODELS: tuple[str, ...] = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1-mini",
    "o4-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "claude-sonnet-4-6",
    "claude-haiku-4-5",
    "claude-opus-4-1",
)


@dataclass(slots=True)
class SimulatorOptions:
    """How the simulator behaves when a request carries no ``x-sim-*`` header.

    The defaults answer at once (the simulator is used in latency benchmarks); set
    ``first_byte_delay_ms`` / ``chunk_delay_ms`` to imitate a real provider's pacing.
    """

    require_auth: bool = True
    """401 in the endpoint's dialect without ``Authorization: Bearer`` (or ``x-api-key``)."""
    min_output_tokens: int = 20
    """Shortest default answer; the length is a deterministic function of the prompt."""
    max_output_tokens: int = 60
    """Longest default answer (before the request's own cap)."""
    tokens_per_chunk: int = 3
    """Output tokens carried by one streamed text delta."""
    first_byte_delay_ms: float = 0.0
    """Wait before every answer (``x-sim-delay-ms`` overrides it)."""
    chunk_delay_ms: float = 0.0
    """Wait between streamed events (``x-sim-chunk-delay-ms`` overrides it)."""
    embedding_dimensions: int = 1536
    """Vector length when the request has no ``dimensions``."""
    retry_after_s: int = 1
    """``retry-after`` sent with injected 429 answers."""
    anthropic_delta_full_usage: bool = False
    """Also repeat input/cache counts in Anthropic ``message_delta.usage`` (newer API behaviour)."""
    record_requests: bool = True
    """Keep a `RequestRecord` of every API request."""
    max_records: int = 10_000
    """The oldest records are dropped beyond this many (benchmarks send many requests)."""
    models: tuple[str, ...] = DEFAULT_MODELS
    """Ids listed by ``GET /v1/models``."""
    max_stored: int = 10_000
    """Stored Responses objects and conversations kept (the oldest go first)."""
    background_ms: float = 20.0
    """How long a ``background`` response stays queued (``x-sim-background-ms`` overrides it)."""
    server_tool_uses: int = 1
    """Uses of each Anthropic server tool per request (``x-sim-server-tool-uses`` overrides it)."""
    web_search_results: int = 5
    """Results one Anthropic web search returns."""
    search_result_tokens: int = 2000
    """Input tokens of one web search result."""
    web_fetch_tokens: int = 5000
    """Input tokens of one fetched page (capped by the tool's ``max_content_tokens``)."""
    code_execution_tokens: int = 200
    """Input tokens of one code execution result."""
