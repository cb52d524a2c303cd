"""The Anthropic Messages request checks (``/v1/messages`` and ``/count_tokens``).

Refused with a 400 ``invalid_request_error``: a missing or mistyped ``model``,
``messages`` (not a list, empty, a message that is not an object, a role other than
``user``/``assistant``, content that is neither a string nor a list of blocks, a block
type Anthropic does not know), ``max_tokens`` (required, an integer >= 1), ``stream``
that is not a boolean (unless ``x-sim-compat: lenient-stream``), ``system`` that is
neither a string nor a list of text blocks, ``tools`` that is not a list of tool objects
(custom tools need ``name`` and ``input_schema``; ``max_uses`` >= 1), ``thinking`` of an
unknown type or with ``budget_tokens`` < 1024 or >= ``max_tokens`` (allowed above
``max_tokens`` with the ``interleaved-thinking-*`` beta, as Anthropic allows it), and a
``service_tier`` other than ``auto``/``standard_only``.
"""

from __future__ import annotations

import re
from typing import Any

from .reporting import ANTHROPIC_TIERS
from .validation import Problem, is_int, is_one_of

BLOCK_TYPES = frozenset(
    {
        "text",
        "image",
        "document",
        "search_result",
        "thinking",
        "redacted_thinking",
        "tool_use",
        "tool_result",
        "server_tool_use",
        "web_search_tool_result",
        "web_fetch_tool_result",
        "code_execution_tool_result",
        "bash_code_execution_tool_result",
        "text_editor_code_execution_tool_result",
        "tool_search_tool_result",
        "container_upload",
        "advisor_tool_result",
        "mcp_tool_use",
        "mcp_tool_result",
        "mcp_tool_listing",
        "compaction",
        "tool_addition",
        "tool_removal",
        "fallback",
    }
)
THINKING_TYPES = ("enabled", "disabled", "adaptive")
MIN_THINKING_BUDGET = 1024
_VERSIONED_TOOL = re.compile(r"^[a-z][a-z0-9_]*_\d{8}$")
THINKING_BUDGET_TOO_BIG = (
    "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
    "documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
    "#max-tokens-and-context-window-size"
)


def _bad(message: str) -> Problem:
    return Problem(message)


def _check_block(block: object, where: str) -> Problem | None:
    if not isinstance(block, dict):
        return _bad(f"{where}: Input should be a valid dictionary or object to extract fields from")
    kind = block.get("type")
    if not isinstance(kind, str):
        return _bad(f"{where}: Unable to extract tag using discriminator 'type'")
    if kind not in BLOCK_TYPES:
        return _bad(
            f"{where}: Input tag '{kind}' found using 'type' does not match any of the "
            "expected tags"
        )
    if kind == "text" and not isinstance(block.get("text"), str):
        return _bad(f"{where}.text: Input should be a valid string")
    return None


def _check_message(message: object, where: str, first: bool = False) -> Problem | None:
    if not isinstance(message, dict):
        return _bad(f"{where}: Input should be a valid dictionary")
    # ("system" after the first message: a system message at its own place in the
    # conversation, which Claude Code 2.1.328 sends on claude-opus-5-5; a leading one
    # belongs in the top-level `system`)
    roles = ("user", "assistant") if first else ("user", "assistant", "system")
    if message.get("role") not in roles:
        allowed = " or ".join(f"'{role}'" for role in roles)
        return _bad(f"{where}.role: Input should be {allowed}")
    content = message.get("content")
    if isinstance(content, str):
        return None
    if not isinstance(content, list):
        return _bad(f"{where}.content: Input should be a valid list")
    for index, block in enumerate(content):
        problem = _check_block(block, f"{where}.content.{index}")
        if problem:
            return problem
    return None


def _check_messages(messages: object) -> Problem | None:
    if messages is None:
        return _bad("messages: Field required")
    if not isinstance(messages, list):
        return _bad("messages: Input should be a valid list")
    if not messages:
        return _bad("messages: at least one message is required")
    for index, message in enumerate(messages):
        problem = _check_message(message, f"messages.{index}", first=index == 0)
        if problem:
            return problem
    return None


def _check_system(system: object) -> Problem | None:
    if system is None or isinstance(system, str):
        return None
    if not isinstance(system, list):
        return _bad("system: Input should be a valid string or a list of text blocks")
    for index, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            return _bad(f"system.{index}.type: Input should be 'text'")
        if not isinstance(block.get("text"), str):
            return _bad(f"system.{index}.text: Input should be a valid string")
    return None


def _check_tool(tool: object, where: str) -> Problem | None:
    if not isinstance(tool, dict):
        return _bad(f"{where}: Input should be a valid dictionary")
    kind = tool.get("type")
    if kind in (None, "custom"):
        if not isinstance(tool.get("name"), str):
            return _bad(f"{where}.name: Field required")
        if not isinstance(tool.get("input_schema"), dict):
            return _bad(f"{where}.input_schema: Field required")
        return None
    if not isinstance(kind, str) or not _VERSIONED_TOOL.match(kind):
        return _bad(
            f"{where}: Input tag '{kind}' found using 'type' does not match any of the "
            "expected tags"
        )
    uses = tool.get("max_uses")
    if uses is not None and (not is_int(uses) or uses < 1):
        return _bad(f"{where}.max_uses: Input should be greater than 0")
    return None


def _check_tools(tools: object) -> Problem | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        return _bad("tools: Input should be a valid list")
    for index, tool in enumerate(tools):
        problem = _check_tool(tool, f"tools.{index}")
        if problem:
            return problem
    return None


def _check_thinking(body: dict[str, Any], need_max: bool) -> Problem | None:
    """``need_max``: whether ``budget_tokens`` must stay below ``max_tokens``."""
    thinking = body.get("thinking")
    if thinking is None:
        return None
    if not isinstance(thinking, dict) or thinking.get("type") not in THINKING_TYPES:
        return _bad(
            "thinking: Input tag found using 'type' does not match any of the expected tags: "
            "'enabled', 'disabled', 'adaptive'"
        )
    if thinking["type"] != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    if not is_int(budget):
        return _bad("thinking.enabled.budget_tokens: Input should be a valid integer")
    if budget < MIN_THINKING_BUDGET:
        return _bad("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
    if need_max and budget >= body["max_tokens"]:
        return _bad(THINKING_BUDGET_TOO_BIG)
    return None


def _check_max_tokens(body: dict[str, Any], need_max: bool) -> Problem | None:
    if not need_max:
        return None
    if "max_tokens" not in body:
        return _bad("max_tokens: Field required")
    value = body["max_tokens"]
    if not is_int(value):
        return _bad("max_tokens: Input should be a valid integer")
    if value < 1:
        return _bad("max_tokens: Input should be greater than or equal to 1")
    return None


def _check_scalars(body: dict[str, Any], compat: frozenset[str]) -> Problem | None:
    model = body.get("model")
    if model is None:
        return _bad("model: Field required")
    if not isinstance(model, str) or not model:
        return _bad("model: Input should be a valid string")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool) and "lenient-stream" not in compat:
        return _bad("stream: Input should be a valid boolean")
    tier = body.get("service_tier")
    if tier is not None and not is_one_of(tier, ANTHROPIC_TIERS):
        return _bad("service_tier: Input should be 'auto' or 'standard_only'")
    return None


def check_anthropic(
    body: dict[str, Any],
    need_max: bool = True,
    compat: frozenset[str] = frozenset(),
    interleaved: bool = False,
) -> Problem | None:
    """``need_max``: Messages (not count_tokens); ``interleaved``: the request has the
    ``interleaved-thinking`` beta (the thinking budget may exceed ``max_tokens``)."""
    return (
        _check_scalars(body, compat)
        or _check_messages(body.get("messages"))
        or _check_max_tokens(body, need_max)
        or _check_system(body.get("system"))
        or _check_tools(body.get("tools"))
        or _check_thinking(body, need_max and not interleaved)
    )
