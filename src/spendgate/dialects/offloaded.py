"""Work on large request bodies that runs in a worker process, off the event loop
(`spendgate.services.offload`): each function takes the body's bytes, parses them there,
and returns a small answer. Top-level and pure, so a process pool can call them."""

from __future__ import annotations

import orjson

from spendgate.dialects.base import SurfaceSpec
from spendgate.domain.fingerprint import fingerprint
from spendgate.domain.json_shape import Shape, shape


def shape_of(raw: bytes) -> Shape | None:
    """The body's shape; None if it is not JSON (the caller reports that itself)."""
    try:
        return shape(orjson.loads(raw))
    except orjson.JSONDecodeError:
        return None


def count_input(surface: str, model: str, raw: bytes) -> tuple[int, bool]:
    """The request's input tokens as its surface counts them: (tokens, exact)."""
    from spendgate.dialects import SURFACES  # the registry imports this module's siblings

    spec: SurfaceSpec = next(s for s in SURFACES if s.surface.value == surface)
    counted = spec.input_counter(model, orjson.loads(raw))
    return counted.tokens, counted.exact


def fingerprint_of(raw: bytes, model: str | None = None) -> str:
    """The loop-detection fingerprint of the request (`spendgate.domain.fingerprint`);
    ``model``: the model named in the path, for a surface whose body has none."""
    body = orjson.loads(raw)
    if model:
        body["model"] = model
    return fingerprint(body)
