"""``POST /v1/embeddings`` (CLIENTS.md §4) and ``GET /v1/models``."""

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
from .validation import check_model

if TYPE_CHECKING:
    from aiohttp import web

    from .context import Call

MODEL_CREATED = 1_700_000_000
_INPUT_ERROR = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."


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
        isinstance(t, int) and not isinstance(t, bool) for t in value
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


def _check(body: dict[str, Any]) -> str | None:
    dims = body.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
        return "Invalid 'dimensions': integer below minimum value 1 or not an integer."
    if body.get("encoding_format", "float") not in ("float", "base64"):
        return "Invalid 'encoding_format': expected 'float' or 'base64'."
    return check_model(body)


async def embeddings(call: Call) -> web.StreamResponse:
    body = call.body
    problem = _check(body)
    inputs = split_inputs(body.get("input"))
    if problem or inputs is None:
        return call.error(400, problem or _INPUT_ERROR)
    dimensions: int = body.get("dimensions") or call.options.embedding_dimensions
    as_base64 = body.get("encoding_format") == "base64"
    data, total = [], 0
    for index, item in enumerate(inputs):
        key, count = _input_key(item)
        total += count
        vector = embedding_bytes(key, dimensions)
        encoded = base64.b64encode(vector).decode() if as_base64 else _as_floats(vector)
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    usage = {"prompt_tokens": total, "total_tokens": total}
    payload: dict[str, Any] = {"object": "list", "data": data, "model": body["model"]}
    if not call.faults.no_usage:
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
