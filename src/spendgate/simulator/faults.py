"""Per-request behaviour injection through ``x-sim-*`` request headers.

=============================  ==========================================================
header                         effect
=============================  ==========================================================
``x-sim-status: N``            answer with status N in the endpoint's error dialect
                               (``retry-after`` on 429); ``x-sim-error-type`` overrides
                               the error type (e.g. ``insufficient_quota``; Gemini
                               ``API_KEY_INVALID``/``API_KEY_EXPIRED``: Google's
                               answer to a key it refuses, with its ``ErrorInfo``)
``x-sim-delay-ms: N``          wait N ms before answering
``x-sim-chunk-delay-ms: N``    wait N ms between streamed events
``x-sim-output-tokens: N``     generate exactly N output tokens (capped by the request max)
``x-sim-cached-tokens: N``     N input tokens read from the cache
``x-sim-cache-write-tokens``   N input tokens written to the cache (5-minute TTL)
``x-sim-cache-write-1h-tokens`` N more input tokens written with the 1-hour TTL
``x-sim-reasoning-tokens: N``  N of the output tokens are reasoning/thinking
``x-sim-no-usage: 1``          send no usage at all
``x-sim-die-after-chunks: N``  abort the TCP connection after N streamed events
                               (non-stream requests: abort without any answer)
``x-sim-error-after-chunks``   after N streamed events send the dialect's mid-stream error
``x-sim-ignore-max: 1``        generate past the request's max (a misbehaving upstream)
``x-sim-usage: MODE``          distort the usage object as sent (records keep the truth):
                               ``missing`` (same as ``x-sim-no-usage``), ``empty`` (``{}``),
                               ``negative`` (every count -n, -1 for 0), ``string``
                               (``"17"``), ``float`` (17.5), ``huge`` (10**18), ``null``
                               (every count null); streams and non-streams alike
``x-sim-service-tier: T``      the service tier the provider says it used (OpenAI:
                               ``default``/``flex``/``scale``/``priority``; Anthropic:
                               ``standard``/``priority``/``batch``; Gemini:
                               ``standard``/``priority``/``flex``), whatever was asked
``x-sim-server-tool-uses: N``  Anthropic server tools: uses per server tool (default 1,
                               never above the tool's ``max_uses`` nor 50); or per kind,
                               ``web_search=3,web_fetch=0,code_execution=1``
``x-sim-tool-result-tokens: N`` input tokens of one search result / fetched page /
                               code run, instead of the defaults (`server_tools`)
``x-sim-compaction-tokens: N`` Anthropic: a server-side compaction ran first, reading N
                               input tokens and writing N // 20 output tokens, reported
                               only in ``usage.iterations`` (a ``compaction`` entry),
                               outside the top-level counts, as Anthropic does
``x-sim-background-ms: N``     a ``background`` response stays queued N ms (default 20)
``x-sim-compat: a,b``          lenient OpenAI-compatible server behaviours (default:
                               strict validation): ``max-tokens-only`` (chat honours only
                               ``max_tokens``), ``max-completion-or-max`` (chat uses
                               ``max_completion_tokens or max_tokens``: 0 falls through),
                               ``lenient-stream`` (any truthy ``stream`` streams)
``x-sim-block-prompt: R``      Gemini: the prompt is blocked (one answer or chunk with
                               ``promptFeedback.blockReason: R``, the prompt's usage and
                               no candidates)
``x-sim-no-finish: 1``         Gemini: the stream ends, its JSON array closed, with no
                               candidate's ``finishReason`` (an unfinished stream, as
                               Gemini CLI's "stream ended without a finish reason")
``x-sim-finish-every-chunk: 1`` Gemini: every streamed chunk's candidate says
                               ``finishReason: STOP``, not only the last (as Gemini's
                               streams did in 2024); the usage still grows chunk by chunk
``x-sim-framing: a,b``         odd but valid SSE framing of every streamed event:
                               ``crlf`` (CRLF line endings), ``nospace`` (``data:{...}``),
                               ``comments`` (a ``: keep-alive`` comment event before each
                               event and a comment line inside it), ``multiline`` (the
                               JSON over two ``data:`` lines), ``bytewise`` (each byte
                               written as its own chunk; also in a JSON-array stream),
                               ``unterminated`` (the last event ends with its line break,
                               the stream closing before the blank line: Vertex streams
                               were seen to; google-genai still reads that event)
``x-sim-incomplete-reason: R`` Responses: the answer ends ``incomplete`` for reason R
                               (``content_filter``) whatever its length, its items too
``x-sim-redirect: URL``         answer ``307 Temporary Redirect`` to URL (a provider's
                               base URL that moved, or a host that sends requests on)
``x-sim-fail-models: a,b``     the failure faults (``x-sim-status``, ``x-sim-delay-ms``,
                               ``x-sim-die-after-chunks``, ``x-sim-error-after-chunks``)
                               apply only to requests whose body ``model`` is in this
                               comma-separated list; others are answered normally (a
                               gateway forwards the headers to every fallback attempt)
=============================  ==========================================================

Streamed events are counted as written, the chat ``data: [DONE]`` line included; a
record's ``chunks_sent`` uses the same count. Unparsable values are ignored, as if the
header were absent; numbers are clamped to 10**12.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

USAGE_MODES = frozenset({"missing", "empty", "negative", "string", "float", "huge", "null"})
COMPAT_MODES = frozenset({"max-tokens-only", "max-completion-or-max", "lenient-stream"})
FRAMING_MODES = frozenset({"crlf", "nospace", "comments", "multiline", "bytewise", "unterminated"})
MAX_HEADER_NUMBER = 10**12


@dataclass(frozen=True, slots=True)
class Faults:
    status: int | None = None
    error_type: str | None = None
    delay_ms: float | None = None
    chunk_delay_ms: float | None = None
    output_tokens: int | None = None
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    no_usage: bool = False
    die_after_chunks: int | None = None
    error_after_chunks: int | None = None
    ignore_max: bool = False
    fail_models: frozenset[str] | None = None  # None: the failure faults apply to every model
    usage: str | None = None
    service_tier: str | None = None
    server_tool_uses: int | None = None
    server_tool_uses_by_name: dict[str, int] = field(default_factory=dict)
    tool_result_tokens: int | None = None
    compaction_tokens: int = 0
    background_ms: float | None = None
    compat: frozenset[str] = frozenset()
    block_prompt: str | None = None
    no_finish: bool = False
    finish_every_chunk: bool = False
    incomplete_reason: str | None = None
    framing: frozenset[str] = frozenset()
    redirect: str | None = None

    def uses_of(self, name: str, default: int) -> int:
        """How many times the server tool ``name`` is used (``x-sim-server-tool-uses``)."""
        by_name = self.server_tool_uses_by_name.get(name)
        if by_name is not None:
            return by_name
        return default if self.server_tool_uses is None else self.server_tool_uses

    def for_model(self, model: object) -> Faults:
        """These faults as they apply to a request for ``model``: without the failure faults
        when ``x-sim-fail-models`` is set and does not list it."""
        if self.fail_models is None or model in self.fail_models:
            return self
        return replace(
            self,
            status=None,
            error_type=None,
            delay_ms=None,
            die_after_chunks=None,
            error_after_chunks=None,
        )


NO_FAULTS = Faults()
_PREFIX = "x-sim-"


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return min(number, MAX_HEADER_NUMBER) if number >= 0 else None


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return min(number, float(MAX_HEADER_NUMBER)) if number >= 0 else None


def _flag(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")


def _names(value: str | None) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset(name.strip() for name in value.split(",") if name.strip())


def _choice(value: str | None, allowed: frozenset[str]) -> str | None:
    if value is None:
        return None
    choice = value.strip().lower()
    return choice if choice in allowed else None


def _modes(value: str | None, known: frozenset[str] = COMPAT_MODES) -> frozenset[str]:
    return (_names(value.lower()) or frozenset()) & known if value else frozenset()


def _tool_uses(value: str | None) -> tuple[int | None, dict[str, int]]:
    """``"3"`` -> (3, {}); ``"web_search=2,web_fetch=0"`` -> (None, {...})."""
    if value is None or "=" not in value:
        return _int(value), {}
    by_name = {}
    for part in value.split(","):
        name, _, count = part.partition("=")
        number = _int(count)
        if name.strip() and number is not None:
            by_name[name.strip()] = number
    return None, by_name


def parse_faults(headers: Mapping[str, str]) -> Faults:
    """Read the ``x-sim-*`` headers; `NO_FAULTS` (no allocation) when there are none."""
    if not any(name[:6].lower() == _PREFIX for name in headers):
        return NO_FAULTS
    get = headers.get
    faults = Faults(
        status=_int(get("x-sim-status")),
        error_type=get("x-sim-error-type"),
        delay_ms=_float(get("x-sim-delay-ms")),
        chunk_delay_ms=_float(get("x-sim-chunk-delay-ms")),
        output_tokens=_int(get("x-sim-output-tokens")),
        cached_tokens=_int(get("x-sim-cached-tokens")) or 0,
        cache_write_tokens=_int(get("x-sim-cache-write-tokens")) or 0,
        cache_write_1h_tokens=_int(get("x-sim-cache-write-1h-tokens")) or 0,
        reasoning_tokens=_int(get("x-sim-reasoning-tokens")) or 0,
        die_after_chunks=_int(get("x-sim-die-after-chunks")),
        error_after_chunks=_int(get("x-sim-error-after-chunks")),
        ignore_max=_flag(get("x-sim-ignore-max")),
        fail_models=_names(get("x-sim-fail-models")),
    )
    return _with_billing_faults(faults, headers)


def _with_billing_faults(faults: Faults, headers: Mapping[str, str]) -> Faults:
    get = headers.get
    usage = _choice(get("x-sim-usage"), USAGE_MODES)
    uses, uses_by_name = _tool_uses(get("x-sim-server-tool-uses"))
    tier = (get("x-sim-service-tier") or "").strip().lower()
    return replace(
        faults,
        no_usage=_flag(get("x-sim-no-usage")) or usage == "missing",
        usage=usage,
        service_tier=tier or None,
        server_tool_uses=uses,
        server_tool_uses_by_name=uses_by_name,
        tool_result_tokens=_int(get("x-sim-tool-result-tokens")),
        compaction_tokens=_int(get("x-sim-compaction-tokens")) or 0,
        background_ms=_float(get("x-sim-background-ms")),
        compat=_modes(get("x-sim-compat")),
        block_prompt=(get("x-sim-block-prompt") or "").strip().upper() or None,
        no_finish=_flag(get("x-sim-no-finish")),
        finish_every_chunk=_flag(get("x-sim-finish-every-chunk")),
        incomplete_reason=(get("x-sim-incomplete-reason") or "").strip() or None,
        framing=_modes(get("x-sim-framing"), FRAMING_MODES),
        redirect=(get("x-sim-redirect") or "").strip() or None,
    )
