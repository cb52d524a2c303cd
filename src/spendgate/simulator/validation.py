"""The few request checks a real provider makes before generating anything."""

from __future__ import annotations

from typing import Any


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_model(body: dict[str, Any]) -> str | None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return "you must provide a model parameter"
    return None


def check_positive(body: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = body.get(name)
        if value is not None and (not _is_int(value) or value < 1):
            return f"Invalid '{name}': integer below minimum value 1 or not an integer."
    return None


def check_chat(body: dict[str, Any]) -> str | None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "Missing required parameter: 'messages'."
    n = body.get("n", 1)
    if n is not None and (not _is_int(n) or not 1 <= n <= 128):
        return "Invalid 'n': expected an integer between 1 and 128."
    return check_model(body) or check_positive(body, "max_completion_tokens", "max_tokens")


def check_responses(body: dict[str, Any]) -> str | None:
    if not isinstance(body.get("input"), str | list):
        return "Missing required parameter: 'input'."
    return check_model(body) or check_positive(body, "max_output_tokens")


def check_anthropic(body: dict[str, Any], need_max: bool = True) -> str | None:
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    if not isinstance(body.get("messages"), list):
        return "messages: Field required"
    if need_max and "max_tokens" not in body:
        return "max_tokens: Field required"
    return check_positive(body, "max_tokens") if need_max else None
