"""The OpenAI endpoints' request checks (chat, Responses, embeddings).

Refused with a 400 ``invalid_request_error`` (``param`` and ``code`` set): wrong JSON types
(message content that is a number, ``stream`` that is not a boolean, ``tools`` that is not
an array, Responses ``input`` items that are not objects...), unknown roles and content
part types, ``n`` outside 1..128, output caps below 1, unknown ``service_tier`` values,
``previous_response_id`` together with ``conversation``, ``background`` with ``store:
false``, a Responses call naming an embedding model and an embeddings call naming a chat
model. A chat call naming an embedding model is a 404 with OpenAI's own wording. (The
embeddings checks are in `openai_misc`.)

``x-sim-compat`` relaxes them: ``lenient-stream`` accepts any ``stream`` value,
``max-tokens-only`` ignores ``max_completion_tokens``, ``max-completion-or-max`` accepts
any value in both caps and only refuses a chosen cap below 1.
"""

from __future__ import annotations

import re
from typing import Any

from .reporting import OPENAI_TIERS, RESPONSES_TIERS
from .validation import (
    Problem,
    check_bool,
    check_int_range,
    check_model,
    invalid_type,
    invalid_value,
    is_int,
    is_one_of,
    missing,
)

CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
CHAT_PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal"})
CHAT_TOOL_TYPES = frozenset({"function", "custom"})
MAX_CHOICES = 128
_CHAT_MODEL = re.compile(r"^(gpt-|chatgpt-|o\d|claude-|gemini-)")
NOT_A_CHAT_MODEL = (
    "This is not a chat model and thus not supported in the v1/chat/completions endpoint. "
    "Did you mean to use v1/completions?"
)


def is_embedding_model(model: str) -> bool:
    return "embed" in model.lower()


def is_chat_model(model: str) -> bool:
    return bool(_CHAT_MODEL.match(model.lower())) and not is_embedding_model(model)


def _check_part(part: object, where: str) -> Problem | None:
    if not isinstance(part, dict):
        return invalid_type(where, "an object", part)
    kind = part.get("type")
    if kind is None:
        return missing(f"{where}.type")
    if not is_one_of(kind, CHAT_PART_TYPES):
        return invalid_value(f"{where}.type", kind, CHAT_PART_TYPES)
    if kind == "text" and not isinstance(part.get("text"), str):
        return invalid_type(f"{where}.text", "a string", part.get("text"))
    return None


def _check_content(message: dict[str, Any], where: str) -> Problem | None:
    content = message.get("content")
    if content is None:
        if message.get("role") == "assistant":
            return None  # tool_calls / function_call instead
        return missing(f"{where}.content")
    if isinstance(content, str):
        return None
    if not isinstance(content, list):
        return invalid_type(f"{where}.content", "one of a string or array of objects", content)
    for index, part in enumerate(content):
        problem = _check_part(part, f"{where}.content[{index}]")
        if problem:
            return problem
    return None


def _check_message(message: object, where: str) -> Problem | None:
    if not isinstance(message, dict):
        return invalid_type(where, "an object", message)
    role = message.get("role")
    if role is None:
        return missing(f"{where}.role")
    if not is_one_of(role, CHAT_ROLES):
        return invalid_value(f"{where}.role", role, CHAT_ROLES)
    return _check_content(message, where)


def _check_messages(messages: object) -> Problem | None:
    if messages is None:
        return missing("messages")
    if not isinstance(messages, list):
        return invalid_type("messages", "an array", messages)
    if not messages:
        message = (
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead."
        )
        return Problem(message, "messages", "empty_array")
    for index, message in enumerate(messages):
        problem = _check_message(message, f"messages[{index}]")
        if problem:
            return problem
    return None


def _check_chat_tool(tool: object, where: str) -> Problem | None:
    if not isinstance(tool, dict):
        return invalid_type(where, "an object", tool)
    kind = tool.get("type")
    if kind is None:
        return missing(f"{where}.type")
    if not is_one_of(kind, CHAT_TOOL_TYPES):
        return invalid_value(f"{where}.type", kind, CHAT_TOOL_TYPES)
    spec = tool.get(kind)
    if not isinstance(spec, dict):
        return invalid_type(f"{where}.{kind}", "an object", spec)
    if not isinstance(spec.get("name"), str):
        return missing(f"{where}.{kind}.name")
    return None


def check_tools(body: dict[str, Any], chat: bool) -> Problem | None:
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        return invalid_type("tools", "an array", tools)
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if chat:
            problem = _check_chat_tool(tool, where)
        elif not isinstance(tool, dict):
            problem = invalid_type(where, "an object", tool)
        elif not isinstance(tool.get("type"), str):
            problem = missing(f"{where}.type")
        else:
            problem = None
        if problem:
            return problem
    return None


def check_stream(body: dict[str, Any], compat: frozenset[str]) -> Problem | None:
    if "lenient-stream" in compat:
        return None
    problem = check_bool(body, "stream")
    options = body.get("stream_options")
    if problem is None and options is not None and not isinstance(options, dict):
        problem = invalid_type("stream_options", "an object", options)
    return problem


def _check_tier(body: dict[str, Any], allowed: frozenset[str]) -> Problem | None:
    tier = body.get("service_tier")
    if tier is None:
        return None
    if not isinstance(tier, str):
        return invalid_type("service_tier", "a string", tier)
    return None if tier in allowed else invalid_value("service_tier", tier, allowed)


def lenient_limit(body: dict[str, Any]) -> int | None:
    """``max_completion_tokens or max_tokens`` as a lax server computes it."""
    values = [body.get(name) for name in ("max_completion_tokens", "max_tokens")]
    chosen = [value for value in values if is_int(value) and value]
    return chosen[0] if chosen else None


def _check_chat_limits(body: dict[str, Any], compat: frozenset[str]) -> Problem | None:
    if "max-completion-or-max" in compat:
        limit = lenient_limit(body)
        if limit is not None and limit < 1:
            return check_int_range({"max_tokens": limit}, "max_tokens", 1)
        return None
    names = (
        ["max_tokens"] if "max-tokens-only" in compat else ["max_completion_tokens", "max_tokens"]
    )
    for name in names:
        problem = check_int_range(body, name, 1)
        if problem:
            return problem
    return None


def _check_chat_model(body: dict[str, Any]) -> Problem | None:
    problem = check_model(body)
    if problem is None and is_embedding_model(body["model"]):
        return Problem(NOT_A_CHAT_MODEL, "model", None, status=404)
    return problem


def check_chat(body: dict[str, Any], compat: frozenset[str] = frozenset()) -> Problem | None:
    return (
        _check_chat_model(body)
        or _check_messages(body.get("messages"))
        or check_stream(body, compat)
        or check_int_range(body, "n", 1, MAX_CHOICES)
        or _check_chat_limits(body, compat)
        or check_tools(body, chat=True)
        or _check_tier(body, OPENAI_TIERS)
    )


def _check_responses_model(body: dict[str, Any]) -> Problem | None:
    problem = check_model(body)
    if problem is None and is_embedding_model(body["model"]):
        message = f"The model '{body['model']}' is not supported with the Responses API."
        return Problem(message, "model", "model_not_supported")
    return problem


def _check_input_item(item: object, where: str) -> Problem | None:
    if not isinstance(item, dict):
        return invalid_type(where, "an object", item)
    if item.get("type") == "item_reference" and not isinstance(item.get("id"), str):
        return missing(f"{where}.id")
    content = item.get("content")
    if content is None or isinstance(content, str):
        return None
    if not isinstance(content, list):
        return invalid_type(f"{where}.content", "one of a string or array of objects", content)
    for index, part in enumerate(content):
        if not isinstance(part, dict):
            return invalid_type(f"{where}.content[{index}]", "an object", part)
    return None


def _check_input(body: dict[str, Any]) -> Problem | None:
    value = body.get("input")
    if value is None:
        stateful = body.get("previous_response_id") or body.get("conversation")
        return None if stateful else missing("input")
    if isinstance(value, str):
        return None
    if not isinstance(value, list):
        return invalid_type("input", "one of a string or array of objects", value)
    for index, item in enumerate(value):
        problem = _check_input_item(item, f"input[{index}]")
        if problem:
            return problem
    return None


def conversation_id(value: object) -> str | None:
    """The id in a ``conversation`` field (``"conv_..."`` or ``{"id": "conv_..."}``)."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) else None


def _check_state(body: dict[str, Any]) -> Problem | None:
    previous, conversation = body.get("previous_response_id"), body.get("conversation")
    if previous is not None and not isinstance(previous, str):
        return invalid_type("previous_response_id", "a string", previous)
    if conversation is not None and conversation_id(conversation) is None:
        return invalid_type("conversation", "one of a string or an object", conversation)
    if previous is not None and conversation is not None:
        message = (
            "Mutually exclusive parameters: Ensure you are only providing one of: "
            "'previous_response_id' or 'conversation'."
        )
        return Problem(message, None, "mutually_exclusive_parameters")
    if body.get("background") is True and body.get("store") is False:
        return Problem("Background mode requires 'store' to be true.", "background", None)
    return None


def _check_instructions(body: dict[str, Any]) -> Problem | None:
    instructions = body.get("instructions")
    if instructions is None or isinstance(instructions, str | list):
        return None
    return invalid_type("instructions", "a string", instructions)


def check_responses(body: dict[str, Any], compat: frozenset[str] = frozenset()) -> Problem | None:
    return (
        _check_responses_model(body)
        or _check_input(body)
        or _check_instructions(body)
        or check_stream(body, compat)
        or check_bool(body, "background")
        or check_bool(body, "store")
        or check_int_range(body, "max_output_tokens", 16)  # OpenAI's minimum
        or check_tools(body, chat=False)
        or _check_tier(body, RESPONSES_TIERS)
        or _check_state(body)
    )
