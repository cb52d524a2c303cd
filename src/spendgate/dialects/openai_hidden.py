"""Hidden input in OpenAI requests (fields from the OpenAPI spec, shared/specs/).

Responses: server-side state (``previous_response_id``, ``conversation``, a stored
``prompt``, ``item_reference`` items, encrypted reasoning or compaction items, a
``compaction_trigger`` or ``context_management``), files by id or URL (``input_file``, in
messages and in tool outputs), and built-in tools run by OpenAI (``web_search``,
``file_search``, ``code_interpreter``, ``image_generation``, ``mcp``, a hosted ``shell``),
declared in ``tools`` or in an ``additional_tools`` item; ``max_tool_calls`` limits all
their calls together. Chat Completions: files by id, a previous audio answer by id,
``web_search_options`` (search models). Images by URL are not hidden: their tokens are
bounded by the models' resizing rules (`spendgate.domain.tokens`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spendgate.dialects.hidden import HiddenInput, mappings, positive_int

# Built-in tool type -> the fee it is billed under (None: tokens only).
_SERVER_TOOLS: dict[str, str] = {
    "web_search": "web_search",
    "web_search_2025_08_26": "web_search",
    "web_search_preview": "web_search_preview",
    "web_search_preview_2025_03_11": "web_search_preview",
    "file_search": "file_search",
    "code_interpreter": "code_interpreter",
    "image_generation": "image_generation",
    "mcp": "mcp",
}
_STATE_FIELDS = ("previous_response_id", "conversation", "prompt", "context_management")


def _file_part(where: str, part: Mapping[str, Any]) -> str | None:
    kind = part.get("type")
    if kind == "input_file" and (part.get("file_id") or part.get("file_url")):
        return f"{where}: input_file by {'file_id' if part.get('file_id') else 'file_url'}"
    if kind == "input_image" and part.get("file_id"):
        return f"{where}: input_image by file_id"
    return None


def _parts(where: str, content: object) -> list[str]:
    found = []
    for index, part in mappings(content):
        reason = _file_part(f"{where}[{index}]", part)
        if reason:
            found.append(reason)
    return found


def _item(where: str, item: Mapping[str, Any]) -> list[str]:
    kind = item.get("type")
    if kind == "item_reference":
        return [f"{where}: item_reference"]
    if kind == "compaction_trigger":
        return [f"{where}: compaction_trigger"]
    if item.get("encrypted_content"):
        return [f"{where}: {kind or 'item'} with encrypted_content"]
    if kind in ("function_call_output", "custom_tool_call_output"):
        return _parts(f"{where}.output", item.get("output"))
    return _parts(f"{where}.content", item.get("content"))


def _tools(where: str, tools: object) -> list[tuple[str, int | None]]:
    found: list[tuple[str, int | None]] = []
    for _, tool in mappings(tools):
        kind = tool.get("type")
        if isinstance(kind, str) and kind in _SERVER_TOOLS:
            found.append((_SERVER_TOOLS[kind], None))
        elif kind == "shell" and isinstance(tool.get("environment"), Mapping):
            environment = tool["environment"]
            if environment.get("type") != "local":
                found.append(("code_interpreter", None))  # a hosted container
    return found


def responses_hidden(body: Mapping[str, Any]) -> HiddenInput:
    reasons = [name for name in _STATE_FIELDS if body.get(name)]
    tools = _tools("tools", body.get("tools"))
    for index, item in mappings(body.get("input")):
        where = f"input[{index}]"
        if item.get("type") == "additional_tools":
            tools += _tools(f"{where}.tools", item.get("tools"))
        else:
            reasons += _item(where, item)
    return HiddenInput(
        reasons=tuple(reasons),
        tools=tuple(tools),
        call_limit=positive_int(body.get("max_tool_calls")),
    )


def chat_hidden(body: Mapping[str, Any]) -> HiddenInput:
    reasons: list[str] = []
    tools: list[tuple[str, int | None]] = []
    for index, message in mappings(body.get("messages")):
        audio = message.get("audio")
        if isinstance(audio, Mapping) and audio.get("id"):
            reasons.append(f"messages[{index}].audio: a previous answer by id")
        for part_index, part in mappings(message.get("content")):
            file = part.get("file")
            if part.get("type") == "file" and isinstance(file, Mapping) and file.get("file_id"):
                reasons.append(f"messages[{index}].content[{part_index}]: file by file_id")
    if body.get("web_search_options") is not None:
        reasons.append("web_search_options")
        tools.append(("web_search", 1))
    return HiddenInput(reasons=tuple(reasons), tools=tuple(tools))
