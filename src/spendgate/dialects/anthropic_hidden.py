"""Hidden input in Anthropic Messages requests.

Server tools run by Anthropic (``web_search_*`` and ``web_fetch_*``, each limited by its
``max_uses``; ``code_execution_*``), a remote MCP server (``mcp_servers``), a reused
code-execution ``container``, documents by URL or Files API id, opaque blocks whose size
is not the size they bill (redacted thinking, encrypted compaction), and a server-side
compaction (``context_management`` with a ``compact_*`` edit, or a top-level
``compaction``): a sampling step of its own over the whole context before the answer's,
billed apart (`spendgate.dialects.anthropic`). Images by URL or id are not hidden:
Anthropic resizes every image to at most about 1,600 tokens (`spendgate.domain.tokens`).
Another model serving or advising the request is not priced at all (`other_model`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spendgate.dialects.hidden import HiddenInput, mappings, positive_int

# Server tool type prefix -> the fee it is billed under.
_SERVER_TOOLS = (
    ("web_search_", "web_search"),
    ("web_fetch_", "web_fetch"),
    ("code_execution_", "code_execution"),
)


def other_model(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """A field that has another model than the request's own serve or advise it, and what
    it is: a server-side fallback (``fallbacks``, a list or ``"default"``: served by another
    model when the requested one declines, with its own ``max_tokens``) or the advisor tool
    (``advisor_*``: sub-inferences of the model it names, reported only in
    ``usage.iterations`` and billed at that model's rates). Neither can be reserved or
    charged at the request's price, nor checked against the key's models. None if none."""
    fallbacks = body.get("fallbacks")
    if fallbacks is not None and fallbacks != []:
        return "fallbacks", "a server-side fallback to another model"
    for index, tool in mappings(body.get("tools")):
        kind = tool.get("type")
        if isinstance(kind, str) and kind.startswith("advisor_"):
            return f"tools[{index}]", f"the advisor tool ({kind}), which runs another model"
    return None


def _tool(tool: Mapping[str, Any]) -> tuple[str, int | None] | None:
    kind = tool.get("type")
    if not isinstance(kind, str):
        return None
    for prefix, name in _SERVER_TOOLS:
        if kind.startswith(prefix):
            return name, positive_int(tool.get("max_uses"))
    if kind == "mcp_toolset":
        return "mcp", None
    return None


def _block(where: str, block: Mapping[str, Any]) -> list[str]:
    kind = block.get("type")
    if kind == "document":
        source = block.get("source")
        if isinstance(source, Mapping) and source.get("type") in ("url", "file"):
            return [f"{where}: document by {source['type']}"]
    elif kind == "redacted_thinking":
        return [f"{where}: redacted_thinking"]
    elif kind == "compaction" and block.get("encrypted_content"):
        return [f"{where}: compaction with encrypted_content"]
    elif kind == "tool_result":
        found = []
        for index, inner in mappings(block.get("content")):
            found += _block(f"{where}.content[{index}]", inner)
        return found
    return []


# Anthropic's default compaction trigger, in input tokens (`compact_*` edits' ``trigger``).
COMPACTION_TRIGGER = 150_000


def _compactions(body: Mapping[str, Any]) -> tuple[list[str], int]:
    """The fields that enable a server-side compaction, and the fewest input tokens at which
    one runs (its ``trigger``; 0 for the top-level ``compaction``, whose trigger is not
    known)."""
    found, trigger = [], None
    if body.get("compaction"):
        found, trigger = ["compaction"], 0
    management = body.get("context_management")
    edits = management.get("edits") if isinstance(management, Mapping) else None
    for index, edit in mappings(edits):
        kind = edit.get("type")
        if isinstance(kind, str) and kind.startswith("compact_"):
            found.append(f"context_management.edits[{index}]: {kind}")
            at = edit.get("trigger")
            value = positive_int(at.get("value")) if isinstance(at, Mapping) else None
            value = COMPACTION_TRIGGER if at is None else (value or 0)
            trigger = value if trigger is None else min(trigger, value)
    return found, trigger or 0


def messages_hidden(body: Mapping[str, Any]) -> HiddenInput:
    compaction, trigger = _compactions(body)
    reasons: list[str] = []
    if body.get("mcp_servers"):
        reasons.append("mcp_servers")
    if body.get("container"):
        reasons.append("container")
    for index, message in mappings(body.get("messages")):
        for block_index, block in mappings(message.get("content")):
            reasons += _block(f"messages[{index}].content[{block_index}]", block)
    tools = [found for _, tool in mappings(body.get("tools")) if (found := _tool(tool))]
    if body.get("mcp_servers") and not any(name == "mcp" for name, _ in tools):
        tools.append(("mcp", None))
    return HiddenInput(
        reasons=tuple(reasons),
        tools=tuple(tools),
        compaction=tuple(compaction),
        compaction_trigger=trigger,
    )
