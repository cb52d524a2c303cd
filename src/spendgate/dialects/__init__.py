"""The API dialects spendgate speaks, one adapter each, and the surfaces they serve.

`surface_for` / `SURFACES` list every operation the gateway proxies; `for_request` picks
the dialect that renders an error for a request (its surface's dialect, or the one its path
and headers name when the surface is not known yet: an unknown route, a bad key on ``GET
/v1/models``), including a client's own reading of a dialect (`codex`).
"""

from __future__ import annotations

from collections.abc import Mapping

from spendgate.dialects.anthropic import ANTHROPIC, COUNT_TOKENS, MESSAGES
from spendgate.dialects.base import DialectAdapter, Prepared, SurfaceSpec
from spendgate.dialects.codex import CODEX
from spendgate.dialects.gemini import GEMINI, GEMINI_COUNT_TOKENS, GENERATE, STREAM_GENERATE
from spendgate.dialects.openai import EMBEDDINGS, OPENAI, RESPONSES_INPUT_TOKENS
from spendgate.dialects.openai_chat import CHAT
from spendgate.dialects.openai_responses import RESPONSES
from spendgate.domain.models import Dialect

__all__ = [
    "ANTHROPIC",
    "CHAT",
    "CODEX",
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
# The order in which dialects claim a request: the most specific first, OpenAI last. A
# client's variant of a dialect (Codex's reading of OpenAI errors) comes before it.
_DIALECTS: tuple[DialectAdapter, ...] = (ANTHROPIC, GEMINI, CODEX, OPENAI)
_BY_DIALECT = {adapter.dialect: adapter for adapter in (ANTHROPIC, GEMINI, OPENAI)}


def adapter(dialect: Dialect) -> DialectAdapter:
    return _BY_DIALECT[dialect]


def for_request(path: str, headers: Mapping[str, str]) -> DialectAdapter:
    return next(candidate for candidate in _DIALECTS if candidate.owns(path, headers))
