"""The API dialects spendgate speaks, one adapter each, and the surfaces they serve.

`surface_for` / `SURFACES` list every operation the gateway proxies; `for_request` picks
the dialect that renders an error for a request whose surface is not known yet (an unknown
route, a bad key on ``GET /v1/models``).
"""

from __future__ import annotations

from collections.abc import Mapping

from spendgate.dialects.anthropic import ANTHROPIC, COUNT_TOKENS, MESSAGES
from spendgate.dialects.base import DialectAdapter, Prepared, SurfaceSpec
from spendgate.dialects.gemini import GEMINI, GEMINI_COUNT_TOKENS, GENERATE, STREAM_GENERATE
from spendgate.dialects.openai import EMBEDDINGS, OPENAI, RESPONSES_INPUT_TOKENS
from spendgate.dialects.openai_chat import CHAT
from spendgate.dialects.openai_responses import RESPONSES
from spendgate.domain.models import Dialect

__all__ = [
    "ANTHROPIC",
    "CHAT",
    "COUNT_TOKENS",
    "EMBEDDINGS",
    "GEMINI",
    "GEMINI_COUNT_TOKENS",
    "GENERATE",
    "MESSAGES",
    "OPENAI",
    "RESPONSES",
    "RESPONSES_INPUT_TOKENS",
    "STREAM_GENERATE",
    "SURFACES",
    "DialectAdapter",
    "Prepared",
    "SurfaceSpec",
    "adapter",
    "for_request",
]

SURFACES: tuple[SurfaceSpec, ...] = (
    CHAT,
    RESPONSES,
    EMBEDDINGS,
    MESSAGES,
    COUNT_TOKENS,
    RESPONSES_INPUT_TOKENS,
    GENERATE,
    STREAM_GENERATE,
    GEMINI_COUNT_TOKENS,
)
# The order in which dialects claim a request: the most specific first, OpenAI last.
_DIALECTS: tuple[DialectAdapter, ...] = (ANTHROPIC, GEMINI, OPENAI)
_BY_DIALECT = {adapter.dialect: adapter for adapter in _DIALECTS}


def adapter(dialect: Dialect) -> DialectAdapter:
    return _BY_DIALECT[dialect]


def for_request(path: str, headers: Mapping[str, str]) -> DialectAdapter:
    return next(candidate for candidate in _DIALECTS if candidate.owns(path, headers))
