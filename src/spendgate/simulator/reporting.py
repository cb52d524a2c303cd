"""What a provider *says* about a request: the service tier it reports, and usage anomalies.

Service tiers (``x-sim-service-tier`` overrides the outcome in both dialects):

* OpenAI (chat, Responses): the request's ``service_tier`` is one of ``auto``, ``default``,
  ``flex``, ``scale``, ``priority``, ``fast`` (Responses also ``ultrafast``). The answer
  reports the tier used: ``auto`` and no field -> ``default``; ``fast`` -> ``priority``;
  the others as asked. Every chat chunk and every Responses snapshot carries it.
* Anthropic: the request's ``service_tier`` is ``auto`` or ``standard_only``; the answer
  reports ``usage.service_tier``: ``standard`` unless the header says ``priority`` or
  ``batch`` (``standard_only`` never gets ``priority``). Streams report it in the
  ``message_start`` usage.
* Gemini: the request's top-level ``serviceTier`` (``standard``, ``flex``, ``priority``)
  is reported back in the response header ``x-gemini-service-tier``; a request that names
  none gets no such header.

Usage anomalies (``x-sim-usage``): the usage object is built truthfully, then distorted
as it goes on the wire; the record's ground-truth counts are not touched, its
``usage_reported`` shows exactly what was sent.
"""

from __future__ import annotations

from typing import Any

OPENAI_TIERS = frozenset({"auto", "default", "flex", "scale", "priority", "fast"})
RESPONSES_TIERS = OPENAI_TIERS | {"ultrafast"}
ANTHROPIC_TIERS = frozenset({"auto", "standard_only"})
_ANTHROPIC_REPORTED = frozenset({"standard", "priority", "batch"})
_GEMINI_REPORTED = frozenset({"standard", "priority", "flex"})
HUGE = 10**18


def openai_tier(requested: object, forced: str | None) -> str:
    """The ``service_tier`` an OpenAI answer reports."""
    if forced:
        return forced
    if requested in (None, "auto"):
        return "default"
    if requested == "fast":
        return "priority"
    return str(requested)


def anthropic_tier(requested: object, forced: str | None) -> str:
    """The ``usage.service_tier`` an Anthropic answer reports."""
    if forced not in _ANTHROPIC_REPORTED:
        return "standard"
    if forced == "priority" and requested == "standard_only":
        return "standard"
    return str(forced)


def gemini_tier(requested: object, forced: str | None) -> str | None:
    """The ``x-gemini-service-tier`` a Gemini answer reports: the forced tier, else the
    request's ``serviceTier`` (lower-case; an unknown name is ``standard``); None, and no
    header, when neither names one."""
    if forced:
        return forced
    if not isinstance(requested, str):
        return None
    tier = requested.lower().removeprefix("service_tier_")
    return tier if tier in _GEMINI_REPORTED else "standard"


def _distort_number(value: int, mode: str) -> Any:
    if mode == "negative":
        return -value if value else -1
    if mode == "string":
        return str(value)
    if mode == "float":
        return value + 0.5
    if mode == "huge":
        return HUGE
    return None  # "null"


def _distort(value: Any, mode: str) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return _distort_number(value, mode)
    if isinstance(value, dict):
        return {key: _distort(item, mode) for key, item in value.items()}
    return value


def distort_usage(usage: dict[str, Any], mode: str | None) -> dict[str, Any]:
    """``usage`` as ``x-sim-usage: mode`` sends it (a copy; unchanged for no mode)."""
    if mode is None or mode == "missing":
        return usage
    if mode == "empty":
        return {}
    distorted: dict[str, Any] = _distort(usage, mode)
    return distorted
