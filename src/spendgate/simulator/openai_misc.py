"""``POST /v1/embeddings`` (CLIENTS.md §4) and ``GET /v1/models``.

Embeddings refused with a 400: a chat model (``gpt-*``, ``o1``..., ``claude-*``),
``dimensions`` that is not an integer >= 1, above the model's size (1536 for
``text-embedding-3-small``, 3072 for ``-3-large`` and unknown models) or given to
``text-embedding-ada-002`` at all, an unknown ``encoding_format``, more than 2048 inputs,
an input over 8192 tokens and more than 300,000 tokens in all. So no request makes the
simulator allocate more than 2048 vectors of 3072 floats.
"""

from __future__ import annotations

import base64
import hashlib
import math
import sys
from array import array
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from . import records, wire
from .tokens import text_tokens
from .validation import Problem, check_int_range, check_model
from .validation_openai import is_chat_model

if TYPE_CHECKING:
    from aiohttp import web

    from .context import Call

MODEL_CREATED = 1_700_000_000
_INPUT_ERROR = Problem(
    "'$.input' is invalid. Please check the API reference: "
    "https://platform.openai.com/docs/api-reference.",
    "input",
)
MODEL_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072}
NO_DIMENSIONS_MODELS = ("text-embedding-ada-002",)
MAX_DIMENSIONS = 3072
MAX_INPUTS = 2048
MAX_TOKENS_PER_INPUT = 8192
MAX_TOKENS_PER_REQUEST = 300_000
MAX_TOKEN_ID = 2**31 - 1


@lru_cache(maxsize=2048)
def embedding_bytes(key: bytes, dimensions: int) -> bytes:
    """A deterministic unit vector for ``key`` as little-endian float32 bytes."""
    raw = array("H", hashlib.shake_256(key).digest(2 * dimensions))
    values = [x / 32767.5 - 1.0 for x in raw]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    floats = array("f", [v / norm for v in values])
    if sys.byteorder != "little":
        floats.byteswap()
    return floats.tobytes()


def _as_floats(data: bytes) -> list[float]:
    floats = array("f")
    floats.frombytes(data)
    if sys.byteorder != "little":
        floats.byteswap()
    return floats.tolist()


def _is_tokens(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= MAX_TOKEN_ID for t in value
    )


def split_inputs(value: object) -> list[str | list[int]] | None:
    """The inputs of an embeddings request, or None when the shape is invalid."""
    if isinstance(value, str):
        return [value] if value else None
    if not isinstance(value, list) or not value:
        return None
    if _is_tokens(value):
        return [value]
    inputs: list[str | list[int]] = []
    for item in value:
        if not item or not (isinstance(item, str) or _is_tokens(item)):
            return None
        inputs.append(item)
    return inputs


def _input_key(item: str | list[int]) -> tuple[bytes, int]:
    if isinstance(item, str):
        return item.encode("utf-8"), max(1, text_tokens(item))
    return array("q", item).tobytes(), len(item)


def _model_size(model: str) -> int:
    for name, size in MODEL_DIMENSIONS.items():
        if model.startswith(name):
            return size
    return MAX_DIMENSIONS


def _check_dimensions(body: dict[str, Any]) -> Problem | None:
    model: str = body["model"]
    if body.get("dimensions") is not None and model.startswith(NO_DIMENSIONS_MODELS):
        return Problem("This model does not support specifying dimensions.", "dimensions")
    return check_int_range(body, "dimensions", 1, _model_size(model))


def _check(body: dict[str, Any]) -> Problem | None:
    problem = check_model(body)
    if problem:
        return problem
    if is_chat_model(body["model"]):
        return Problem(f"The model '{body['model']}' does not support embeddings.", "model")
    if body.get("encoding_format", "float") not in ("float", "base64"):
        return Problem(
            "Invalid 'encoding_format': expected 'float' or 'base64'.", "encoding_format"
        )
    return _check_dimensions(body)


def _check_sizes(counts: list[int]) -> Problem | None:
    if len(counts) > MAX_INPUTS:
        return Problem(f"'$.input' is too long: at most {MAX_INPUTS} inputs.", "input")
    longest = max(counts)
    if longest > MAX_TOKENS_PER_INPUT:
        message = (
            f"This model's maximum context length is {MAX_TOKENS_PER_INPUT} tokens, however "
            f"you requested {longest} tokens ({longest} in your prompt; 0 for the "
            "completion). Please reduce your prompt; or completion length."
        )
        return Problem(message, None, "context_length_exceeded")
    total = sum(counts)
    if total > MAX_TOKENS_PER_REQUEST:
        message = f"Requested {total} tokens, max {MAX_TOKENS_PER_REQUEST} tokens per request"
        return Problem(message, None, "max_tokens_per_request")
    return None


async def embeddings(call: Call) -> web.StreamResponse:
    body = call.body
    inputs = split_inputs(body.get("input"))
    problem = _check(body) or (_INPUT_ERROR if inputs is None else None)
    if problem or inputs is None:
        return call.refuse(problem or _INPUT_ERROR)
    keys = [_input_key(item) for item in inputs]
    problem = _check_sizes([count for _, count in keys])
    if problem:
        return call.refuse(problem)
    dimensions: int = body.get("dimensions") or call.options.embedding_dimensions
    as_base64 = body.get("encoding_format") == "base64"
    data, total = [], 0
    for index, (key, count) in enumerate(keys):
        total += count
        vector = embedding_bytes(key, dimensions)
        encoded = base64.b64encode(vector).decode() if as_base64 else _as_floats(vector)
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    usage = call.report_usage({"prompt_tokens": total, "total_tokens": total})
    payload: dict[str, Any] = {"object": "list", "data": data, "model": body["model"]}
    if usage is not None:
        payload["usage"] = usage
        call.record.usage_reported = usage
    call.record.input_tokens = total
    call.record.finish(records.OK)
    return call.json(payload)


def _openai_models(ids: tuple[str, ...]) -> dict[str, Any]:
    data = [
        {"id": m, "object": "model", "created": MODEL_CREATED, "owned_by": "system"} for m in ids
    ]
    return {"object": "list", "data": data}


def _anthropic_models(ids: tuple[str, ...]) -> dict[str, Any]:
    claude = [m for m in ids if m.startswith("claude")]
    data = [
        {
            "type": "model",
            "id": m,
            "display_name": m.replace("-", " ").title(),
            "created_at": "2025-01-01T00:00:00Z",
        }
        for m in claude
    ]
    first, last = (claude[0], claude[-1]) if claude else (None, None)
    return {"data": data, "has_more": False, "first_id": first, "last_id": last}


async def models(call: Call) -> web.StreamResponse:
    """The OpenAI list; the Anthropic one when the request has ``anthropic-version``."""
    call.record.finish(records.OK)
    if call.dialect is wire.Dialect.ANTHROPIC:
        return call.json(_anthropic_models(call.options.models))
    return call.json(_openai_models(call.options.models))
