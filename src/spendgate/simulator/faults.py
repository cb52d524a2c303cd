"""Per-request behaviour injection through ``x-sim-*`` request headers.

=============================  ==========================================================
header                         effect
=============================  ==========================================================
``x-sim-status: N``            answer with status N in the endpoint's error dialect
                               (``retry-after`` on 429); ``x-sim-error-type`` overrides
                               the error type (e.g. ``insufficient_quota``)
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
``x-sim-fail-models: a,b``     the failure faults (``x-sim-status``, ``x-sim-delay-ms``,
                               ``x-sim-die-after-chunks``, ``x-sim-error-after-chunks``)
                               apply only to requests whose body ``model`` is in this
                               comma-separated list; others are answered normally (a
                               gateway forwards the headers to every fallback attempt)
=============================  ==========================================================

Streamed events are counted as written, the chat ``data: [DONE]`` line included; a
record's ``chunks_sent`` uses the same count. Unparsable values are ignored, as if the
header were absent.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping


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
    return number if number >= 0 else None


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def _flag(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")


def _names(value: str | None) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset(name.strip() for name in value.split(",") if name.strip())


def parse_faults(headers: Mapping[str, str]) -> Faults:
    """Read the ``x-sim-*`` headers; `NO_FAULTS` (no allocation) when there are none."""
    if not any(name[:6].lower() == _PREFIX for name in headers):
        return NO_FAULTS
    get = headers.get
    return Faults(
        status=_int(get("x-sim-status")),
        error_type=get("x-sim-error-type"),
        delay_ms=_float(get("x-sim-delay-ms")),
        chunk_delay_ms=_float(get("x-sim-chunk-delay-ms")),
        output_tokens=_int(get("x-sim-output-tokens")),
        cached_tokens=_int(get("x-sim-cached-tokens")) or 0,
        cache_write_tokens=_int(get("x-sim-cache-write-tokens")) or 0,
        cache_write_1h_tokens=_int(get("x-sim-cache-write-1h-tokens")) or 0,
        reasoning_tokens=_int(get("x-sim-reasoning-tokens")) or 0,
        no_usage=_flag(get("x-sim-no-usage")),
        die_after_chunks=_int(get("x-sim-die-after-chunks")),
        error_after_chunks=_int(get("x-sim-error-after-chunks")),
        ignore_max=_flag(get("x-sim-ignore-max")),
        fail_models=_names(get("x-sim-fail-models")),
    )
