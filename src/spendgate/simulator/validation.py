"""Request checks shared by both dialects: the `Problem` a refusal carries, and helpers.

A real provider refuses a malformed body with a 400 before generating anything; so does
the simulator, never with a 5xx. The OpenAI-shaped checks are in `validation_openai`,
the Anthropic ones in `validation_anthropic`. Messages follow the providers' wording
(OpenAI: ``Invalid type for 'messages[0].content': expected ..., but got ... instead.``
with ``param`` and ``code``; Anthropic: ``messages.0.content: Input should be ...``).
Every body deeper than `MAX_DEPTH` levels is refused (`check_depth`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeGuard

MAX_DEPTH = 128
"""Deepest JSON nesting accepted (orjson itself cannot write more than 254 levels)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a request is refused: the answer's status, message, and OpenAI ``param``/``code``."""

    message: str
    param: str | None = None
    code: str | None = None
    status: int = 400


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def is_one_of(value: object, allowed: frozenset[str]) -> bool:
    """``value in allowed`` for any JSON value (a list or an object is never in it)."""
    return isinstance(value, str) and value in allowed


def json_type(value: object) -> str:
    """The JSON name of ``value``'s type, as OpenAI's messages spell it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def invalid_type(param: str, expected: str, value: object) -> Problem:
    message = (
        f"Invalid type for '{param}': expected {expected}, but got {json_type(value)} instead."
    )
    return Problem(message, param, "invalid_type")


def missing(param: str) -> Problem:
    return Problem(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")


def invalid_value(param: str, value: object, allowed: tuple[str, ...] | frozenset[str]) -> Problem:
    names = [f"'{name}'" for name in sorted(allowed)]
    listed = ", ".join(names[:-1]) + f", and {names[-1]}" if len(names) > 1 else names[0]
    message = f"Invalid value: '{value}'. Supported values are: {listed}."
    return Problem(message, param, "invalid_value")


def check_int_range(
    body: dict[str, Any], name: str, low: int, high: int | None = None
) -> Problem | None:
    """``body[name]``, when present and not null, must be an integer in ``[low, high]``."""
    value = body.get(name)
    if value is None:
        return None
    if not is_int(value):
        return invalid_type(name, "an integer", value)
    if value < low:
        message = (
            f"Invalid '{name}': integer below minimum value. "
            f"Expected a value >= {low}, but got {value} instead."
        )
        return Problem(message, name, "integer_below_min_value")
    if high is not None and value > high:
        message = (
            f"Invalid '{name}': integer above maximum value. "
            f"Expected a value <= {high}, but got {value} instead."
        )
        return Problem(message, name, "integer_above_max_value")
    return None


def check_bool(body: dict[str, Any], name: str) -> Problem | None:
    value = body.get(name)
    if value is None or isinstance(value, bool):
        return None
    return invalid_type(name, "a boolean", value)


def check_model(body: dict[str, Any]) -> Problem | None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return Problem("you must provide a model parameter", "model", None)
    return None


_CONTAINERS = (dict, list)


def too_deep(body: object, raw: bytes | None = None, limit: int = MAX_DEPTH) -> bool:
    """Whether ``body`` nests lists/objects more than ``limit`` levels deep.

    ``raw``, the body's bytes, skips the walk when they hold too few brackets to nest
    that deep (most requests)."""
    if raw is not None and raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    level: list[Any] = [body]
    for _ in range(limit):
        below: list[Any] = []
        for value in level:
            items = value.values() if type(value) is dict else value
            below.extend([item for item in items if type(item) in _CONTAINERS])
        if not below:
            return False
        level = below
    return True
